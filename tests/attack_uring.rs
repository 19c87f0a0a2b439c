//! The io_uring backend under attack: kills and timeouts at each blocking
//! point of moss::net on the ring (accept, recv_from, peek, read), a
//! shutdown from another coroutine while a read is in flight, a thread
//! that exits with operations in flight, an fd closed (patched `close`)
//! by another coroutine while its read is in flight, and the fd number
//! reused by a new socket meanwhile (the epoll backend too).

mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use moss::net::{TcpListener, TcpStream, UdpSocket};
use moss::reactor::uring::in_flight;

fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// Kills, then times out, a coroutine blocked in `op` on the ring; each
/// time the operation is cancelled exactly (nothing left in flight) and
/// `check` then finds the socket still working.
fn cancel_twice<S: 'static>(
    sock: std::rc::Rc<S>,
    op: fn(&S) -> std::io::Result<usize>,
    check: impl Fn(&S),
) {
    let s = sock.clone();
    let h = moss::spawn(move || op(&s));
    util::until_parked(h.id());
    assert_eq!(in_flight(), 1);
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    assert_eq!(in_flight(), 0);
    check(&sock);
    let s = sock.clone();
    let h = moss::spawn(move || moss::timeout(Duration::from_millis(20), || op(&s)));
    let t = Instant::now();
    assert!(h.join().unwrap().is_err(), "the timeout fired");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(in_flight(), 0);
    check(&sock);
}

#[test]
fn kill_and_timeout_of_accept_recv_from_and_peek_on_the_ring() {
    util::on_thread(Duration::from_secs(60), || {
        util::on_uring();
        let l = std::rc::Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        cancel_twice(
            l.clone(),
            |l| l.accept().map(|_| 0),
            |l| {
                let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (mut s, _) = l.accept().unwrap();
                (&c).write_all(b"ok").unwrap();
                let mut b = [0u8; 2];
                s.read_exact(&mut b).unwrap();
                assert_eq!(&b, b"ok");
            },
        );
        let u = std::rc::Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        cancel_twice(
            u.clone(),
            |u| {
                let mut b = [0u8; 16];
                u.recv_from(&mut b).map(|(n, _)| n)
            },
            |u| {
                let o = UdpSocket::bind("127.0.0.1:0").unwrap();
                o.send_to(b"dgram", u.local_addr().unwrap()).unwrap();
                let mut b = [0u8; 16];
                let (n, from) = u.recv_from(&mut b).unwrap();
                assert_eq!(&b[..n], b"dgram");
                assert_eq!(from, o.local_addr().unwrap());
            },
        );
        let (c, s) = pair(&l);
        let s = std::rc::Rc::new(s);
        let c = std::rc::Rc::new(c);
        let c2 = c.clone();
        cancel_twice(
            s.clone(),
            |s| {
                let mut b = [0u8; 4];
                s.peek(&mut b)
            },
            move |s| {
                (&*c2).write_all(b"peek").unwrap();
                let mut b = [0u8; 4];
                assert_eq!(s.peek(&mut b).unwrap(), 4);
                let mut r = [0u8; 4];
                (&*s).read_exact(&mut r).unwrap();
                assert_eq!(&r, b"peek");
            },
        );
        drop(c);
    });
}

/// `shutdown(Read)` through a clone while a read of the same socket waits
/// on the ring: the read ends with end-of-file, at once.
#[test]
fn shutdown_from_another_coroutine_ends_a_read_in_flight() {
    util::on_thread(Duration::from_secs(60), || {
        util::on_uring();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_c, s) = pair(&l);
        let s2 = s.try_clone().unwrap();
        let reader = moss::spawn(move || {
            let mut s = s;
            let mut b = [0u8; 8];
            s.read(&mut b)
        });
        util::until_parked(reader.id());
        let t = Instant::now();
        s2.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(in_flight(), 0);
    });
}

/// A thread ends while coroutines of its hub wait in ring reads and
/// accepts: they are killed, each waits for its CQE, and the thread ends.
#[test]
fn a_thread_exits_with_reads_in_flight() {
    for round in 0..3 {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            util::on_uring();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let drops = util::DropCounter::new();
            let mut keep = Vec::new();
            for _ in 0..20 {
                let (c, s) = pair(&l);
                keep.push(c);
                let token = drops.token();
                moss::spawn(move || {
                    let _t = token;
                    let mut s = s;
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b);
                });
            }
            let token = drops.token();
            moss::spawn(move || {
                let _t = token;
                let _ = l.accept();
            });
            moss::sleep(Duration::from_millis(10));
            tx.send(drops).unwrap();
            // The thread returns with 21 coroutines parked on the ring.
        });
        let drops = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "round {round}: the thread did not end"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().unwrap();
        assert_eq!(drops.drops(), 21, "round {round}: every coroutine unwound");
    }
}

/// Under `patch_all`, another coroutine `close`s the fd of a moss::net
/// socket whose read waits (on the ring, or for readiness on epoll), and
/// opens a new socket that gets the same fd number. As with a blocking
/// read on Linux, the close does not end the read; but the bytes sent to
/// the new socket go to its own reads, never to the old read, and a kill
/// still ends the old read (on the ring: its operation is cancelled, none
/// left in flight).
fn close_during_a_read(uring: bool) {
    if uring {
        util::on_uring();
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (c, s) = pair(&l);
    let fd = s.as_raw_fd();
    // Leaked: its destructor never closes the fd closed below.
    let sref: &'static TcpStream = Box::leak(Box::new(s));
    let reader = moss::spawn(move || {
        let mut b = [0u8; 8];
        (&*sref).read(&mut b).map(|n| b[..n].to_vec())
    });
    util::until_parked(reader.id());
    // SAFETY: the fd is the leaked stream's, never closed elsewhere.
    assert_eq!(unsafe { libc::close(fd) }, 0);
    let (c2, s2) = pair(&l);
    assert!(
        s2.as_raw_fd() == fd || c2.as_raw_fd() == fd,
        "the fd number is reused"
    );
    for _ in 0..20 {
        (&c2).write_all(b"new").unwrap();
        (&s2).write_all(b"NEW").unwrap();
        let mut b = [0u8; 3];
        (&s2).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"new");
        (&c2).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"NEW");
        moss::sleep(Duration::from_millis(1));
    }
    assert!(!reader.is_finished(), "{:?}", reader.join());
    let t = Instant::now();
    reader.kill();
    assert!(reader.join().unwrap_err().is_killed());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    if uring {
        assert_eq!(in_flight(), 0);
    }
    drop(c);
}

#[test]
fn a_close_then_fd_reuse_during_a_ring_read() {
    util::isolated_patched(
        "a_close_then_fd_reuse_during_a_ring_read",
        Duration::from_secs(40),
        || close_during_a_read(true),
    );
}

#[test]
fn a_close_then_fd_reuse_during_an_epoll_read() {
    util::isolated_patched(
        "a_close_then_fd_reuse_during_an_epoll_read",
        Duration::from_secs(40),
        || close_during_a_read(false),
    );
}
