//! Child-process hooks: `waitpid` and `wait4`, what `std::process::Child`'s
//! `wait`, `wait_with_output` and `Command::status`/`output` block in.
//!
//! On a thread with a hub, a blocking wait for one particular child (`pid >
//! 0`, no `WNOHANG`, `WUNTRACED` or `WCONTINUED`) first tries a non-blocking
//! `waitpid`. If the child still runs, the caller opens a pidfd for it
//! (`pidfd_open`, Linux 5.3+), which polls readable once the child has
//! exited, parks on it through the hub (a coroutine suspends; the root runs
//! the hub) and then reaps with the non-blocking call. The pidfd is the
//! caller's own, so any number of coroutines can wait for different
//! children at once.
//!
//! If no pidfd can be had for a child that still runs (no fd left:
//! `EMFILE`/`ENFILE`; a kernel before 5.3) or the hub refuses it, the
//! caller polls the non-blocking `waitpid` with growing naps on hub timers
//! in between (1 ms doubling to 50 ms, `moss_runtime::backoff`): the hub
//! keeps running, and the exit is noticed up to one nap late.
//!
//! Everything else runs the real call: `pid <= 0` (any child, a process
//! group), stop/continue reports, `WNOHANG`, and threads without a hub. A
//! pending `kill`/`timeout` fails the call with `ECANCELED` (see the module
//! docs); the child is then left unreaped, as after any failed wait.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use libc::{c_int, pid_t, rusage};
use moss_runtime::park::{self, Wakeup};
use moss_runtime::reactor::{self, Interest, Registration, WaitError};

use super::hooks_poll::wait_napping;
use super::{patched, real};

/// Whether a wait with these arguments should park through the hub.
#[inline]
fn cooperative(pid: pid_t, options: c_int) -> bool {
    pid > 0
        && options & (libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED) == 0
        && patched()
        && park::can_park()
}

/// Parks until `try_reap()` (the caller's call with `WNOHANG` added)
/// returns non-zero, and returns that.
fn coop_wait(pid: pid_t, try_reap: &mut dyn FnMut() -> pid_t) -> pid_t {
    let saved = real::errno();
    let r = try_reap();
    if r != 0 {
        return r;
    }
    let watched = real::keep_errno(|| {
        let fd = reactor::pidfd_open(pid).ok()?;
        let reg = Registration::new(fd.as_raw_fd()).ok()?;
        Some((fd, reg))
    });
    let Some((pidfd, reg)) = watched else {
        let r = wait_napping(None, "waitpid (monkey, no pidfd)", try_reap);
        if r > 0 {
            real::set_errno(saved);
        }
        return r;
    };
    let mut readable = false;
    let r = loop {
        let cancelled = real::keep_errno(|| {
            if readable {
                // Readable means exited, so this is not expected; a short
                // pause keeps the edge-triggered registration from spinning.
                let pause = Instant::now() + Duration::from_millis(5);
                park::park(Some(pause), "waitpid (monkey)") == Wakeup::Cancelled
            } else {
                reg.wait_raw(Interest::Readable, None) == Err(WaitError::Cancelled)
            }
        });
        if cancelled {
            real::keep_errno(|| drop((reg, pidfd)));
            real::set_errno(libc::ECANCELED);
            return -1;
        }
        readable = true;
        let r = try_reap();
        if r != 0 {
            break r;
        }
    };
    real::keep_errno(|| drop((reg, pidfd)));
    if r > 0 {
        real::set_errno(saved);
    }
    r
}

/// Hook for `waitpid(2)`.
///
/// # Safety
/// As `waitpid(2)`: a non-null `status` points at a writable int.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = |o: c_int| unsafe { real::waitpid()(pid, status, o) };
    if !cooperative(pid, options) {
        return op(options);
    }
    coop_wait(pid, &mut || op(options | libc::WNOHANG))
}

/// Hook for `wait4(2)`.
///
/// # Safety
/// As `wait4(2)`: non-null `status` and `usage` point at writable objects.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut rusage,
) -> pid_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = |o: c_int| unsafe { real::wait4()(pid, status, o, usage) };
    if !cooperative(pid, options) {
        return op(options);
    }
    coop_wait(pid, &mut || op(options | libc::WNOHANG))
}

hook_addresses!(waitpid, wait4);
