//! std::net sockets after `patch_all`: connections, timeouts, the
//! virtual non-blocking mode, errno, and `close` under a waiter.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn std_net_echo_server_and_clients_in_one_thread() {
    util::on_patched_thread(Duration::from_secs(30), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = util::std_echo_server(listener, 10);
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
    util::on_patched_thread(Duration::from_secs(20), || {
        moss::yield_now(); // this thread has a hub: its root is cooperative
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = util::std_echo_server(listener, 1);
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
    util::on_patched_thread(Duration::from_secs(20), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ticks, tick) = util::ticker();
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
fn connect_timeout_expires_cooperatively_against_a_full_backlog() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // SAFETY: re-listen with the smallest backlog on our own socket.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let (ticks, tick) = util::ticker();
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
fn write_timeout_expires_with_would_block_while_others_run() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (ticks, tick) = util::ticker();
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
    util::on_patched_thread(Duration::from_secs(20), || {
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
fn nonblocking_mode_is_virtual() {
    util::on_patched_thread(Duration::from_secs(20), || {
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
fn errno_is_exact_inside_coroutines() {
    util::on_patched_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            let e = TcpStream::connect(util::refused_addr()).unwrap_err();
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
fn close_wakes_a_waiter_with_ebadf() {
    util::on_patched_thread(Duration::from_secs(20), || {
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

/// `dup2` onto an fd a coroutine waits on: the waiter fails with `EBADF`,
/// as after `close` (Linux would keep the blocked call on the old file).
/// It never reads the new file's data, which stays for the next reader.
#[test]
fn dup2_over_a_waited_fd_wakes_the_waiter_with_ebadf() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixStream::pair().unwrap();
        (&d).write_all(b"new").unwrap();
        let fd = a.as_raw_fd();
        let reader = moss::spawn(move || {
            let mut buf = [0u8; 8];
            // SAFETY: a valid buffer; the fd is replaced by dup2 meanwhile.
            let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            (r, std::io::Error::last_os_error().raw_os_error())
        });
        util::until_parked(reader.id());
        // SAFETY: replaces `a`'s fd number with a duplicate of `c` (the
        // point of the test); `a` then owns (and later closes) that dup.
        assert_eq!(unsafe { libc::dup2(c.as_raw_fd(), fd) }, fd);
        assert_eq!(reader.join().unwrap(), (-1, Some(libc::EBADF)));
        let mut buf = [0u8; 3];
        (&a).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"new");
        drop((a, b, c, d));
    });
}
