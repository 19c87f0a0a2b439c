//! After `patch_all`, unmodified std code yields inside coroutines.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `f` on a fresh thread, failing (instead of hanging) after `limit`.
fn on_thread<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    moss::monkey::patch_all();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("test thread did not finish within {limit:?} (deadlock?)"),
    }
}

/// A coroutine that counts ticks every 10 ms until killed. A call that
/// blocked the thread would let no tick through while it is pending; the
/// tests ask for at least 2 (not the nominal count: the machine may be
/// loaded).
fn ticker() -> (Rc<Cell<u32>>, moss::JoinHandle<()>) {
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let h = moss::spawn(move || {
        loop {
            moss::sleep(Duration::from_millis(10));
            t.set(t.get() + 1);
        }
    });
    (ticks, h)
}

#[test]
fn fifty_std_sleeps_overlap_and_plain_threads_still_sleep() {
    on_thread(Duration::from_secs(20), || {
        let plain = std::thread::spawn(|| {
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            t.elapsed()
        });
        let t = Instant::now();
        let hs: Vec<_> = (0..50)
            .map(|i| {
                moss::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    i
                })
            })
            .collect();
        let sum: u32 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
        let el = t.elapsed();
        assert_eq!(sum, (0..50).sum());
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(
            el < Duration::from_secs(3),
            "sleeps did not overlap: {el:?}"
        );
        assert!(plain.join().unwrap() >= Duration::from_millis(200));
    });
}

fn echo_server(listener: TcpListener, conns: usize) -> moss::JoinHandle<()> {
    moss::spawn(move || {
        let mut hs = Vec::new();
        for _ in 0..conns {
            let (mut s, _) = listener.accept().unwrap();
            hs.push(moss::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
            }));
        }
        for r in moss::join_all(hs) {
            r.unwrap();
        }
    })
}

#[test]
fn std_net_echo_server_and_clients_in_one_thread() {
    on_thread(Duration::from_secs(30), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = echo_server(listener, 10);
        let clients: Vec<_> = (0..10u8)
            .map(|c| {
                moss::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    // Big enough that writes hit EAGAIN while the reader lags.
                    let data: Vec<u8> = (0..512 * 1024).map(|i| (i as u8) ^ c).collect();
                    let mut w = s.try_clone().unwrap();
                    let expect = data.clone();
                    let writer = moss::spawn(move || {
                        w.write_all(&data).unwrap();
                        w.shutdown(Shutdown::Write).unwrap();
                    });
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).unwrap();
                    writer.join().unwrap();
                    assert!(got == expect, "client {c}: {} bytes, mismatch", got.len());
                })
            })
            .collect();
        for r in moss::join_all(clients) {
            r.unwrap();
        }
        server.join().unwrap();
    });
}

#[test]
fn root_client_of_a_server_coroutine_on_the_same_thread() {
    on_thread(Duration::from_secs(20), || {
        moss::yield_now(); // this thread has a hub: its root is cooperative
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = echo_server(listener, 1);
        // Plain blocking std client code on the root: it runs the hub while
        // it waits, so the server coroutine answers.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"ping from the root").unwrap();
        let mut buf = [0u8; 18];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping from the root");
        drop(s);
        server.join().unwrap();
    });
}

#[test]
fn read_timeout_and_connect_timeout_while_a_ticker_ticks() {
    on_thread(Duration::from_secs(20), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ticks, tick) = ticker();
        let client = moss::spawn(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_millis(300)));
            let t = Instant::now();
            let e = s.read(&mut [0u8; 8]).unwrap_err();
            (e.kind(), t.elapsed())
        });
        let (_conn, _) = listener.accept().unwrap();
        let before = ticks.get();
        let (kind, waited) = client.join().unwrap();
        assert_eq!(kind, ErrorKind::WouldBlock);
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled: {} ticks",
            ticks.get() - before
        );
        tick.kill();
    });
}

#[test]
fn poll_and_select_wait_cooperatively() {
    on_thread(Duration::from_secs(20), || {
        let (a, b) = UnixStream::pair().unwrap();
        let (ticks, tick) = ticker();
        let fd = a.as_raw_fd();
        // Times out after 200 ms while others run.
        let t = Instant::now();
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 200) }, 0);
        assert!(t.elapsed() >= Duration::from_millis(195));
        assert!(
            ticks.get() >= 2,
            "ticker stalled during poll: {}",
            ticks.get()
        );
        // Wakes when data arrives.
        let w = moss::spawn(move || {
            moss::sleep(Duration::from_millis(50));
            (&b).write_all(b"x").unwrap();
            b
        });
        let t = Instant::now();
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1);
        assert!(p.revents & libc::POLLIN != 0);
        assert!(t.elapsed() < Duration::from_secs(2));
        // select sees it too, at once.
        // SAFETY: a zeroed fd_set is empty; fd < FD_SETSIZE.
        let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::FD_SET(fd, &mut set) };
        let mut tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        let null = std::ptr::null_mut();
        // SAFETY: valid sets and timeval.
        assert_eq!(
            unsafe { libc::select(fd + 1, &mut set, null, null, &mut tv) },
            1
        );
        // SAFETY: as above.
        assert!(unsafe { libc::FD_ISSET(fd, &set) });
        // select with nothing ready times out, others running meanwhile.
        (&a).read_exact(&mut [0u8; 1]).unwrap();
        let before = ticks.get();
        // SAFETY: as above.
        unsafe { libc::FD_SET(fd, &mut set) };
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid sets and timeval.
        assert_eq!(
            unsafe { libc::select(fd + 1, &mut set, null, null, &mut tv) },
            0
        );
        // SAFETY: as above.
        assert!(!unsafe { libc::FD_ISSET(fd, &set) });
        assert!(ticks.get() - before >= 2);
        w.join().unwrap();
        tick.kill();
    });
}

#[test]
fn select_with_a_negative_timeout_fails_with_einval_at_once() {
    on_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            let (a, _b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            for (tv_sec, tv_usec) in [(-1, 0), (0, -1), (-1, 500_000), (5, -1)] {
                // SAFETY: a zeroed fd_set is empty; fd < FD_SETSIZE.
                let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                unsafe { libc::FD_SET(fd, &mut set) };
                let mut tv = libc::timeval { tv_sec, tv_usec };
                let t = Instant::now();
                let null = std::ptr::null_mut();
                // SAFETY: valid sets and timeval.
                let n = unsafe { libc::select(fd + 1, &mut set, null, null, &mut tv) };
                let err = std::io::Error::last_os_error();
                assert_eq!(n, -1, "({tv_sec}, {tv_usec})");
                assert_eq!(
                    err.raw_os_error(),
                    Some(libc::EINVAL),
                    "({tv_sec}, {tv_usec})"
                );
                // Nothing is ready: a wait would have lasted at least a second.
                assert!(
                    t.elapsed() < Duration::from_millis(900),
                    "({tv_sec}, {tv_usec})"
                );
            }
        })
        .join()
        .unwrap();
    });
}

#[test]
fn nonblocking_mode_is_virtual() {
    on_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            let (mut a, _b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            // SAFETY: raw fcntl syscall on a valid fd (bypasses the hooks).
            let kernel = || unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) } as i32;
            // SAFETY: valid fd.
            let user = || unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert_ne!(
                kernel() & libc::O_NONBLOCK,
                0,
                "the kernel fd is non-blocking"
            );
            assert_eq!(user() & libc::O_NONBLOCK, 0, "the user sees a blocking fd");
            a.set_nonblocking(true).unwrap();
            assert_ne!(user() & libc::O_NONBLOCK, 0);
            let t = Instant::now();
            assert_eq!(
                a.read(&mut [0u8; 1]).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
            // Nothing is ever written: a wait would last until the limit.
            assert!(t.elapsed() < Duration::from_secs(1));
            a.set_nonblocking(false).unwrap();
            assert_eq!(user() & libc::O_NONBLOCK, 0);
            assert_ne!(kernel() & libc::O_NONBLOCK, 0);
            // The same through fcntl(F_SETFL).
            // SAFETY: valid fd and flags.
            assert_eq!(
                unsafe { libc::fcntl(fd, libc::F_SETFL, user() | libc::O_NONBLOCK) },
                0
            );
            assert_ne!(user() & libc::O_NONBLOCK, 0);
            assert_eq!(
                a.read(&mut [0u8; 1]).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
            // A dup keeps the state.
            // SAFETY: valid fd; the copy is closed below.
            let d = unsafe { libc::dup(fd) };
            // SAFETY: as above.
            assert_ne!(
                unsafe { libc::fcntl(d, libc::F_GETFL) } & libc::O_NONBLOCK,
                0
            );
            // SAFETY: closing our own dup.
            assert_eq!(unsafe { libc::close(d) }, 0);
            // Regular files pass straight through.
            let f = std::fs::File::open("/proc/self/stat").unwrap();
            // SAFETY: valid fd.
            let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
            assert_eq!(fl & libc::O_NONBLOCK, 0);
            let mut s = String::new();
            (&f).read_to_string(&mut s).unwrap();
            assert!(!s.is_empty());
        })
        .join()
        .unwrap();
    });
}

#[test]
fn close_wakes_a_waiter_with_ebadf() {
    on_thread(Duration::from_secs(20), || {
        let mut sv = [0i32; 2];
        // SAFETY: valid out array of two ints.
        assert_eq!(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
            0
        );
        let fd = sv[0];
        let reader = moss::spawn(move || {
            let mut b = [0u8; 4];
            // SAFETY: valid buffer; the fd is closed by the other coroutine.
            let r = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 4) };
            (r, std::io::Error::last_os_error().raw_os_error())
        });
        moss::spawn(move || {
            moss::sleep(Duration::from_millis(50));
            // SAFETY: closing the fd the reader waits on (the point of the test).
            unsafe { libc::close(fd) };
        });
        assert_eq!(reader.join().unwrap(), (-1, Some(libc::EBADF)));
        // SAFETY: closing the other end.
        unsafe { libc::close(sv[1]) };
    });
}

#[test]
fn cancellation_inside_a_hooked_call() {
    on_thread(Duration::from_secs(20), || {
        let (a, _b) = UnixStream::pair().unwrap();
        // timeout around a blocking std read reports Elapsed.
        let t = Instant::now();
        let r = moss::timeout(Duration::from_millis(100), || (&a).read(&mut [0u8; 4]));
        assert!(r.is_err(), "expected Elapsed, got {r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        // The thread's root is usable afterwards (nothing pending).
        moss::sleep(Duration::from_millis(1));

        // kill: the read fails with ECANCELED (std does not retry it); the
        // kill is delivered at the next moss blocking point.
        let seen = Rc::new(Cell::new(None));
        let s2 = seen.clone();
        let (c, _d) = UnixStream::pair().unwrap();
        let victim = moss::spawn(move || {
            let e = (&c).read(&mut [0u8; 4]).unwrap_err();
            s2.set(e.raw_os_error());
            moss::sleep(Duration::from_secs(10));
            unreachable!("the kill is delivered at the sleep");
        });
        moss::sleep(Duration::from_millis(50));
        victim.kill();
        assert_eq!(seen.get(), Some(libc::ECANCELED));
        assert!(victim.join().unwrap_err().is_killed());

        // Killed inside a hooked call, then returning without another moss
        // blocking point: the kill still decides the outcome.
        let (e, _f) = UnixStream::pair().unwrap();
        let quitter = moss::spawn(move || (&e).read(&mut [0u8; 4]).map_err(|e| e.raw_os_error()));
        moss::sleep(Duration::from_millis(50));
        quitter.kill();
        assert!(quitter.join().unwrap_err().is_killed());

        // A killed std sleep ends early instead of spinning in std's retry loop.
        let t = Instant::now();
        let sleeper = moss::spawn(|| {
            std::thread::sleep(Duration::from_secs(10));
            moss::yield_now();
        });
        moss::sleep(Duration::from_millis(50));
        sleeper.kill();
        assert!(sleeper.join().unwrap_err().is_killed());
        assert!(t.elapsed() < Duration::from_secs(2));

        // timeout around a std sleep.
        let r = moss::timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(10))
        });
        assert!(r.is_err());
    });
}

#[test]
fn errno_is_exact_inside_coroutines() {
    on_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let e = TcpStream::connect(port).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
            let mut b = [0u8; 1];
            // SAFETY: invalid fd on purpose.
            assert_eq!(unsafe { libc::read(-1, b.as_mut_ptr().cast(), 1) }, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EBADF)
            );
            // A read that had to wait succeeds with errno as the caller left it.
            let (r, w) = UnixStream::pair().unwrap();
            let writer = moss::spawn(move || {
                moss::sleep(Duration::from_millis(30));
                (&w).write_all(b"z").unwrap();
                w
            });
            // SAFETY: writing this thread's errno.
            unsafe { *libc::__errno_location() = libc::E2BIG };
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            assert_eq!(
                (n, std::io::Error::last_os_error().raw_os_error()),
                (1, Some(libc::E2BIG))
            );
            drop(writer.join().unwrap());
            // A peer that went away: EOF, then EPIPE on write.
            let (mut a, b2) = UnixStream::pair().unwrap();
            drop(b2);
            assert_eq!(a.read(&mut b).unwrap(), 0);
            assert_eq!(a.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        })
        .join()
        .unwrap();
    });
}

#[test]
fn name_resolution_does_not_stall_other_coroutines() {
    on_thread(Duration::from_secs(20), || {
        let spins = Rc::new(Cell::new(0u64));
        let done = Rc::new(Cell::new(false));
        let (s, d) = (spins.clone(), done.clone());
        let spinner = moss::spawn(move || {
            while !d.get() {
                s.set(s.get() + 1);
                moss::yield_now();
            }
        });
        // A lookup in /etc/hosts can finish before the caller even parks,
        // so look up several times: without the hook the spinner never runs
        // during any of them (the root would not yield).
        let mut during = 0;
        for _ in 0..20 {
            let before = spins.get();
            let addrs: Vec<_> = ("localhost", 8080).to_socket_addrs().unwrap().collect();
            during += spins.get() - before;
            assert!(
                !addrs.is_empty()
                    && addrs
                        .iter()
                        .all(|a| a.ip().is_loopback() && a.port() == 8080)
            );
        }
        done.set(true);
        spinner.join().unwrap();
        assert!(
            during > 0,
            "the hub did not run other coroutines during 20 lookups"
        );
    });
}

#[test]
fn child_processes_still_work() {
    on_thread(Duration::from_secs(20), || {
        let out = std::process::Command::new("echo")
            .arg("from the root")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"from the root\n");
        let h = moss::spawn(|| {
            let out = std::process::Command::new("sh")
                .args(["-c", "sleep 0.1; echo from a coroutine"])
                .output()
                .unwrap();
            assert!(out.status.success());
            out.stdout
        });
        assert_eq!(h.join().unwrap(), b"from a coroutine\n");
        let e = std::process::Command::new("/nonexistent/moss-test")
            .status()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    });
}

#[test]
fn ureq_clients_overlap_against_a_slow_tiny_http_server() {
    // The server runs on plain threads (no hub: plain blocking I/O).
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    const CLIENTS: usize = 8;
    const DELAY: Duration = Duration::from_millis(400);
    let srv = std::thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..CLIENTS {
            let req = server.recv().unwrap();
            workers.push(std::thread::spawn(move || {
                std::thread::sleep(DELAY);
                let body = format!("slow answer to {}", req.url());
                req.respond(tiny_http::Response::from_string(body)).unwrap();
            }));
        }
        for w in workers {
            w.join().unwrap();
        }
    });
    let elapsed = on_thread(Duration::from_secs(30), move || {
        let t = Instant::now();
        let hs: Vec<_> = (0..CLIENTS)
            .map(|i| {
                moss::spawn(move || {
                    let url = format!("http://127.0.0.1:{port}/item/{i}");
                    ureq::get(&url).call().unwrap().into_string().unwrap()
                })
            })
            .collect();
        for (i, r) in moss::join_all(hs).into_iter().enumerate() {
            assert_eq!(r.unwrap(), format!("slow answer to /item/{i}"));
        }
        t.elapsed()
    });
    srv.join().unwrap();
    // Serially: 8 x 400 ms = 3.2 s.
    assert!(elapsed >= DELAY, "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2000),
        "clients did not overlap: {elapsed:?}"
    );
}

#[test]
fn io_copy_sendfile_and_splice_wait_cooperatively() {
    on_thread(Duration::from_secs(30), || {
        // File -> socket (sendfile): bigger than the socket buffers, so the
        // copy hits EAGAIN until the reader coroutine drains.
        let path =
            std::env::temp_dir().join(format!("moss-monkey-sendfile-{}", std::process::id()));
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let reader = moss::spawn(move || {
            let mut got = Vec::new();
            (&b).read_to_end(&mut got).unwrap();
            got
        });
        let (ticks, tick) = ticker();
        let mut f = std::fs::File::open(&path).unwrap();
        let n = std::io::copy(&mut f, &mut &a).unwrap();
        drop(a);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(reader.join().unwrap() == data, "bytes differ");

        // Socket -> pipe (splice): the socket has no data for 100 ms.
        let (c, d) = UnixStream::pair().unwrap();
        let (mut pr, mut pw) = std::io::pipe().unwrap();
        let writer = moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            (&d).write_all(b"spliced bytes").unwrap();
        });
        let before = ticks.get();
        let n = std::io::copy(&mut &c, &mut pw).unwrap();
        assert_eq!(n, 13);
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled during the splice"
        );
        writer.join().unwrap();
        drop(pw);
        let mut s = String::new();
        pr.read_to_string(&mut s).unwrap();
        assert_eq!(s, "spliced bytes");
        tick.kill();
    });
}

#[test]
fn std_and_moss_net_sockets_convert_both_ways_after_patching() {
    on_thread(Duration::from_secs(20), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = echo_server(listener, 2);
        let round_trip = |s: &mut dyn ReadWrite, msg: &[u8]| {
            s.write_all(msg).unwrap();
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, msg);
        };
        moss::spawn(move || {
            // A std stream the hooks made cooperative, taken over by moss::net
            // on the same thread, then given back.
            let mut s = TcpStream::connect(addr).unwrap();
            round_trip(&mut s, b"std first");
            let mut m = moss::net::TcpStream::from(s);
            round_trip(&mut m, b"then moss::net");
            let mut s: TcpStream = m.into();
            round_trip(&mut s, b"std again");
            // A moss::net stream from the start, handed to std code.
            let m2 = moss::net::TcpStream::connect(addr).unwrap();
            let mut s2: TcpStream = m2.into();
            round_trip(&mut s2, b"moss::net, then std");
        })
        .join()
        .unwrap();
        server.join().unwrap();
    });
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn a_cooperative_socket_moved_to_a_plain_thread_still_blocks() {
    on_thread(Duration::from_secs(20), || {
        // Made cooperative (kernel non-blocking) on this hub thread...
        let (a, b) = moss::spawn(|| UnixStream::pair().unwrap()).join().unwrap();
        let fd = a.as_raw_fd();
        // SAFETY: raw fcntl syscall (bypasses the hooks) on a valid fd.
        assert_ne!(
            unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) } as i32 & libc::O_NONBLOCK,
            0
        );
        // ...then used by a thread without a hub: blocking semantics.
        let plain = std::thread::spawn(move || {
            let mut buf = [0u8; 5];
            let t = Instant::now();
            (&a).read_exact(&mut buf).unwrap();
            let waited = t.elapsed();
            a.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let t = Instant::now();
            let e = (&a).read(&mut buf).unwrap_err();
            (buf, waited, e.kind(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100)); // a coroutine-free wait on the root
        (&b).write_all(b"later").unwrap();
        let (buf, waited, kind, timed) = plain.join().unwrap();
        assert_eq!(&buf, b"later");
        // A non-blocking read would have failed read_exact with WouldBlock;
        // the thread may have started late, so the wait can be shorter.
        assert!(waited > Duration::ZERO, "{waited:?}");
        assert_eq!(kind, ErrorKind::WouldBlock);
        assert!(timed >= Duration::from_millis(95), "{timed:?}");
    });
}

#[test]
fn pipes_and_child_output_are_read_cooperatively() {
    on_thread(Duration::from_secs(20), || {
        let (ticks, tick) = ticker();
        // An anonymous pipe made by this process.
        let (mut r, w) = std::io::pipe().unwrap();
        let writer = moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            (&w).write_all(b"through a pipe").unwrap();
        });
        let before = ticks.get();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through a pipe");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled on the pipe read"
        );
        // SAFETY: valid fd.
        let fl = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(
            fl & libc::O_NONBLOCK,
            0,
            "the user still sees a blocking pipe"
        );
        writer.join().unwrap();

        // A child's stdout, read while the child takes its time; the child
        // (which reads its stdin blocking) is unaffected.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line; sleep 0.2; echo \"got $line\""])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let before = ticks.get();
        moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stdin.write_all(b"hello\n").unwrap();
        });
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        assert_eq!(out, "got hello\n");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled on the child's stdout"
        );
        assert!(child.wait().unwrap().success());
        tick.kill();
    });
}

#[test]
fn connect_timeout_expires_cooperatively_against_a_full_backlog() {
    on_thread(Duration::from_secs(20), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // SAFETY: re-listen with the smallest backlog on our own socket.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let (ticks, tick) = ticker();
        let h = moss::spawn(move || {
            // Nobody accepts: once the queue is full, SYNs are dropped and a
            // connect can only time out.
            let mut held = Vec::new();
            for _ in 0..8 {
                let t = Instant::now();
                match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(s) => held.push(s),
                    Err(e) => return (e.kind(), t.elapsed(), held.len()),
                }
            }
            panic!("8 connections to a backlog-0 listener all succeeded");
        });
        let before = ticks.get();
        let (kind, waited, ok) = h.join().unwrap();
        assert_eq!(kind, ErrorKind::TimedOut, "after {ok} connections");
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled during connect_timeout"
        );
        tick.kill();
        drop(listener);
    });
}

#[test]
fn cross_thread_wakeups_still_work_after_patching() {
    // The hub's eventfd is written through the `write` hook by a coroutine
    // of another thread: it must stay a plain write.
    moss::monkey::patch_all();
    let ev = std::sync::Arc::new(moss::sync::Event::new());
    let e2 = ev.clone();
    let setter = std::thread::spawn(move || {
        moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            e2.set();
        })
        .join()
        .unwrap();
    });
    let t = Instant::now();
    assert!(ev.wait_timeout(Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(5));
    setter.join().unwrap();
}

#[test]
fn other_fds_pass_straight_through_in_coroutines() {
    on_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            // A regular file: plain reads and writes, flags untouched.
            let path =
                std::env::temp_dir().join(format!("moss-monkey-plain-{}", std::process::id()));
            std::fs::write(&path, b"plain file").unwrap();
            let f = std::fs::File::open(&path).unwrap();
            let mut s = String::new();
            (&f).read_to_string(&mut s).unwrap();
            assert_eq!(s, "plain file");
            // SAFETY: raw fcntl syscall on a valid fd (bypasses the hooks).
            let kernel =
                unsafe { libc::syscall(libc::SYS_fcntl, f.as_raw_fd(), libc::F_GETFL) } as i32;
            assert_eq!(
                kernel & libc::O_NONBLOCK,
                0,
                "a regular file was made non-blocking"
            );
            std::fs::remove_file(&path).unwrap();
            // An eventfd (what the hub's waker is): a non-blocking read of an
            // empty one fails at once with EAGAIN, exactly as libc's.
            // SAFETY: plain syscall wrappers on our own eventfd.
            unsafe {
                let e = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
                assert!(e >= 0);
                let mut v = 0u64;
                let t = Instant::now();
                assert_eq!(libc::read(e, (&raw mut v).cast(), 8), -1);
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EAGAIN)
                );
                // Nothing else writes it: a wait would last until the limit.
                assert!(t.elapsed() < Duration::from_secs(1));
                let one = 1u64;
                assert_eq!(libc::write(e, (&raw const one).cast(), 8), 8);
                assert_eq!(libc::read(e, (&raw mut v).cast(), 8), 8);
                assert_eq!(v, 1);
                assert_eq!(libc::close(e), 0);
            }
            // /dev/null takes writes.
            let mut null = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .unwrap();
            null.write_all(&[0u8; 4096]).unwrap();
        })
        .join()
        .unwrap();
    });
}

#[test]
fn write_timeout_expires_with_would_block_while_others_run() {
    on_thread(Duration::from_secs(20), || {
        let (ticks, tick) = ticker();
        let h = moss::spawn(|| {
            let (a, _b) = UnixStream::pair().unwrap(); // nobody reads `_b`
            a.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let chunk = [0u8; 64 * 1024];
            let mut sent = 0usize;
            let t = Instant::now();
            loop {
                match (&a).write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => return (e.kind(), t.elapsed(), sent),
                }
            }
        });
        let before = ticks.get();
        let (kind, waited, sent) = h.join().unwrap();
        assert_eq!(kind, ErrorKind::WouldBlock, "after {sent} bytes");
        assert!(sent > 0);
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled during the write"
        );
        tick.kill();
    });
}

#[test]
fn reads_after_short_reads_peeks_datagrams_and_waitall() {
    on_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            // A short read, then a peek that has to wait, then a read: the
            // read must find the peeked bytes.
            let (a, b) = UnixStream::pair().unwrap();
            (&b).write_all(b"ab").unwrap();
            let mut buf = [0u8; 8];
            assert_eq!((&a).read(&mut buf).unwrap(), 2);
            let w = moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                (&b).write_all(b"cd").unwrap();
                b
            });
            // SAFETY: valid fd and buffer.
            let n =
                unsafe { libc::recv(a.as_raw_fd(), buf.as_mut_ptr().cast(), 8, libc::MSG_PEEK) };
            assert_eq!(n, 2);
            assert_eq!((&a).read(&mut buf).unwrap(), 2);
            assert_eq!(&buf[..2], b"cd");
            let b = w.join().unwrap();

            // MSG_WAITALL collects everything even if it comes in pieces.
            let w = moss::spawn(move || {
                for part in [b"1234", b"5678"] {
                    moss::sleep(Duration::from_millis(20));
                    (&b).write_all(part).unwrap();
                }
                b
            });
            // SAFETY: valid fd and buffer.
            let n =
                unsafe { libc::recv(a.as_raw_fd(), buf.as_mut_ptr().cast(), 8, libc::MSG_WAITALL) };
            assert_eq!(n, 8);
            assert_eq!(&buf, b"12345678");
            drop(w.join().unwrap());

            // Datagrams: each recv is "short", yet queued ones must still be read.
            let (c, d) = std::os::unix::net::UnixDatagram::pair().unwrap();
            d.send(b"one").unwrap();
            d.send(b"two").unwrap();
            assert_eq!(c.recv(&mut buf).unwrap(), 3);
            assert_eq!(c.recv(&mut buf).unwrap(), 3);
            assert_eq!(&buf[..3], b"two");
            let w = moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                d.send(b"three").unwrap();
                d.send(b"four").unwrap();
                d
            });
            assert_eq!(c.recv(&mut buf).unwrap(), 5);
            assert_eq!(c.recv(&mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"four");
            drop(w.join().unwrap());
        })
        .join()
        .unwrap();
    });
}

#[test]
fn hooked_call_in_a_greenlet_driven_by_a_coroutine_blocks_the_thread_instead() {
    on_thread(Duration::from_secs(20), || {
        // A greenlet cannot suspend the coroutine that drives it: a hooked
        // sleep there blocks the thread for its duration, as unpatched code
        // would, instead of aborting.
        let h = moss::spawn(|| {
            let g = moss::greenlet::Greenlet::new(|v: u32| {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(30));
                v + t.elapsed().as_millis().min(1000) as u32
            });
            g.switch(1)
        });
        let v = h.join().unwrap();
        assert!((31..1000).contains(&v), "{v}");
    });
}
