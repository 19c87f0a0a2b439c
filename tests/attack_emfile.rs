//! Attacks: moss under file-descriptor exhaustion (EMFILE). Each case runs
//! in a child process of this test binary that fills its fd table up to
//! RLIMIT_NOFILE (20000 here) with duplicates of one fd.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod util;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Fills the fd table; returns the fds taken (close some to make room).
fn exhaust_fds() -> Vec<i32> {
    let mut v = Vec::new();
    loop {
        // SAFETY: dup of stdin; the result is owned by the caller.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EMFILE)
            );
            return v;
        }
        v.push(fd);
    }
}

fn child(case: &str, body: impl FnOnce()) {
    if util::in_child(case) {
        let _wd = util::watchdog(case, Duration::from_secs(30));
        body();
        println!("CHILD-OK");
        return;
    }
    let r = util::run_in_child(case, Duration::from_secs(40));
    assert!(
        r.success() && r.stdout.contains("CHILD-OK"),
        "{case} failed in its child: {r:#?}"
    );
}

/// A plain thread that never used moss takes an uncontended `RLock` (and
/// runs `OnceCell::get_or_init`) while the process is at its fd limit:
/// they need only the caller's identity, which a thread has without a hub
/// (they used to create the hub, which needs fds, and panicked "cannot
/// create the hub of this thread"). The same identity owns the lock once
/// the thread has a hub.
#[test]
fn rlock_on_a_plain_thread_at_emfile() {
    child("rlock_on_a_plain_thread_at_emfile", || {
        let l = std::sync::Arc::new(moss::sync::RLock::new(5));
        let cell = std::sync::Arc::new(moss::sync::OnceCell::new());
        let fds = exhaust_fds();
        let (l2, c2) = (l.clone(), cell.clone());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let g = l2.lock();
            let b = *c2.get_or_init(|| 7);
            locked_tx.send(*g + b).unwrap();
            freed_rx.recv().unwrap();
            // Now the hub can be created; the root is the same owner.
            moss::sleep(Duration::from_millis(1));
            let again = l2.lock();
            *again
        });
        let r = locked_rx.recv();
        for fd in fds {
            // SAFETY: our own dups.
            unsafe { libc::close(fd) };
        }
        assert_eq!(r.expect("the plain thread panicked"), 12);
        freed_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), 5);
        // Released by the thread's guards: another thread takes it.
        assert_eq!(*l.lock(), 5);
    });
}

/// Under `patch_all`, `std::process::Child::wait` in a coroutine at the fd
/// limit: `pidfd_open` fails, and the hook polls the non-blocking
/// `waitpid` with growing naps instead (it used to fall back to the real
/// blocking `waitpid`, freezing the whole hub until the child exited: 0
/// ticks while the child lived).
#[test]
fn patched_child_wait_at_emfile_blocks_the_hub() {
    child("patched_child_wait_at_emfile_blocks_the_hub", || {
        moss::monkey::patch_all();
        let mut c = std::process::Command::new("sleep")
            .arg("0.6")
            .spawn()
            .unwrap();
        let (ticks, tk) = util::ticker(); // the hub exists before the fds run out
        let fds = exhaust_fds();
        let w = moss::spawn(move || c.wait().unwrap());
        let st = w.join().unwrap();
        let t = ticks.get();
        tk.kill();
        for fd in fds {
            // SAFETY: our own dups.
            unsafe { libc::close(fd) };
        }
        assert!(st.success());
        assert!(
            t >= 2,
            "hub frozen while a coroutine waited for a child: {t} ticks"
        );
    });
}

/// `moss::subprocess::Child::wait` at the fd limit: the child's pidfd
/// (opened at spawn) cannot be duplicated for the hub, so the wait polls
/// the pidfd with growing naps while the hub keeps running (the fallback
/// used to block the thread in `poll`). `wait_timeout` still times out.
#[test]
fn subprocess_wait_at_emfile_keeps_the_hub_running() {
    child("subprocess_wait_at_emfile_keeps_the_hub_running", || {
        let mut c = moss::subprocess::Command::new("sleep")
            .arg("0.6")
            .spawn()
            .unwrap();
        let (ticks, tk) = util::ticker();
        let fds = exhaust_fds();
        let w = moss::spawn(move || {
            let t = Instant::now();
            let early = c.wait_timeout(Duration::from_millis(100)).unwrap();
            (early, t.elapsed(), c.wait().unwrap())
        });
        let (early, took, st) = w.join().unwrap();
        let t = ticks.get();
        tk.kill();
        for fd in fds {
            // SAFETY: our own dups.
            unsafe { libc::close(fd) };
        }
        assert!(early.is_none() && took >= Duration::from_millis(100));
        assert!(st.success());
        assert!(t >= 2, "hub frozen while Child::wait ran: {t} ticks");
    });
}

/// Under `patch_all`, a hooked `poll` with a timeout at the fd limit: the
/// temporary epoll cannot be made, so the hook repeats the zero-timeout
/// `poll` with growing naps (it used to run the real `poll`, blocking the
/// whole hub for the full timeout: 0 ticks in 500 ms). std's
/// `TcpStream::connect_timeout` and every C library using `poll` go
/// through it. The timeout is kept, and readiness is still reported.
#[test]
fn patched_poll_at_emfile_blocks_the_hub() {
    child("patched_poll_at_emfile_blocks_the_hub", || {
        moss::monkey::patch_all();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let (ticks, tk) = util::ticker(); // the hub exists before the fds run out
        let fds = exhaust_fds();
        let poll = move |timeout| {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let t = Instant::now();
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
            (n, pfd.revents, t.elapsed())
        };
        let (n, _, took) = moss::spawn(move || poll(500)).join().unwrap();
        let t = ticks.get();
        // Readiness from another coroutine, with no timeout.
        let writer = moss::spawn(move || {
            moss::sleep(Duration::from_millis(100));
            std::io::Write::write_all(&mut &b, b"x").unwrap();
            b
        });
        let (n2, revents, _) = moss::spawn(move || poll(-1)).join().unwrap();
        let _b = writer.join().unwrap();
        tk.kill();
        for fd in fds {
            // SAFETY: our own dups.
            unsafe { libc::close(fd) };
        }
        assert_eq!(n, 0);
        assert!(took >= Duration::from_millis(450));
        assert!(t >= 2, "hub frozen during a patched poll: {t} ticks");
        assert_eq!((n2, revents), (1, libc::POLLIN));
    });
}

/// `select` at the fd limit takes the same path as `poll`: the hub keeps
/// running through its timeout.
#[test]
fn patched_select_at_emfile_keeps_the_hub_running() {
    child("patched_select_at_emfile_keeps_the_hub_running", || {
        moss::monkey::patch_all();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let (ticks, tk) = util::ticker();
        let fds = exhaust_fds();
        let n = moss::spawn(move || {
            // SAFETY: an fd_set and a timeval on this stack; fd < FD_SETSIZE
            // (the pair was made before the table filled up).
            unsafe {
                let mut set: libc::fd_set = std::mem::zeroed();
                libc::FD_SET(fd, &mut set);
                let mut tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 300_000,
                };
                libc::select(
                    fd + 1,
                    &mut set,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut tv,
                )
            }
        })
        .join()
        .unwrap();
        let t = ticks.get();
        tk.kill();
        for fd in fds {
            // SAFETY: our own dups.
            unsafe { libc::close(fd) };
        }
        assert_eq!(n, 0);
        assert!(t >= 2, "hub frozen during a patched select: {t} ticks");
    });
}

/// Under `patch_all`, the `epoll_wait` hook for a loop whose epoll fd the
/// hub already holds needs a `dup`; at EMFILE the hook repeats the
/// zero-timeout call with growing naps (it used to run the real call,
/// blocking the hub for the timeout). Here two coroutines of one thread
/// run the same mio-style loop; the second one falls back.
#[test]
fn patched_epoll_wait_second_waiter_at_emfile_blocks_the_hub() {
    child(
        "patched_epoll_wait_second_waiter_at_emfile_blocks_the_hub",
        || {
            moss::monkey::patch_all();
            // SAFETY: plain syscall.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(ep >= 0);
            let (ticks, tk) = util::ticker();
            let fds = exhaust_fds();
            let wait = move || {
                let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
                // SAFETY: valid buffer of 4 events.
                unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 400) }
            };
            let a = moss::spawn(wait);
            let b = moss::spawn(wait);
            let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
            let t = ticks.get();
            tk.kill();
            for fd in fds {
                // SAFETY: our own dups.
                unsafe { libc::close(fd) };
            }
            assert_eq!((ra, rb), (0, 0));
            assert!(t >= 2, "hub frozen during patched epoll_wait: {t} ticks");
        },
    );
}
