//! Hooked libc calls given an invalid pointer fail with `EFAULT`, as libc's
//! do, instead of crashing the process: the hooks that read or write the
//! caller's memory themselves (a sleep's timespec, select's sets,
//! FIONBIO's flag, a futex wait's word and timeout) must not dereference it
//! first. Each case runs patched, in a coroutine and on the root, in a
//! child process of this test binary (the failure mode is a SIGSEGV).
#![cfg(target_os = "linux")]

mod util;

use std::time::Duration;

/// An address that is never mapped (the first page).
fn bad<T>() -> *mut T {
    16 as *mut T
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// Every call, with its verdict: the return value and errno it gave.
fn every_call() -> Vec<(&'static str, i64, i32)> {
    let mut out = Vec::new();
    let mut note = |what, r: i64| out.push((what, r, errno()));
    let ok_ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    // SAFETY: (each call below) invalid pointers are the point; the kernel
    // (or the hook) must refuse them without touching them.
    unsafe {
        note(
            "nanosleep req",
            libc::nanosleep(bad(), std::ptr::null_mut()).into(),
        );
        // `clock_nanosleep` returns the error number itself.
        let r = libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, bad(), std::ptr::null_mut());
        note("clock_nanosleep req", r.into());
        let r = libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            bad(),
            std::ptr::null_mut(),
        );
        note("clock_nanosleep abs req", r.into());
        let mut fds = [0; 2];
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_SET(fds[0], &mut set);
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        // (glibc's own `select` reads the timeout itself before the
        // syscall: a bad one crashes there too, so it is not tried.)
        note(
            "select readfds",
            libc::select(
                fds[0] + 1,
                bad(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            )
            .into(),
        );
        note("poll fds", libc::poll(bad(), 1, 20).into());
        note("read buf", {
            libc::write(fds[1], b"x".as_ptr().cast(), 1);
            libc::read(fds[0], bad(), 1) as i64
        });
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        note(
            "ioctl FIONBIO",
            libc::ioctl(fd, libc::FIONBIO, bad::<libc::c_int>()).into(),
        );
        note(
            "recvmsg msg",
            libc::recvmsg(fd, bad(), libc::MSG_DONTWAIT) as i64,
        );
        let word = 0u32;
        note(
            "futex wait timeout",
            libc::syscall(
                libc::SYS_futex,
                &word as *const u32,
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                bad::<libc::timespec>(),
            ),
        );
        note(
            "futex wait word",
            libc::syscall(
                libc::SYS_futex,
                bad::<u32>(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                std::ptr::null::<libc::timespec>(),
            ),
        );
        // A valid request still sleeps.
        note(
            "nanosleep ok",
            libc::nanosleep(&ok_ts, std::ptr::null_mut()).into(),
        );
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    out
}

fn check(calls: Vec<(&'static str, i64, i32)>) {
    for (what, r, e) in calls {
        match what {
            "nanosleep ok" => assert_eq!(r, 0, "{what}"),
            // It returns the error number itself (errno is not its).
            "clock_nanosleep req" | "clock_nanosleep abs req" => {
                let _ = e;
                assert_eq!(r, i64::from(libc::EFAULT), "{what}")
            }
            _ => assert_eq!((r, e), (-1, libc::EFAULT), "{what}"),
        }
    }
}

#[test]
fn hooked_calls_given_invalid_pointers_fail_with_efault() {
    util::isolated_patched(
        "hooked_calls_given_invalid_pointers_fail_with_efault",
        Duration::from_secs(40),
        || {
            // On the root, with a hub (its waits run the hub) ...
            moss::sleep(Duration::from_millis(1));
            check(every_call());
            // ... and in a coroutine (its waits park).
            check(moss::spawn(every_call).join().unwrap());
        },
    );
}

/// The hooks read the memory of the process that calls them: a child
/// forked after its parent's hooks read through a pointer reads its own
/// copy, not the parent's (a pid remembered from before the fork would
/// name the parent).
#[test]
fn a_forked_child_reads_its_own_memory() {
    util::isolated_patched(
        "a_forked_child_reads_its_own_memory",
        Duration::from_secs(40),
        || {
            let mut ts = Box::new(libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            });
            moss::sleep(Duration::from_millis(1));
            // SAFETY: a valid request, on this thread's hub.
            let r = unsafe {
                libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &*ts, std::ptr::null_mut())
            };
            assert_eq!(r, 0);
            let pid = util::fork();
            if pid == 0 {
                moss::sleep(Duration::from_millis(1));
                // Invalid here, still valid in the parent's copy.
                ts.tv_nsec = 2_000_000_000;
                // SAFETY: an invalid request the hook must see as such.
                let r = unsafe {
                    libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &*ts, std::ptr::null_mut())
                };
                // SAFETY: ends the child without running the parent's exit code.
                unsafe { libc::_exit(if r == libc::EINVAL { 0 } else { 1 }) };
            }
            assert_eq!(
                util::exit_code_of(pid),
                0,
                "the child read its parent's request"
            );
        },
    );
}
