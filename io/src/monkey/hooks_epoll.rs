//! Event-loop hooks: `epoll_wait` and `epoll_pwait`, for libraries that run
//! their own epoll loop (a C client library, a Rust crate on mio).
//!
//! An epoll fd is itself pollable: it turns readable when one of its
//! members has an event. So in a coroutine, a call with a non-zero timeout
//! first asks the kernel with a zero timeout (results are always the
//! kernel's own); if nothing is ready it registers the caller's epoll fd
//! with the hub (a duplicate of it if the hub already holds that fd, when
//! two coroutines wait on one loop), parks until it is readable, and asks
//! again. Any new event in the caller's epoll wakes the hub's, so no wake-up
//! is lost between the check and the park. At the deadline it checks once
//! more before returning 0.
//!
//! Only coroutines cooperate. On a thread's root the real call runs: the
//! hub's own `epoll_wait` (which always runs on the root) goes through this
//! hook too and must block. `epoll_pwait` with a signal mask also runs the
//! real call, since the mask must be in force while the thread sleeps.
//! A pending `kill`/`timeout` fails the call with `ECANCELED` (see the
//! module docs). If the epoll fd cannot be registered with the hub (it has
//! it already and no fd is left for the duplicate, `EMFILE`; or the hub
//! refuses it), the zero-timeout call is repeated with growing naps on hub
//! timers in between (1 ms doubling to 50 ms, `moss_runtime::backoff`):
//! the hub keeps running, and events are noticed up to one nap late.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use libc::{epoll_event, sigset_t};
use moss_runtime::park;
use moss_runtime::reactor::{Interest, Registration, WaitError};

use super::hooks_poll::wait_napping;
use super::{patched, real};

/// Whether a call with this timeout should wait through the hub.
#[inline]
fn cooperative(timeout: c_int) -> bool {
    timeout != 0 && patched() && park::in_coroutine() && park::can_park()
}

/// Parks until `check()` (a zero-timeout `epoll_wait` on `epfd`) reports
/// events or an error, or the timeout passes.
fn coop_wait(epfd: c_int, timeout: c_int, check: &mut dyn FnMut() -> c_int) -> c_int {
    let deadline = if timeout < 0 {
        None
    } else {
        Instant::now().checked_add(Duration::from_millis(timeout as u64))
    };
    // A duplicate, closed on return, when the hub already has `epfd`.
    struct Dup(c_int);
    impl Drop for Dup {
        fn drop(&mut self) {
            if self.0 >= 0 {
                // SAFETY: our own duplicate; its registration (declared
                // after it) was dropped first.
                unsafe { real::close()(self.0) };
            }
        }
    }
    let mut dup = Dup(-1);
    let reg = real::keep_errno(|| match Registration::new(epfd) {
        Ok(r) => Some(r),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // SAFETY: F_DUPFD_CLOEXEC takes an int argument.
            dup.0 = unsafe { real::fcntl()(epfd, libc::F_DUPFD_CLOEXEC, 0usize) };
            (dup.0 >= 0)
                .then(|| Registration::new(dup.0).ok())
                .flatten()
        }
        Err(_) => None,
    });
    let Some(reg) = reg else {
        return wait_napping(deadline, "epoll_wait (monkey, no fd left)", check);
    };
    loop {
        match real::keep_errno(|| reg.wait_raw(Interest::Readable, deadline)) {
            Ok(()) | Err(WaitError::Closed) => {
                let r = check();
                if r != 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                    return r;
                }
            }
            // What became ready at the deadline is still reported.
            Err(WaitError::TimedOut) => return check(),
            Err(WaitError::Cancelled) => {
                real::set_errno(libc::ECANCELED);
                return -1;
            }
        }
    }
}

fn wait_with(timeout: c_int, epfd: c_int, op: &mut dyn FnMut(c_int) -> c_int) -> c_int {
    let saved = real::errno();
    let r = op(0);
    if r != 0 {
        return r;
    }
    let r = coop_wait(epfd, timeout, &mut || op(0));
    if r >= 0 {
        real::set_errno(saved);
    }
    r
}

/// Hook for `epoll_wait(2)`.
///
/// # Safety
/// As `epoll_wait(2)`: `events` points at `maxevents` writable entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: forwarded with the caller's arguments and contract.
    let mut op = |t: c_int| unsafe { real::epoll_wait()(epfd, events, maxevents, t) };
    if !cooperative(timeout) {
        return op(timeout);
    }
    wait_with(timeout, epfd, &mut op)
}

/// Hook for `epoll_pwait(2)`: as `epoll_wait` when `sigmask` is null; with
/// a mask, the real call.
///
/// # Safety
/// As `epoll_pwait(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    maxevents: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: forwarded with the caller's arguments and contract.
    let mut op = |t: c_int| unsafe { real::epoll_pwait()(epfd, events, maxevents, t, sigmask) };
    if !sigmask.is_null() || !cooperative(timeout) {
        return op(timeout);
    }
    wait_with(timeout, epfd, &mut op)
}

hook_addresses!(epoll_wait, epoll_pwait);
