//! The send path under attack, on both backends (epoll, and io_uring with
//! its ring sends): writers killed or timed out mid-stream (the peer gets
//! exactly the bytes the writer was told went out, in order), a timeout
//! that loses its race against a ring operation that completed, reads and
//! writes of one socket from coroutines of two threads, reset peers (the
//! same error kinds as std), vectored I/O at and past the kernel's iovec
//! limit, datagram errors, sockets moved between threads and back, a
//! thread that ends with sends in flight, and a fork with ring operations
//! in flight.

mod util;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moss::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixStream};
use moss::reactor::Backend;
use moss::reactor::uring::in_flight;

const BOTH: [Backend; 2] = [Backend::Epoll, Backend::Uring];
const LIMIT: Duration = Duration::from_secs(60);

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// `n` bytes of a pattern in which a gap or a repeat shows (251 is prime,
/// so no power-of-two chunking lines up with it).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Everything `s` receives until end-of-file.
fn drain(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    got
}

/// A timeout that fires while a receive is on the ring, after the data
/// arrived: the receive completes first, so the timeout must give its
/// bytes to the caller (or leave them in the socket), never drop them. A
/// zero timeout fires at the first blocking point, which on io_uring is
/// every receive: the race is lost by the timeout every time.
#[test]
fn a_timeout_racing_a_completed_receive_loses_no_bytes() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            (&c).write_all(b"abcd").unwrap();
            drop(c);
            let mut buf = [0u8; 4];
            let mut got = match moss::timeout(Duration::ZERO, || (&s).read(&mut buf)) {
                Ok(r) => buf[..r.unwrap()].to_vec(),
                Err(_) => Vec::new(),
            };
            (&s).read_to_end(&mut got).unwrap();
            assert_eq!(got, b"abcd", "on {b:?}");
            assert_eq!(in_flight(), 0);
        });
    }
}

/// The same race for a send: a write that went out is reported, so a
/// caller that retries what the timeout says was not sent sends nothing
/// twice.
#[test]
fn a_timeout_racing_a_completed_send_reports_it() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            let data = pattern(1000);
            let mut sent = 0;
            while sent < data.len() {
                let chunk = &data[sent..(sent + 100).min(data.len())];
                if let Ok(r) = moss::timeout(Duration::ZERO, || (&c).write(chunk)) {
                    sent += r.unwrap();
                }
            }
            drop(c);
            assert_eq!(drain(s), data, "on {b:?}");
        });
    }
}

/// A writer streams a large buffer with `write` into a peer that does not
/// read, counting what each call reports, and is killed: while its first
/// send is queued on the ring (the killer runs before the hub polls), or
/// while it waits for room. The peer then receives exactly the bytes the
/// writer counted, in order: no gap, no repeat, nothing the writer was not
/// told about.
#[test]
fn a_killed_writer_sent_exactly_what_it_counted() {
    for b in BOTH {
        for queued in [true, false] {
            util::on_backend(b, LIMIT, move || {
                let (c, s) = pair();
                let data = Rc::new(pattern(8 << 20));
                let counted = Rc::new(Cell::new(0usize));
                let slot: Rc<RefCell<Option<moss::JoinHandle<()>>>> = Rc::default();
                let killed = Rc::new(Cell::new(None));
                let (d, n) = (data.clone(), counted.clone());
                let (sl, k) = (slot.clone(), killed.clone());
                let writer = moss::spawn(move || {
                    let c = c;
                    // A receive first: the next send goes on the ring.
                    let mut one = [0u8; 1];
                    (&c).read_exact(&mut one).unwrap();
                    if queued {
                        moss::spawn(move || {
                            let h = sl.borrow_mut().take().unwrap();
                            h.kill();
                            k.set(Some(h.join().unwrap_err().is_killed()));
                        });
                    }
                    while n.get() < d.len() {
                        let k = (&c).write(&d[n.get()..]).unwrap();
                        n.set(n.get() + k);
                    }
                });
                *slot.borrow_mut() = Some(writer);
                (&s).write_all(b"!").unwrap();
                if !queued {
                    util::until("bytes counted", LIMIT, || counted.get() > 0);
                    let h = slot.borrow_mut().take().unwrap();
                    util::until_parked(h.id());
                    h.kill();
                    killed.set(Some(h.join().unwrap_err().is_killed()));
                }
                util::until("the kill", LIMIT, || killed.get().is_some());
                assert_eq!(killed.get(), Some(true));
                let got = drain(s);
                let n = counted.get();
                assert!(n > 0 && n < data.len(), "on {b:?}: {n} bytes counted");
                assert_eq!(got.len(), n, "on {b:?} (queued: {queued})");
                assert!(got == data[..n], "on {b:?}: the bytes differ");
                assert_eq!(in_flight(), 0);
            });
        }
    }
}

/// One socket, two clones, a reader killed while its receive waits (on
/// the ring on io_uring), a second one killed while the stream flows, a
/// third that reads the rest, and a writer streaming the other way on the
/// other clone all along. Every byte arrives once, in order, both ways.
#[test]
fn readers_killed_beside_a_streaming_writer_lose_nothing() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            let up = pattern(1 << 20);
            let down: Vec<u8> = pattern(3 << 20).into_iter().rev().collect();
            let third = down.len() / 3;
            let gate = Rc::new(moss::sync::Event::new());
            // The peer: streams `down` (pausing at the gate after a third)
            // and collects what comes up.
            let (c2, down2, g) = (c.try_clone().unwrap(), down.clone(), gate.clone());
            let peer_tx = moss::spawn(move || {
                (&c2).write_all(&down2[..third]).unwrap();
                g.wait();
                for chunk in down2[third..].chunks(4093) {
                    (&c2).write_all(chunk).unwrap();
                    moss::yield_now();
                }
                c2.shutdown(Shutdown::Write).unwrap();
            });
            let peer_rx = moss::spawn(move || drain(c));
            let s2 = s.try_clone().unwrap();
            let up2 = up.clone();
            let writer = moss::spawn(move || {
                for chunk in up2.chunks(1000) {
                    (&s2).write_all(chunk).unwrap();
                }
                s2.shutdown(Shutdown::Write).unwrap();
            });
            let got = Rc::new(RefCell::new(Vec::new()));
            let s = Rc::new(s);
            let reader = |s: Rc<TcpStream>, got: Rc<RefCell<Vec<u8>>>| {
                moss::spawn(move || {
                    let mut buf = [0u8; 1500];
                    loop {
                        let n = (&*s).read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        got.borrow_mut().extend_from_slice(&buf[..n]);
                    }
                })
            };
            let r1 = reader(s.clone(), got.clone());
            util::until("the first third", LIMIT, || got.borrow().len() == third);
            util::until_parked(r1.id());
            r1.kill();
            assert!(r1.join().unwrap_err().is_killed());
            gate.set();
            let r2 = reader(s.clone(), got.clone());
            util::until("more of the stream", LIMIT, || got.borrow().len() > third);
            // Wherever it is (it may even have read to the end).
            r2.kill();
            let _ = r2.join();
            reader(s.clone(), got.clone()).join().unwrap();
            assert!(*got.borrow() == down, "on {b:?}: the stream down differs");
            writer.join().unwrap();
            peer_tx.join().unwrap();
            assert!(
                peer_rx.join().unwrap() == up,
                "on {b:?}: the stream up differs"
            );
            assert_eq!(in_flight(), 0);
        });
    }
}

/// A socket written by a coroutine of one thread and read, through a
/// clone, by a coroutine of another thread (each hub on the backend under
/// test), with the peer echoing: every byte arrives once, in order.
#[test]
fn writes_on_one_thread_reads_on_another() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            let echo = moss::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let n = (&c).read(&mut buf).unwrap();
                    if n == 0 {
                        return;
                    }
                    (&c).write_all(&buf[..n]).unwrap();
                }
            });
            let data = pattern(2 << 20);
            let reader_side: std::net::TcpStream = s.try_clone().unwrap().into();
            let len = data.len();
            let reader = std::thread::spawn(move || {
                util::on_backend(b, LIMIT, move || {
                    let s = TcpStream::from(reader_side);
                    let mut got = Vec::with_capacity(len);
                    let mut buf = [0u8; 3000];
                    while got.len() < len {
                        let n = (&s).read(&mut buf).unwrap();
                        assert!(n > 0, "end-of-file after {} bytes", got.len());
                        got.extend_from_slice(&buf[..n]);
                    }
                    got
                })
            });
            for chunk in data.chunks(7777) {
                (&s).write_all(chunk).unwrap();
            }
            // (The echo runs on this hub: no blocking std join before the
            // reader is done.)
            util::until("the reader", LIMIT, || reader.is_finished());
            let got = reader.join().unwrap();
            assert!(got == data, "on {b:?}: the echoed bytes differ");
            s.shutdown(Shutdown::Write).unwrap();
            echo.join().unwrap();
        });
    }
}

/// What a sequence of operations on a socket returned: bytes or the error
/// kind and errno.
type Outcome = Vec<Result<usize, (ErrorKind, Option<i32>)>>;

fn outcome<T>(
    r: std::io::Result<T>,
    n: impl Fn(&T) -> usize,
) -> Result<usize, (ErrorKind, Option<i32>)> {
    r.map(|v| n(&v)).map_err(|e| (e.kind(), e.raw_os_error()))
}

/// Waits (a plain `poll(2)`, up to 10 s) until `fd` reports `events`.
fn poll_for(fd: i32, events: libc::c_short) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert_eq!(r, 1, "the fd never reported {events:#x}");
}

/// The three failure scenarios of a stream, run against any socket type:
/// a peer that closed with unread data (a reset), a peer that closed
/// cleanly, and our own `shutdown(Write)`.
fn failures<S: Read + Write + AsRawFd>(
    pair: impl Fn() -> (S, S),
    shutdown_write: impl Fn(&S),
) -> Vec<Outcome> {
    let mut all = Vec::new();
    // A reset: the peer closes with our bytes unread.
    let (mut a, b) = pair();
    a.write_all(b"unread").unwrap();
    poll_for(b.as_raw_fd(), libc::POLLIN);
    drop(b);
    poll_for(a.as_raw_fd(), libc::POLLIN);
    let mut o = Outcome::new();
    for _ in 0..3 {
        o.push(outcome(a.write(b"x"), |n| *n));
    }
    let mut buf = [0u8; 4];
    o.push(outcome(a.read(&mut buf), |n| *n));
    all.push(o);
    // A clean close, then our writes (the first one draws the reset).
    let (mut a, b) = pair();
    drop(b);
    poll_for(a.as_raw_fd(), libc::POLLIN);
    let mut o = vec![outcome(a.read(&mut buf), |n| *n)];
    o.push(outcome(a.write(b"x"), |n| *n));
    poll_for(a.as_raw_fd(), libc::POLLERR | libc::POLLHUP);
    for _ in 0..2 {
        o.push(outcome(a.write(b"x"), |n| *n));
    }
    all.push(o);
    // Our own shutdown(Write), then a write and a zero-length write.
    let (mut a, mut b) = pair();
    shutdown_write(&a);
    let mut o = vec![outcome(a.write(b"x"), |n| *n)];
    o.push(outcome(a.write(b""), |n| *n));
    b.write_all(b"still").unwrap();
    let mut five = [0u8; 5];
    o.push(outcome(a.read_exact(&mut five).map(|()| five), |b| b.len()));
    all.push(o);
    all
}

/// Reset peers, a clean close and `shutdown(Write)`: the same results,
/// kinds and errnos as std's, on both backends, for TCP and Unix streams
/// (`BrokenPipe`/`ConnectionReset`, never a SIGPIPE).
#[test]
fn stream_failures_match_std() {
    let std_tcp = util::on_thread(LIMIT, || {
        failures(
            || {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                (c, l.accept().unwrap().0)
            },
            |s| s.shutdown(Shutdown::Write).unwrap(),
        )
    });
    let std_unix = util::on_thread(LIMIT, || {
        failures(
            || std::os::unix::net::UnixStream::pair().unwrap(),
            |s| s.shutdown(Shutdown::Write).unwrap(),
        )
    });
    for b in BOTH {
        let tcp = util::on_backend(b, LIMIT, move || {
            failures(pair, |s| s.shutdown(Shutdown::Write).unwrap())
        });
        assert_eq!(tcp, std_tcp, "TCP on {b:?}");
        let unix = util::on_backend(b, LIMIT, move || {
            failures(
                || UnixStream::pair().unwrap(),
                |s| s.shutdown(Shutdown::Write).unwrap(),
            )
        });
        // std's Unix streams write with write(2), which raises SIGPIPE
        // (ignored by Rust programs: EPIPE); moss's send(MSG_NOSIGNAL)
        // gives the same EPIPE.
        assert_eq!(unix, std_unix, "Unix on {b:?}");
    }
}

/// Vectored I/O with no slices, empty slices, many slices, and more than
/// the kernel's limit (`UIO_MAXIOV`, 1024): std passes at most that many
/// (a short write or read, never an error), and so must moss.
#[test]
fn vectored_io_at_and_past_the_iovec_limit() {
    fn run<S: Read + Write>(a: &mut S, b: &mut S) -> Vec<usize> {
        let mut out = Vec::new();
        out.push(a.write_vectored(&[]).unwrap());
        out.push(a.write_vectored(&[IoSlice::new(b""); 10]).unwrap());
        let bytes = pattern(3000);
        for count in [1024, 1025, 3000] {
            let slices: Vec<IoSlice<'_>> = bytes[..count].chunks(1).map(IoSlice::new).collect();
            let n = a.write_vectored(&slices).unwrap();
            out.push(n);
            let mut got = vec![0u8; n];
            b.read_exact(&mut got).unwrap();
            assert_eq!(got, bytes[..n]);
        }
        a.write_all(&bytes).unwrap();
        let mut bufs = vec![[0u8; 1]; 3000];
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut total = 0;
        while total < 3000 {
            let n = b.read_vectored(&mut slices[total..]).unwrap();
            assert!(n > 0);
            total += n;
            out.push(n);
        }
        drop(slices);
        assert!(bufs.iter().map(|b| b[0]).eq(bytes.iter().copied()));
        out
    }
    let reference = util::on_thread(LIMIT, || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut s = l.accept().unwrap().0;
        run(&mut c, &mut s)
    });
    for b in BOTH {
        let got = util::on_backend(b, LIMIT, move || {
            let (mut c, mut s) = pair();
            run(&mut c, &mut s)
        });
        assert_eq!(got[..5], reference[..5], "on {b:?}");
        assert!(got[5..].iter().all(|&n| n <= 1024), "on {b:?}: {got:?}");
    }
}

/// `send_to` addresses the kernel refuses: the same errors as std's
/// `UdpSocket`, on both backends, and the socket keeps working.
#[test]
fn udp_send_to_bad_addresses_fails_like_std() {
    fn run(send_to: impl Fn(&str) -> std::io::Result<usize>) -> Outcome {
        ["127.0.0.1:0", "[::1]:9", "255.255.255.255:9", "0.0.0.0:0"]
            .into_iter()
            .map(|a| outcome(send_to(a), |n| *n))
            .collect()
    }
    let reference = util::on_thread(LIMIT, || {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        run(|a| u.send_to(b"x", a))
    });
    assert!(reference.iter().all(|r| r.is_err()), "{reference:?}");
    for b in BOTH {
        let reference = reference.clone();
        util::on_backend(b, LIMIT, move || {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            assert_eq!(run(|a| u.send_to(b"x", a)), reference, "on {b:?}");
            let v = UdpSocket::bind("127.0.0.1:0").unwrap();
            assert_eq!(u.send_to(b"fine", v.local_addr().unwrap()).unwrap(), 4);
            let mut buf = [0u8; 8];
            let (n, from) = v.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"fine"[..], u.local_addr().unwrap()));
        });
    }
}

/// Unix datagrams: a sender blocked on a full receiver parks (the hub
/// runs on) and goes on when the receiver drains; every datagram arrives
/// whole, in order; sends to nowhere fail like std's.
#[test]
fn unix_datagrams_block_on_a_full_peer_and_keep_boundaries() {
    let dir = std::env::temp_dir().join(format!("moss-attack-send-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let nowhere = dir.join("nobody");
    let n2 = nowhere.clone();
    let reference = util::on_thread(LIMIT, move || {
        let u = std::os::unix::net::UnixDatagram::unbound().unwrap();
        vec![
            outcome(u.send_to(b"x", &n2), |n| *n),
            outcome(u.send(b"x"), |n| *n),
        ]
    });
    for b in BOTH {
        let (dir, nowhere, reference) = (dir.clone(), nowhere.clone(), reference.clone());
        util::on_backend(b, LIMIT, move || {
            let u = UnixDatagram::unbound().unwrap();
            let got = vec![
                outcome(u.send_to(b"x", &nowhere), |n| *n),
                outcome(u.send(b"x"), |n| *n),
            ];
            assert_eq!(got, reference, "on {b:?}");
            let path = dir.join(format!("rx-{b:?}"));
            let rx = UnixDatagram::bind(&path).unwrap();
            let tx = Rc::new(UnixDatagram::unbound().unwrap());
            tx.connect(&path).unwrap();
            let sent = Rc::new(Cell::new(0usize));
            let (t, s) = (tx.clone(), sent.clone());
            let sender = moss::spawn(move || {
                for i in 0..2000u32 {
                    let msg = vec![(i % 256) as u8; 100 + (i as usize % 400)];
                    assert_eq!(t.send(&msg).unwrap(), msg.len());
                    s.set(i as usize + 1);
                }
            });
            util::until_parked(sender.id());
            assert!(sent.get() < 2000, "the receiver's queue never filled");
            let mut buf = [0u8; 1024];
            for i in 0..2000u32 {
                let (n, _) = rx.recv_from(&mut buf).unwrap();
                assert_eq!(n, 100 + (i as usize % 400), "datagram {i} on {b:?}");
                assert!(buf[..n].iter().all(|&x| x == (i % 256) as u8));
            }
            sender.join().unwrap();
            // A short buffer truncates one datagram, the next stays whole.
            tx.send(b"truncated").unwrap();
            tx.send(b"whole").unwrap();
            let mut four = [0u8; 4];
            assert_eq!(rx.recv(&mut four).unwrap(), 4);
            assert_eq!(&four, b"trun");
            assert_eq!(rx.recv(&mut buf).unwrap(), 5);
            assert_eq!(in_flight(), 0);
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A socket that leaves this thread (as std, as a raw fd), is used on
/// another thread's hub, and comes back, several times, with a stale
/// registration left on each side: each round trip of an echo works.
#[test]
fn a_socket_moved_between_threads_and_back() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            let echo = moss::spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    let n = (&s).read(&mut buf).unwrap();
                    if n == 0 {
                        return;
                    }
                    (&s).write_all(&buf[..n]).unwrap();
                }
            });
            let ping = |c: &TcpStream, what: &[u8]| {
                (&*c).write_all(what).unwrap();
                let mut back = vec![0u8; what.len()];
                (&*c).read_exact(&mut back).unwrap();
                assert_eq!(back, what);
            };
            let mut c = c;
            for round in 0..6 {
                ping(&c, format!("here {round}").as_bytes());
                if round % 3 == 2 {
                    // The socket itself moves, and comes back with the
                    // registration it left here.
                    c = std::thread::spawn(move || {
                        util::on_backend(b, LIMIT, move || {
                            (&c).write_all(b"there").unwrap();
                            c
                        })
                    })
                    .join()
                    .unwrap();
                } else {
                    let fd = if round % 3 == 0 {
                        std::net::TcpStream::from(c).into_raw_fd()
                    } else {
                        c.into_raw_fd()
                    };
                    let fd = std::thread::spawn(move || {
                        util::on_backend(b, LIMIT, move || {
                            // SAFETY: the fd was given up by its owner above.
                            let c = unsafe { TcpStream::from_raw_fd(fd) };
                            (&c).write_all(b"there").unwrap();
                            c.into_raw_fd()
                        })
                    })
                    .join()
                    .unwrap();
                    // SAFETY: the fd was given up by the other thread.
                    c = unsafe { TcpStream::from_raw_fd(fd) };
                }
                let mut back = [0u8; 5];
                (&c).read_exact(&mut back).unwrap();
                assert_eq!(&back, b"there");
            }
            drop(c);
            echo.join().unwrap();
        });
    }
}

/// A thread ends while its coroutines stream into peers that do not read
/// (waiting for room, or with a send queued on the ring): the thread ends,
/// each writer is killed where it waits (a write that must register the
/// socket anew after the thread's registrations are gone included: the
/// kill unwinds it, no error is returned), the sockets are closed, and
/// each peer receives a prefix of its stream (exactly what its writer
/// counted).
#[test]
fn a_thread_exits_with_sends_in_flight() {
    for b in BOTH {
        let (tx, rx) = std::sync::mpsc::channel();
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let errs = errors.clone();
        let t = std::thread::spawn(move || {
            let errors = errs;
            util::on_backend(b, LIMIT, move || {
                let data = Rc::new(pattern(8 << 20));
                for _ in 0..8 {
                    let (c, s) = pair();
                    let counted = Arc::new(AtomicUsize::new(0));
                    let (d, n, errors) = (data.clone(), counted.clone(), errors.clone());
                    moss::spawn(move || {
                        let at = || n.load(Ordering::Relaxed);
                        let mut one = [0u8; 1];
                        let mut r = (&c).read_exact(&mut one);
                        while r.is_ok() && at() < d.len() {
                            r = (&c).write(&d[at()..]).map(|k| {
                                n.fetch_add(k, Ordering::Relaxed);
                            });
                        }
                        if let Err(e) = r {
                            errors.lock().unwrap().push(e.to_string());
                        }
                    });
                    (&s).write_all(b"!").unwrap();
                    let s: std::net::TcpStream = s.into();
                    tx.send((s, counted)).unwrap();
                }
                // Every writer is parked now or has its send queued.
                moss::yield_now();
            })
        });
        t.join().unwrap();
        // Killed where they waited: no call failed instead.
        assert_eq!(*errors.lock().unwrap(), Vec::<String>::new(), "on {b:?}");
        let data = pattern(8 << 20);
        for (mut s, counted) in rx.iter() {
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            let n = counted.load(Ordering::Relaxed);
            assert_eq!(got.len(), n, "on {b:?}");
            assert!(got == data[..n], "on {b:?}: the bytes differ");
        }
    }
}

/// A fork while a receive waits on the ring and a send is queued there
/// (the forking coroutine runs before the hub polls): the child makes a
/// fresh hub (and ring) of its own and does network I/O on it; the
/// parent's operations complete as if nothing happened.
#[test]
fn fork_with_ring_operations_in_flight() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            let (c2, s2) = pair();
            let reader = moss::spawn(move || {
                let mut buf = [0u8; 5];
                (&s).read_exact(&mut buf).unwrap();
                buf
            });
            let child = Rc::new(Cell::new(0));
            let ch = child.clone();
            let writer = moss::spawn(move || {
                let mut one = [0u8; 1];
                (&c2).read_exact(&mut one).unwrap();
                moss::spawn(move || {
                    let pid = util::fork();
                    if pid == 0 {
                        // The child: this coroutine is the root of a new hub.
                        moss::reactor::set_backend(b);
                        let (x, y) = pair();
                        (&x).write_all(b"child").unwrap();
                        let mut buf = [0u8; 5];
                        (&y).read_exact(&mut buf).unwrap();
                        assert_eq!(&buf, b"child");
                        assert_eq!(in_flight(), 0);
                        assert_eq!(moss::reactor::backend(), b);
                        return;
                    }
                    ch.set(pid);
                });
                (&c2).write_all(b"sent").unwrap();
                c2
            });
            (&s2).write_all(b"!").unwrap();
            util::until_parked(reader.id());
            util::until("the fork", LIMIT, || child.get() != 0);
            assert_eq!(util::exit_code_of(child.get()), 0);
            (&c).write_all(b"hello").unwrap();
            assert_eq!(&reader.join().unwrap(), b"hello");
            let _c2 = writer.join().unwrap();
            let mut buf = [0u8; 4];
            (&s2).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"sent");
            assert_eq!(in_flight(), 0);
        });
    }
}

/// Zero-length reads and writes: `Ok(0)` at once when data is queued
/// (std's answer), and nothing consumed.
#[test]
fn zero_length_reads_and_writes() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            assert_eq!((&c).write(b"").unwrap(), 0);
            (&c).write_all(b"data").unwrap();
            poll_for(s.as_raw_fd(), libc::POLLIN);
            assert_eq!((&s).read(&mut []).unwrap(), 0);
            assert_eq!((&s).read_vectored(&mut []).unwrap(), 0);
            let mut buf = [0u8; 4];
            (&s).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"data");
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let v = UdpSocket::bind("127.0.0.1:0").unwrap();
            assert_eq!(u.send_to(b"", v.local_addr().unwrap()).unwrap(), 0);
            let (n, from) = v.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (0, u.local_addr().unwrap()));
            assert_eq!(in_flight(), 0);
        });
    }
}

/// The epoll path's event dispatch: a reader whose readiness wait ended by
/// its read timeout, but who has not run yet when the data's edge arrives
/// (the hub polls again first: `BATCH` coroutines were ahead of it). The
/// edge takes it off the waiter list, so the edge is its to keep: the read
/// after the timeout, which waits before trying (the previous read was
/// short: the queue was drained), must find the data, not wait for an edge
/// that already came.
#[test]
fn an_edge_that_meets_a_timed_out_reader_is_not_lost() {
    util::on_backend(Backend::Epoll, LIMIT, || {
        let (c, s) = pair();
        let c = Rc::new(c);
        let c1 = c.clone();
        moss::spawn(move || (&*c1).write_all(b"a").unwrap());
        let mut buf = [0u8; 16];
        // A read that waits (so the socket is registered) and comes back
        // short: the next read waits for readiness first.
        assert_eq!((&s).read(&mut buf).unwrap(), 1);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let stop = Rc::new(Cell::new(false));
        let wrote = Rc::new(Cell::new(false));
        let s = Rc::new(s);
        let (st, s2, w, c2) = (stop.clone(), s.clone(), wrote.clone(), c.clone());
        let reader = moss::spawn(move || {
            let mut buf = [0u8; 16];
            let first = (&*s2).read(&mut buf).map(|n| buf[..n].to_vec());
            st.set(true);
            let first = match first {
                Ok(b) => return b,
                Err(e) => e,
            };
            assert_eq!(first.kind(), ErrorKind::WouldBlock);
            if !w.get() {
                // (The spinners missed the moment: no edge was lost.)
                (&*c2).write_all(b"b").unwrap();
            }
            s2.set_read_timeout(None).unwrap();
            let n = moss::timeout(Duration::from_secs(5), || (&*s2).read(&mut buf))
                .expect("the read waits for an edge that came already")
                .unwrap();
            buf[..n].to_vec()
        });
        util::until_parked(reader.id());
        let deadline = std::time::Instant::now() + Duration::from_millis(20);
        let tag = format!("#{} ", reader.id());
        let spinners: Vec<_> = (0..100)
            .map(|_| {
                let (stop, wrote, tag, c) = (stop.clone(), wrote.clone(), tag.clone(), c.clone());
                moss::spawn(move || {
                    while !stop.get() {
                        // The timer fired, the reader waits in the run
                        // queue behind us: the data comes now, and its
                        // edge at the next poll, before the reader runs.
                        if !wrote.get()
                            && std::time::Instant::now() >= deadline
                            && moss::dump()
                                .lines()
                                .any(|l| l.starts_with(&tag) && !l.contains("waiting on"))
                        {
                            (&*c).write_all(b"b").unwrap();
                            wrote.set(true);
                        }
                        moss::yield_now();
                    }
                })
            })
            .collect();
        let got = reader.join().unwrap();
        moss::join_all(spinners);
        assert_eq!(got, b"b");
    });
}

/// The same race for an accept, a connect and a datagram: a connection
/// the ring accepted (or opened) and a datagram it received are the
/// caller's, not dropped behind an `Elapsed`.
#[test]
fn a_timeout_racing_a_completed_accept_or_datagram_keeps_it() {
    for b in BOTH {
        util::on_backend(b, LIMIT, move || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let c = std::net::TcpStream::connect(addr).unwrap();
            let accepted = match moss::timeout(Duration::ZERO, || l.accept()) {
                Ok(r) => r.unwrap().0,
                Err(_) => {
                    // Nothing taken: the connection is still pending.
                    l.set_nonblocking(true).unwrap();
                    let r = l
                        .accept()
                        .expect("the timed-out accept dropped the connection");
                    l.set_nonblocking(false).unwrap();
                    r.0
                }
            };
            assert_eq!(
                accepted.peer_addr().unwrap(),
                c.local_addr().unwrap(),
                "on {b:?}"
            );
            // Nothing else is pending: a connection dropped by the timeout
            // would leave `c` reset and the listener empty.
            (&accepted).write_all(b"hi").unwrap();
            let mut two = [0u8; 2];
            (&c).read_exact(&mut two).unwrap();
            assert_eq!(&two, b"hi");
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let v = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..3u8 {
                u.send_to(&[i], v.local_addr().unwrap()).unwrap();
            }
            poll_for(v.as_raw_fd(), libc::POLLIN);
            let mut got = Vec::new();
            let mut buf = [0u8; 4];
            while got.len() < 3 {
                let r = moss::timeout(Duration::ZERO, || v.recv_from(&mut buf));
                if let Ok(r) = r {
                    let (n, from) = r.unwrap();
                    assert_eq!((n, from), (1, u.local_addr().unwrap()));
                    got.push(buf[0]);
                } else {
                    // Nothing taken: the next datagram is still queued.
                    v.set_nonblocking(true).unwrap();
                    let mut probe = [0u8; 4];
                    let r = v.peek_from(&mut probe);
                    v.set_nonblocking(false).unwrap();
                    r.expect("the timed-out receive dropped a datagram");
                }
            }
            assert_eq!(got, [0, 1, 2], "on {b:?}");
        });
    }
}

/// A `write_all` of a large buffer blocked on a peer that then closes with
/// data unread (a reset): it fails with std's error kind
/// (`ConnectionReset`), on both backends, and the bytes the peer had read
/// are a prefix of the buffer.
#[test]
fn a_reset_in_the_middle_of_write_all_fails_like_std() {
    let data = pattern(16 << 20);
    // std: a writer thread blocked in write_all; the peer reads a little
    // and closes.
    let reference = util::on_thread(LIMIT, {
        let data = data.clone();
        move || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let mut s = l.accept().unwrap().0;
            let w = std::thread::spawn(move || {
                c.write_all(&data).map_err(|e| (e.kind(), e.raw_os_error()))
            });
            let mut head = [0u8; 1000];
            s.read_exact(&mut head).unwrap();
            assert_eq!(head[..], pattern(1000)[..]);
            drop(s);
            w.join().unwrap()
        }
    });
    assert!(reference.is_err(), "{reference:?}");
    for b in BOTH {
        let data = data.clone();
        let got = util::on_backend(b, LIMIT, move || {
            let (c, s) = pair();
            let w = moss::spawn(move || {
                (&c).write_all(&data)
                    .map_err(|e| (e.kind(), e.raw_os_error()))
            });
            let mut head = [0u8; 1000];
            (&s).read_exact(&mut head).unwrap();
            assert_eq!(head[..], pattern(1000)[..]);
            util::until_parked(w.id());
            drop(s);
            w.join().unwrap()
        });
        assert_eq!(got, reference, "on {b:?}");
    }
}
