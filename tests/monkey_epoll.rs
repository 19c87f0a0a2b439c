//! After `patch_all`, a library running its own epoll loop (here mio, used
//! directly) parks its coroutine instead of blocking the hub.

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};

mod util;

fn patched_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    util::on_patched_thread(Duration::from_secs(30), f)
}

#[test]
fn mio_loops_in_coroutines_wake_on_their_events_and_overlap() {
    patched_thread(|| {
        let (ticks, tk) = util::ticker();
        let t = Instant::now();
        let hs: Vec<_> = (0..8u8)
            .map(|i| {
                moss::spawn(move || {
                    let mut poll = Poll::new().unwrap();
                    let (mut rx, mut tx) = UnixStream::pair().unwrap();
                    poll.registry()
                        .register(&mut rx, Token(7), Interest::READABLE)
                        .unwrap();
                    let writer = moss::spawn(move || {
                        moss::sleep(Duration::from_millis(200));
                        tx.write_all(&[i; 3]).unwrap();
                        tx
                    });
                    let mut events = Events::with_capacity(8);
                    // Blocks in epoll_wait until the writer's bytes arrive.
                    poll.poll(&mut events, Some(Duration::from_secs(10)))
                        .unwrap();
                    let tokens: Vec<_> = events.iter().map(|e| e.token()).collect();
                    assert_eq!(tokens, [Token(7)]);
                    let mut buf = [0u8; 8];
                    let n = rx.read(&mut buf).unwrap();
                    drop(writer.join().unwrap());
                    buf[..n].to_vec()
                })
            })
            .collect();
        // And eight loops with nothing to report, each waiting 300 ms.
        let idle: Vec<_> = (0..8)
            .map(|_| {
                moss::spawn(|| {
                    let mut poll = Poll::new().unwrap();
                    let mut events = Events::with_capacity(8);
                    let t = Instant::now();
                    poll.poll(&mut events, Some(Duration::from_millis(300)))
                        .unwrap();
                    assert!(events.is_empty());
                    t.elapsed()
                })
            })
            .collect();
        for (i, r) in moss::join_all(hs).into_iter().enumerate() {
            assert_eq!(r.unwrap(), vec![i as u8; 3]);
        }
        for r in moss::join_all(idle) {
            assert!(r.unwrap() >= Duration::from_millis(300));
        }
        let el = t.elapsed();
        // Serially: 8 x 200 ms + 8 x 300 ms = 4 s.
        assert!(
            el < Duration::from_millis(2000),
            "loops did not overlap: {el:?}"
        );
        assert!(
            ticks.get() >= 5,
            "the hub was blocked: {} ticks",
            ticks.get()
        );
        tk.kill();
    });
}

#[test]
fn a_mio_loop_killed_or_timed_out_while_waiting() {
    patched_thread(|| {
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        let r = moss::spawn(move || {
            moss::timeout(Duration::from_millis(100), move || {
                let mut poll = Poll::new().unwrap();
                let mut events = Events::with_capacity(8);
                let e = poll.poll(&mut events, None).unwrap_err();
                s.set(e.raw_os_error());
            })
        })
        .join()
        .unwrap();
        assert!(r.is_err(), "the timeout fired");
        assert_eq!(seen.get(), Some(libc::ECANCELED));
        let h = moss::spawn(|| {
            let mut poll = Poll::new().unwrap();
            let mut events = Events::with_capacity(8);
            let _ = poll.poll(&mut events, None);
            // Delivered at the next moss blocking point.
            moss::sleep(Duration::from_secs(60));
        });
        util::until_parked(h.id());
        let t = Instant::now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn two_coroutines_wait_on_one_epoll_fd() {
    patched_thread(|| {
        let ep = epoll_create();
        assert!(ep >= 0);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 42,
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        assert_eq!(
            // SAFETY: `ev` is a valid event for the call's duration.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) },
            0
        );
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                moss::spawn(move || {
                    let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
                    // Level-triggered: both see the same readable fd.
                    let n = epoll_wait(ep, &mut out, 4, 10_000);
                    (n, out[0].u64)
                })
            })
            .collect();
        for w in &waiters {
            util::until_parked(w.id());
        }
        b.write_all(b"x").unwrap();
        for r in moss::join_all(waiters) {
            assert_eq!(r.unwrap(), (1, 42));
        }
        close(ep);
        drop(a);
    });
}

#[test]
fn bad_fds_and_zero_timeouts_behave_as_the_real_call() {
    patched_thread(|| {
        moss::spawn(|| {
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
            let t = Instant::now();
            // Not an epoll fd: EINVAL at once, not a wait.
            let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
            let n = epoll_wait(fd, &mut out, 1, 5_000);
            assert_eq!(n, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINVAL)
            );
            let n = epoll_wait(-1, &mut out, 1, 5_000);
            assert_eq!(n, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EBADF)
            );
            let ep = epoll_create();
            let n = epoll_wait(ep, &mut out, 0, 5_000);
            assert_eq!(n, -1, "maxevents 0 is EINVAL");
            // A zero timeout polls.
            let n = epoll_wait(ep, &mut out, 1, 0);
            assert_eq!(n, 0);
            // With a signal mask: the real call (a short one here).
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: `set` is writable; `sigemptyset` initializes it.
            let set = unsafe {
                libc::sigemptyset(set.as_mut_ptr());
                set.assume_init()
            };
            let n = epoll_pwait(ep, &mut out, 20, Some(&set));
            assert_eq!(n, 0);
            // Without one: cooperative, times out with 0.
            let n = epoll_pwait(ep, &mut out, 20, None);
            assert_eq!(n, 0);
            close(ep);
            assert!(t.elapsed() < Duration::from_secs(4));
        })
        .join()
        .unwrap();
    });
}

#[test]
fn a_root_with_a_hub_still_blocks_in_its_own_epoll_loop() {
    patched_thread(|| {
        // The hub exists and has a coroutine; the root's mio loop is not
        // cooperative (only coroutines park) but must work as before.
        let h = moss::spawn(|| moss::sleep(Duration::from_millis(1)));
        let mut poll = Poll::new().unwrap();
        let (mut rx, mut tx) = UnixStream::pair().unwrap();
        poll.registry()
            .register(&mut rx, Token(1), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        let t = Instant::now();
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(events.is_empty());
        assert!(t.elapsed() >= Duration::from_millis(50));
        tx.write_all(b"y").unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(events.iter().count(), 1);
        h.join().unwrap();
    });
}

fn epoll_create() -> i32 {
    // SAFETY: a plain syscall that takes no pointer.
    unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }
}

/// `epoll_wait` into `out`, asking for at most `max` events.
fn epoll_wait(ep: i32, out: &mut [libc::epoll_event], max: i32, ms: i32) -> i32 {
    assert!(max as usize <= out.len());
    // SAFETY: `out` has room for the `max` events asked for (checked above).
    unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), max, ms) }
}

/// `epoll_pwait` for one event, with `mask` (`None`: a null mask).
fn epoll_pwait(
    ep: i32,
    out: &mut [libc::epoll_event; 1],
    ms: i32,
    mask: Option<&libc::sigset_t>,
) -> i32 {
    let mask = mask.map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
    // SAFETY: `out` has room for the one event asked for; `mask` is null or
    // points at a live, initialized set.
    unsafe { libc::epoll_pwait(ep, out.as_mut_ptr(), 1, ms, mask) }
}

/// Closes `fd`, an fd of this test's own that nothing uses any more.
fn close(fd: i32) {
    // SAFETY: `fd` is owned by the caller, closed once, after its last use.
    assert_eq!(unsafe { libc::close(fd) }, 0);
}
