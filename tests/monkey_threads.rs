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
