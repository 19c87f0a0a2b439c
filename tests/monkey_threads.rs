//! Sockets and wake-ups that cross threads after `patch_all`: std and
//! moss::net conversions, a cooperative socket used by a plain thread,
//! cross-thread wake-ups.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn std_and_moss_net_sockets_convert_both_ways_after_patching() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = util::std_echo_server(listener, 2);
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
    util::on_patched_thread(Duration::from_secs(20), || {
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

/// On another thread, in a coroutine of its own hub.
fn elsewhere<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || moss::spawn(f).join().unwrap())
        .join()
        .unwrap()
}

/// A `moss::net` socket that waited on this thread, converted to std on
/// another thread and read back here by hooked std code: the hooks used to
/// collide with the old registration (`EEXIST`) and block the whole thread
/// in `poll(2)` (no tick got through). Now the read parks.
#[test]
fn a_moss_socket_back_as_std_code_on_its_first_thread_parks() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (a, b) = moss::net::UnixStream::pair().unwrap();
        let b = std::rc::Rc::new(b);
        let w = b.clone();
        let first = moss::spawn(move || {
            moss::sleep(Duration::from_millis(20));
            (&*w).write_all(b"1").unwrap();
        });
        let mut one = [0u8; 1];
        (&a).read_exact(&mut one).unwrap(); // waits: registers here
        first.join().unwrap();
        let a: UnixStream = elsewhere(move || UnixStream::from(a));
        let (ticks, ticker) = util::ticker();
        let w = b.clone();
        let late = moss::spawn(move || {
            moss::sleep(Duration::from_millis(200));
            (&*w).write_all(b"2").unwrap();
        });
        (&a).read_exact(&mut one).unwrap(); // hooked: must park
        assert_eq!(&one, b"2");
        assert!(ticks.get() >= 5, "the hub stalled: {} ticks", ticks.get());
        late.join().unwrap();
        ticker.kill();
    });
}

/// The reverse: a std socket that waited in a coroutine here, converted to
/// `moss::net` on another thread and used back here: every blocking read
/// used to fail with `AlreadyExists` ("File exists").
#[test]
fn a_std_socket_back_as_moss_socket_on_its_first_thread_works() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (a, b) = UnixStream::pair().unwrap();
        let b = std::rc::Rc::new(b);
        let w = b.clone();
        let a = moss::spawn(move || {
            let writer = moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                (&*w).write_all(b"1").unwrap();
            });
            let mut one = [0u8; 1];
            (&a).read_exact(&mut one).unwrap(); // hooked wait: registers here
            writer.join().unwrap();
            a
        })
        .join()
        .unwrap();
        let a: moss::net::UnixStream = elsewhere(move || moss::net::UnixStream::from(a));
        for round in 0..3u8 {
            let w = b.clone();
            let late = moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                (&*w).write_all(&[round]).unwrap();
            });
            let mut one = [0u8; 1];
            (&a).read_exact(&mut one).unwrap();
            assert_eq!(one[0], round);
            late.join().unwrap();
        }
    });
}

/// Both at once on one thread: a `moss::net` read waits on a socket while
/// hooked std code writes to the same fd until it must wait too. The two
/// share the fd's registration (the std write used to get `EEXIST` and
/// block the thread in `poll(2)`, so the drainer never ran).
#[test]
fn moss_net_and_hooked_std_code_share_a_socket_on_one_thread() {
    util::on_patched_thread(Duration::from_secs(20), || {
        use std::os::fd::FromRawFd;
        let (a, b) = moss::net::UnixStream::pair().unwrap();
        let a = std::rc::Rc::new(a);
        let b = std::rc::Rc::new(b);
        let r = a.clone();
        let reader = moss::spawn(move || {
            let mut one = [0u8; 1];
            (&*r).read_exact(&mut one).unwrap();
            one[0]
        });
        util::until_parked(reader.id());
        let fd = a.as_raw_fd();
        let writer = moss::spawn(move || {
            // SAFETY: a std view of `a`'s fd that never closes it.
            let s = std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(fd) });
            // moss::net set O_NONBLOCK; the std view wants blocking writes
            // (moss::net itself never depends on the flag).
            s.set_nonblocking(false).unwrap();
            (&*s).write_all(&vec![5u8; 4 << 20]).unwrap(); // fills the buffer, waits
        });
        let d = b.clone();
        let drainer = moss::spawn(move || {
            moss::sleep(Duration::from_millis(50));
            let mut got = vec![0u8; 4 << 20];
            (&*d).read_exact(&mut got).unwrap();
            assert!(got.iter().all(|&x| x == 5));
            (&*d).write_all(b"!").unwrap();
        });
        writer.join().unwrap();
        drainer.join().unwrap();
        assert_eq!(reader.join().unwrap(), b'!');
        drop(a);
    });
}

/// A `moss::net` read whose last read was short waits for a readiness edge
/// before its syscall, unless hooked std code shares the socket's
/// registration (its waits may take the edge). The socket keeps the
/// registration it got and waits through it directly: that must stop once
/// the hooks share it. Here a hooked `peek` takes the edge of the data the
/// moss read then finds without waiting (waiting, it would time out).
#[test]
fn a_moss_read_after_a_short_read_finds_data_whose_edge_hooked_code_took() {
    util::on_patched_thread(Duration::from_secs(20), || {
        use std::os::fd::FromRawFd;
        let l = moss::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = moss::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let a = std::rc::Rc::new(a);
        let r = a.clone();
        // Waits: registers (and keeps) the socket's registration.
        let reader = moss::spawn(move || {
            let mut buf = [0u8; 16];
            let n = (&*r).read(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        util::until_parked(reader.id());
        let fd = a.as_raw_fd();
        let peeker = moss::spawn(move || {
            // SAFETY: a std view of `a`'s fd that never closes it.
            let s = std::mem::ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
            s.set_nonblocking(false).unwrap();
            let mut p = [0u8; 1];
            // Shares the registration (the reader waits), woken with it by
            // "x", which the reader (queued first) takes: waits again.
            assert_eq!(s.peek(&mut p).unwrap(), 1);
            p[0]
        });
        util::until_parked(peeker.id());
        b.write_all(b"x").unwrap();
        // A short read: the next one waits for an edge first.
        assert_eq!(reader.join().unwrap(), b"x");
        util::until_parked(peeker.id());
        b.write_all(b"y").unwrap(); // the peeker's edge
        assert_eq!(peeker.join().unwrap(), b'y');
        let mut buf = [0u8; 16];
        let n = (&*a).read(&mut buf).expect("the data is there: no wait");
        assert_eq!(&buf[..n], b"y");
    });
}
