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

/// C code with separate read and write interests lists one fd twice. Both
/// entries are watched: the fd turning writable (the other end drains it
/// after 100 ms) ends a poll without timeout, with only that entry set.
#[test]
fn poll_watches_every_entry_of_an_fd_listed_twice() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        // Fill a's send path so it is not writable.
        let chunk = [7u8; 64 * 1024];
        loop {
            match (&a).write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let drainer = moss::spawn(move || {
            moss::sleep(Duration::from_millis(100));
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                match (&b).read(&mut buf) {
                    Ok(n) => total += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            (b, total)
        });
        let fd = a.as_raw_fd();
        let mut p = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            },
        ];
        let t = Instant::now();
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        assert_eq!(n, 1, "revents {:?}", (p[0].revents, p[1].revents));
        assert_eq!(p[0].revents, 0);
        assert_eq!(p[1].revents & libc::POLLOUT, libc::POLLOUT);
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        let (_b, drained) = drainer.join().unwrap();
        assert!(drained > 0);
    });
}

/// An fd that turns ready just before the deadline is reported, as the
/// real call would. A blocker coroutine holds the thread from before the
/// writer's deadline until after the poll's, so both timers have expired
/// when the hub next looks: the writer (the earlier deadline) runs first and
/// writes, and the poll's own wait ends by its deadline with no readiness
/// event seen yet, but the data there.
#[test]
fn poll_and_select_report_what_is_ready_at_the_deadline() {
    util::on_patched_thread(Duration::from_secs(20), || {
        moss::spawn(poll_at_the_deadline).join().unwrap();
    });
}

fn poll_at_the_deadline() {
    {
        for round in 0..6 {
            let (a, b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            let t0 = Instant::now();
            let blocker = moss::spawn(move || {
                moss::sleep(
                    (t0 + Duration::from_millis(60)).saturating_duration_since(Instant::now()),
                );
                // Busy, not yielding: the hub runs no timer meanwhile.
                while t0.elapsed() < Duration::from_millis(160) {
                    std::hint::spin_loop();
                }
            });
            let d = t0 + Duration::from_millis(80);
            let writer = moss::spawn(move || {
                moss::sleep(d.saturating_duration_since(Instant::now()));
                (&b).write_all(b"x").unwrap();
                b
            });
            if round % 2 == 0 {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut p, 1, 100) };
                assert_eq!(
                    (n, p.revents & libc::POLLIN),
                    (1, libc::POLLIN),
                    "round {round}"
                );
            } else {
                // SAFETY: a zeroed fd_set is empty; fd < FD_SETSIZE.
                let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                unsafe { libc::FD_SET(fd, &mut set) };
                let mut tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                let null = std::ptr::null_mut();
                // SAFETY: valid sets and timeval.
                let n = unsafe { libc::select(fd + 1, &mut set, null, null, &mut tv) };
                assert_eq!(n, 1, "round {round}");
                // SAFETY: as above.
                assert!(unsafe { libc::FD_ISSET(fd, &set) });
            }
            writer.join().unwrap();
            blocker.join().unwrap();
        }
    }
}

/// The temporary epoll instance a blocking `poll` waits on stays off the
/// numbers 0-2 of a process whose stdio is closed, like the hub's own fds:
/// checked while the poll waits, then the poll still wakes on readiness.
#[test]
fn poll_epoll_never_takes_closed_stdio_numbers() {
    util::with_stdio_closed(
        "poll_epoll_never_takes_closed_stdio_numbers",
        Duration::from_secs(30),
        || {
            moss::monkey::patch_all();
            // The pair would get 0 and 1: its copies are at 3 or above.
            let (a0, b0) = UnixStream::pair().unwrap();
            let (a, b) = (a0.try_clone().unwrap(), b0.try_clone().unwrap());
            drop((a0, b0));
            moss::yield_now(); // the hub exists before the poll
            let fd = a.as_raw_fd();
            let h = moss::spawn(move || {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut p, 1, 20_000) };
                (n, p.revents)
            });
            util::until_parked(h.id());
            // SAFETY: F_GETFD only reads flags.
            let taken: Vec<i32> = (0..3)
                .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
                .collect();
            (&b).write_all(b"x").unwrap();
            let (n, revents) = h.join().unwrap();
            assert_eq!(taken, Vec::<i32>::new(), "taken while the poll waited");
            assert_eq!(n, 1);
            assert!(revents & libc::POLLIN != 0);
            drop(a);
        },
    );
}
