//! The io_uring backend: its choice and its fallback, moss::net operations
//! submitted to the ring, and exact cancellation of operations in flight
//! (10,000 reads killed while the kernel holds their buffers, 10,000
//! writes killed while they wait for room, and senders killed while their
//! send waits in the ring). The other net, server and monkey tests run on this backend
//! too, in CI, with `MOSS_IO=uring`.

mod util;

use std::cell::Cell;
use std::io::{ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moss::net::{TcpListener, TcpStream, UdpSocket};
use moss::reactor::uring::in_flight;
use moss::reactor::{Backend, backend, set_backend};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn tcp_operations_move_exact_bytes() {
    util::on_uring();
    tcp_exact_bytes();
}

/// Stream receives (plain, vectored, peek), sends and accept move exact
/// bytes on this thread's ring.
fn tcp_exact_bytes() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = moss::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        assert!(peer.ip().is_loopback());
        let mut all: Vec<u8> = Vec::new();
        while all.len() < 8 {
            let mut a = [0u8; 3];
            let mut b = [0u8; 5];
            let n = s
                .read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
                .unwrap();
            assert!(n > 0);
            all.extend(a.iter().chain(b.iter()).take(n));
        }
        assert_eq!(all, b"abcdefgh");
        s.write_all(b"pong").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        rest
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let n = c
        .write_vectored(&[IoSlice::new(b"abc"), IoSlice::new(b"defgh")])
        .unwrap();
    c.write_all(&b"abcdefgh"[n..]).unwrap();
    let mut peeked = [0u8; 4];
    while c.peek(&mut peeked).unwrap() < 4 {}
    assert_eq!(&peeked, b"pong");
    let mut pong = [0u8; 4];
    c.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");
    c.write_all(b"tail").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), b"tail");
    assert_eq!(in_flight(), 0);
}

#[test]
fn tcp_errors_keep_std_kinds() {
    util::on_uring();
    let e = TcpStream::connect(util::refused_addr()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    // A read timeout reads as EAGAIN, as std's SO_RCVTIMEO does.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut c, mut s) = pair(&l);
    c.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let mut b = [0u8; 8];
    let e = c.read(&mut b).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
    // The cancelled read left the socket usable and took no byte.
    s.write_all(b"after").unwrap();
    assert_eq!(c.read(&mut b).unwrap(), 5);
    assert_eq!(&b[..5], b"after");
    // Non-blocking mode: WouldBlock at once.
    c.set_nonblocking(true).unwrap();
    assert_eq!(c.read(&mut b).unwrap_err().kind(), ErrorKind::WouldBlock);
    // A reset peer.
    drop(s);
    c.set_nonblocking(false).unwrap();
    assert_eq!(c.read(&mut b).unwrap(), 0);
    assert_eq!(in_flight(), 0);
}

#[test]
fn udp_operations_move_exact_datagrams() {
    util::on_uring();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let reader = moss::spawn(move || {
        let mut buf = [0u8; 16];
        // Parks on the ring until the datagram comes.
        let (n, from) = a.peek_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], b_addr));
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], b_addr));
        a.connect(b_addr).unwrap();
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        a.send(b"three").unwrap();
    });
    util::until_parked(reader.id());
    assert_eq!(b.send_to(b"one", a_addr).unwrap(), 3);
    b.connect(a_addr).unwrap();
    assert_eq!(b.send(b"two").unwrap(), 3);
    let mut buf = [0u8; 16];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"three");
    reader.join().unwrap();
    assert_eq!(in_flight(), 0);
}

/// Kills `victims` from 100 killers at once, so that many cancellations
/// are in flight together; after each kill the killer runs `after` (which
/// may reuse the victim's freed stack).
fn kill_all<T: 'static>(
    victims: Vec<moss::JoinHandle<T>>,
    after: fn(),
) -> Vec<moss::JoinHandle<T>> {
    let victims: Vec<_> = victims.into_iter().map(Rc::new).collect();
    let chunk = victims.len().div_ceil(100).max(1);
    let killers: Vec<_> = victims
        .chunks(chunk)
        .map(|c| {
            let c: Vec<_> = c.to_vec();
            moss::spawn(move || {
                for h in c {
                    h.kill();
                    after();
                }
            })
        })
        .collect();
    for k in killers {
        k.join().unwrap();
    }
    victims
        .into_iter()
        .map(|h| match Rc::try_unwrap(h) {
            Ok(h) => h,
            Err(_) => panic!("a killer still holds a handle"),
        })
        .collect()
}

/// A coroutine on a small stack (the size the victims use, so it takes a
/// stack a victim just gave back) that overwrites it with `POISON`.
fn poison() {
    moss::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(|| {
            let mut p = [POISON; 16 * 1024];
            std::hint::black_box(&mut p);
            moss::yield_now();
            std::hint::black_box(&mut p);
        })
        .unwrap();
}

const SMALL_STACK: usize = 64 * 1024;
const POISON: u8 = 0xEE;
const CONNS: usize = 100;
const PER: usize = 100;

#[test]
fn kill_10000_in_flight_reads() {
    util::isolated(
        "kill_10000_in_flight_reads",
        Duration::from_secs(120),
        || {
            util::on_uring();
            kill_in_flight_reads();
        },
    );
}

/// Kills 10,000 reads in flight while bytes arrive: every byte is either
/// taken by a reader that returned or still queued, no fd leaks.
fn kill_in_flight_reads() {
    let fds = open_fds();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let pairs: Vec<_> = (0..CONNS)
        .map(|_| {
            let (c, s) = pair(&l);
            (Rc::new(c), Rc::new(s))
        })
        .collect();
    // Bytes the readers were handed, per connection.
    let took: Rc<Vec<Cell<usize>>> = Rc::new((0..CONNS).map(|_| Cell::new(0)).collect());
    let readers: Vec<_> = (0..CONNS * PER)
        .map(|i| {
            let c = pairs[i % CONNS].0.clone();
            let took = took.clone();
            moss::Builder::new()
                .stack_size(SMALL_STACK)
                .spawn(move || {
                    let mut buf = [0u8; 64];
                    let n = (&*c).read(&mut buf).unwrap();
                    assert!(buf[..n].iter().all(|&b| b == (i % CONNS) as u8));
                    let t = &took[i % CONNS];
                    t.set(t.get() + n);
                    // The kill is delivered here if it came after
                    // the data.
                    moss::sleep(Duration::from_secs(600));
                })
                .unwrap()
        })
        .collect();
    util::until("10,000 reads in flight", Duration::from_secs(60), || {
        in_flight() == CONNS * PER
    });
    // Bytes keep arriving, from another thread, while the readers
    // are killed: some reads complete before their cancellation
    // takes effect, some are cancelled.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let servers: Vec<std::net::TcpStream> = pairs
            .iter()
            .map(|p| p.1.try_clone().unwrap().into())
            .collect();
        std::thread::spawn(move || {
            let mut sent = vec![0usize; CONNS];
            while !stop.load(Ordering::Relaxed) {
                for (i, mut s) in servers.iter().enumerate() {
                    s.write_all(&[i as u8]).unwrap();
                    sent[i] += 1;
                }
            }
            sent
        })
    };
    for h in kill_all(readers, poison) {
        assert!(h.join().unwrap_err().is_killed());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = feeder.join().unwrap();
    moss::sleep(Duration::from_millis(50));
    assert_eq!(in_flight(), 0);
    // Every byte sent was either handed to a reader or is still
    // queued: no completion was lost or went to another coroutine.
    for (i, (c, _)) in pairs.iter().enumerate() {
        c.set_nonblocking(true).unwrap();
        let mut left = 0;
        let mut b = [0u8; 4096];
        loop {
            match (&**c).read(&mut b) {
                Ok(n) => {
                    assert!(b[..n].iter().all(|&x| x == i as u8));
                    left += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(took[i].get() + left, sent[i], "connection {i}");
        c.set_nonblocking(false).unwrap();
    }
    // Every socket still delivers its own bytes to the reader that
    // asks now.
    let readers: Vec<_> = pairs
        .iter()
        .map(|(c, _)| {
            let c = c.clone();
            moss::spawn(move || {
                let mut b = [0u8; 8];
                (&*c).read_exact(&mut b).unwrap();
                b
            })
        })
        .collect();
    for (i, (_, s)) in pairs.iter().enumerate() {
        (&**s).write_all(&[i as u8 + 1; 8]).unwrap();
    }
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join().unwrap(), [i as u8 + 1; 8]);
    }
    drop(pairs);
    drop(l);
    assert_eq!(open_fds(), fds, "an fd leaked");
}

#[test]
fn kill_10000_in_flight_writes() {
    util::isolated(
        "kill_10000_in_flight_writes",
        Duration::from_secs(120),
        || {
            util::on_uring();
            let fds = open_fds();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            const FILL: u8 = 0x11;
            const DATA: u8 = 0xA5;
            let pairs: Vec<_> = (0..CONNS)
                .map(|_| {
                    let (c, s) = pair(&l);
                    (Rc::new(c), s)
                })
                .collect();
            // Fill each connection until a write would block.
            let mut filled = 0usize;
            for (c, _) in &pairs {
                c.set_nonblocking(true).unwrap();
                loop {
                    match (&**c).write(&[FILL; 65536]) {
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                c.set_nonblocking(false).unwrap();
            }
            // 10,000 writers, each with its buffer on its own stack.
            let written = Rc::new(Cell::new(0usize));
            let done = Rc::new(Cell::new(0usize));
            let writers: Vec<_> = (0..CONNS * PER)
                .map(|i| {
                    let c = pairs[i % CONNS].0.clone();
                    let (written, done) = (written.clone(), done.clone());
                    moss::Builder::new()
                        .stack_size(SMALL_STACK)
                        .spawn(move || {
                            let buf = [DATA; 4096];
                            let r = (&*c).write(&buf);
                            if let Ok(n) = r {
                                written.set(written.get() + n);
                            }
                            done.set(done.get() + 1);
                        })
                        .unwrap()
                })
                .collect();
            // The last writer runs last: once it waits or is done, every
            // writer has written or waits. (It may be done: the kernel can
            // grow a send buffer after the fill, and under load the peers'
            // receives make room before the last writers run.)
            let last = writers.last().unwrap();
            util::until(
                "the last writer to wait or finish",
                Duration::from_secs(60),
                || last.is_finished() || util::is_parked(last.id()),
            );
            assert!(done.get() < CONNS * PER / 2, "most writes must block");
            // The peers read while the writers are killed, so some writes
            // complete in the race; each killed writer's stack is reused
            // and overwritten at once.
            let drains: Vec<_> = pairs
                .iter()
                .map(|(_, s)| {
                    let mut s: std::net::TcpStream = s.try_clone().unwrap().into();
                    std::thread::spawn(move || {
                        let mut v = Vec::new();
                        s.read_to_end(&mut v).unwrap();
                        v
                    })
                })
                .collect();
            for h in kill_all(writers, poison) {
                let _ = h.join();
            }
            drop(pairs);
            // Exactly the fill and the bytes the writers were told were
            // written, never a byte of a reused stack.
            let (mut fill, mut data) = (0, 0);
            for d in drains {
                for b in d.join().unwrap() {
                    match b {
                        FILL => fill += 1,
                        DATA => data += 1,
                        other => panic!("byte {other:#x} from a freed stack"),
                    }
                }
            }
            assert_eq!(fill, filled);
            assert_eq!(data, written.get());
            assert_eq!(in_flight(), 0);
            drop(l);
            assert_eq!(open_fds(), fds, "an fd leaked");
        },
    );
}

/// Senders killed while their send waits in the ring (a send that follows
/// a receive is submitted to the ring and parks until the hub's next
/// poll): each kill waits for the send's completion, so the peers get
/// exactly the bytes the senders were told were sent, never a byte of a
/// reused stack.
#[test]
fn kill_senders_queued_on_the_ring() {
    util::isolated(
        "kill_senders_queued_on_the_ring",
        Duration::from_secs(120),
        || {
            util::on_uring();
            let fds = open_fds();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            const DATA: u8 = 0xA5;
            const ROUNDS: usize = 20;
            let pairs: Vec<_> = (0..CONNS)
                .map(|_| {
                    let (c, s) = pair(&l);
                    (Rc::new(c), s)
                })
                .collect();
            let written = Rc::new(Cell::new(0usize));
            let queued_kills = Rc::new(Cell::new(0usize));
            for _ in 0..ROUNDS {
                for (_, s) in &pairs {
                    (&*s).write_all(b"r").unwrap();
                }
                let mut killers = Vec::new();
                for (c, _) in &pairs {
                    // 0: receiving, 1: in `write`, 2: `write` returned.
                    let stage = Rc::new(Cell::new(0u8));
                    let victim = {
                        let (c, stage, written) = (c.clone(), stage.clone(), written.clone());
                        moss::Builder::new()
                            .stack_size(SMALL_STACK)
                            .spawn(move || {
                                let mut b = [0u8; 1];
                                assert_eq!((&*c).read(&mut b).unwrap(), 1);
                                let buf = [DATA; 1024];
                                stage.set(1);
                                let r = (&*c).write(&buf);
                                stage.set(2);
                                if let Ok(n) = r {
                                    written.set(written.get() + n);
                                }
                                // A pending kill is delivered here.
                                moss::yield_now();
                            })
                            .unwrap()
                    };
                    let queued_kills = queued_kills.clone();
                    killers.push(moss::spawn(move || {
                        while stage.get() == 0 && !victim.is_finished() {
                            moss::yield_now();
                        }
                        if stage.get() == 1 {
                            queued_kills.set(queued_kills.get() + 1);
                        }
                        victim.kill();
                        poison();
                        let _ = victim.join();
                    }));
                }
                for k in killers {
                    k.join().unwrap();
                }
            }
            assert!(queued_kills.get() > 0, "no kill hit a queued send");
            let mut data = 0;
            for (c, s) in pairs {
                drop(c);
                let mut v = Vec::new();
                (&s).read_to_end(&mut v).unwrap();
                for b in v {
                    match b {
                        DATA => data += 1,
                        other => panic!("byte {other:#x} from a freed stack"),
                    }
                }
            }
            assert_eq!(data, written.get());
            assert_eq!(in_flight(), 0);
            drop(l);
            assert_eq!(open_fds(), fds, "an fd leaked");
        },
    );
}

#[test]
fn timeout_and_kill_of_a_read_in_flight_are_exact() {
    util::on_uring();
    timeout_and_kill_of_a_read();
}

fn timeout_and_kill_of_a_read() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (c, mut s) = pair(&l);
    let c = Rc::new(c);
    // moss::timeout around a read in flight: Elapsed, no byte taken.
    let r = moss::timeout(Duration::from_millis(20), || {
        let mut b = [0u8; 4];
        (&*c).read(&mut b)
    });
    assert!(r.is_err());
    assert_eq!(in_flight(), 0);
    // Data that arrives while a kill is requested is not lost when the read
    // completed first: here the kill comes after the data, so the read
    // returns it (the kill is delivered at the next blocking point).
    let c2 = c.clone();
    let got = Rc::new(Cell::new(0u8));
    let g = got.clone();
    let reader = moss::spawn(move || {
        let mut b = [0u8; 1];
        let n = (&*c2).read(&mut b).unwrap();
        g.set(b[0] + n as u8 - 1);
        moss::sleep(Duration::from_secs(60));
    });
    util::until_parked(reader.id());
    s.write_all(b"x").unwrap();
    util::until("the read completed", Duration::from_secs(10), || {
        got.get() == b'x'
    });
    reader.kill();
    assert!(reader.join().unwrap_err().is_killed());
    assert_eq!(in_flight(), 0);
}

/// The receive, kill and timeout tests again on a ring whose receives arm
/// their poll first (`MOSS_URING_SETUP=pollfirst`): the kernel then never
/// tries the socket at submission, every receive completes through the
/// poll's wake-up.
#[test]
fn receives_are_exact_with_pollfirst() {
    util::isolated_env(
        "receives_are_exact_with_pollfirst",
        Duration::from_secs(120),
        &[("MOSS_URING_SETUP", "pollfirst")],
        || {
            util::on_uring();
            assert_eq!(moss::reactor::uring::recv_ioprio(), 1, "the knob is on");
            tcp_exact_bytes();
            timeout_and_kill_of_a_read();
            kill_in_flight_reads();
        },
    );
}

/// The same on a ring set up with `DEFER_TASKRUN` (`MOSS_URING_SETUP=defer`):
/// completions are posted only when the hub enters the ring to wait.
#[test]
fn receives_are_exact_with_defer_taskrun() {
    util::isolated_env(
        "receives_are_exact_with_defer_taskrun",
        Duration::from_secs(120),
        &[("MOSS_URING_SETUP", "defer")],
        || {
            util::on_uring();
            assert_eq!(moss::reactor::uring::recv_ioprio(), 0);
            tcp_exact_bytes();
            timeout_and_kill_of_a_read();
            kill_in_flight_reads();
        },
    );
}

/// The same on a ring set up with `COOP_TASKRUN` (`MOSS_URING_SETUP=coop`):
/// completions' task work runs only when the hub enters the ring, never
/// by interrupting the thread.
#[test]
fn receives_are_exact_with_coop_taskrun() {
    util::isolated_env(
        "receives_are_exact_with_coop_taskrun",
        Duration::from_secs(120),
        &[("MOSS_URING_SETUP", "coop")],
        || {
            util::on_uring();
            tcp_exact_bytes();
            timeout_and_kill_of_a_read();
            kill_in_flight_reads();
        },
    );
}

#[test]
fn falls_back_to_epoll_when_io_uring_is_blocked() {
    const CASE: &str = "falls_back_to_epoll_when_io_uring_is_blocked";
    if util::in_child(CASE) {
        block_io_uring_setup();
        set_backend(Backend::Uring);
        assert_eq!(backend(), Backend::Epoll);
        // moss::net works on the fallback.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        // Other threads' hubs fall back too, silently.
        let b = std::thread::spawn(backend).join().unwrap();
        assert_eq!(b, Backend::Epoll);
        return;
    }
    let r = util::run_in_child(CASE, Duration::from_secs(60));
    assert!(r.success(), "{r:#?}");
    assert!(r.stdout.contains("1 passed"), "{r:#?}");
    let lines: Vec<_> = r
        .stderr
        .lines()
        .filter(|l| l.contains("io_uring is unavailable"))
        .collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {r:#?}");
    assert!(lines[0].contains("using epoll"), "{r:#?}");
}

/// Makes `io_uring_setup` fail with `EPERM` in this process from now on
/// (a seccomp filter, as container runtimes install).
fn block_io_uring_setup() {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; `prog` points at a valid filter program
    // that outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn shutdown_wakes_a_writer_blocked_on_a_full_buffer() {
    util::on_uring();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (c, _s) = pair(&l);
    let c = Rc::new(c);
    let w = {
        let c = c.clone();
        moss::spawn(move || {
            let buf = vec![7u8; 1 << 20];
            loop {
                if let Err(e) = (&*c).write(&buf) {
                    return e.kind();
                }
            }
        })
    };
    util::until_parked(w.id());
    c.shutdown(std::net::Shutdown::Both).unwrap();
    let r = w.join_timeout(Duration::from_secs(10));
    let Ok(kind) = r else {
        panic!("the writer was not woken")
    };
    let kind = kind.unwrap();
    assert_eq!(kind, ErrorKind::BrokenPipe);
}
