//! Hooked `poll` and `select` after `patch_all`.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn poll_and_select_wait_cooperatively() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (a, b) = UnixStream::pair().unwrap();
        let (ticks, tick) = util::ticker();
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
    util::on_patched_thread(Duration::from_secs(20), || {
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
