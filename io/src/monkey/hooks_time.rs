//! Sleep hooks: `nanosleep`, `clock_nanosleep` (what `std::thread::sleep`
//! calls), `usleep`, `sleep`.
//!
//! On a thread with a hub (after `patch_all`) the caller parks until the
//! deadline on a hub timer: a coroutine suspends, the root runs the hub.
//! A zero-length sleep yields once. Elsewhere the real function runs.
//!
//! Cancellation: a `kill`/`timeout` pending during the sleep ends it early
//! with `EINTR` and *nothing left* (`rem` zeroed), so retry loops such as
//! std's (which re-sleep the remainder on `EINTR`) finish instead of
//! spinning; `sleep(3)` returns 0. The cancellation itself is delivered at
//! the coroutine's next moss blocking point.
//!
//! CPU-time clocks and anything invalid go to the real function, which
//! reports the error itself.

use std::ffi::{c_int, c_uint};
use std::time::{Duration, Instant};

use libc::{clockid_t, timespec, useconds_t};
use moss_runtime::park::{self, Wakeup};

use super::{patched, real, user};

/// Parks for `d`; false if a cancellation ended the sleep.
fn coop_sleep(d: Duration) -> bool {
    let now = Instant::now();
    // "Forever" is a very long timer, so a root alone on its hub does not
    // report "would block forever".
    let deadline = now
        .checked_add(d.max(Duration::from_nanos(1)))
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)));
    real::keep_errno(|| {
        loop {
            match park::park(deadline, "std sleep (monkey)") {
                Wakeup::TimedOut => return true,
                Wakeup::Cancelled => return false,
                Wakeup::Notified if deadline.is_some_and(|d| Instant::now() >= d) => return true,
                Wakeup::Notified => {}
            }
        }
    })
}

/// A valid relative timespec as a Duration.
fn duration(ts: &timespec) -> Option<Duration> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[inline]
fn cooperative() -> bool {
    patched() && park::can_park()
}

/// Hook for `nanosleep(2)`.
///
/// # Safety
/// As `nanosleep(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    // An invalid `req` goes to the real call, which reports EFAULT.
    let d = (!req.is_null())
        .then(|| user::read(req).ok())
        .flatten()
        .and_then(|ts| duration(&ts));
    let Some(d) = d.filter(|_| cooperative()) else {
        // SAFETY: forwarded unchanged (it also reports EFAULT/EINVAL).
        return unsafe { real::nanosleep()(req, rem) };
    };
    if coop_sleep(d) {
        return 0;
    }
    if !rem.is_null() && user::write(rem, ZERO).is_err() {
        real::set_errno(libc::EFAULT);
        return -1;
    }
    real::set_errno(libc::EINTR);
    -1
}

/// The time left after a sleep a cancellation ended.
const ZERO: timespec = timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// Hook for `clock_nanosleep(2)` (returns the error number, errno untouched).
///
/// # Safety
/// As `clock_nanosleep(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    // SAFETY: forwarded unchanged.
    let real_call = || unsafe { real::clock_nanosleep()(clock, flags, req, rem) };
    let known = matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME | libc::CLOCK_TAI
    );
    if !known || req.is_null() || !cooperative() {
        return real_call();
    }
    // An invalid `req` goes to the real call, which reports EFAULT.
    let Some(mut d) = user::read(req).ok().and_then(|ts| duration(&ts)) else {
        return real_call();
    };
    let absolute = flags & libc::TIMER_ABSTIME != 0;
    if absolute {
        let mut now = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer; the clock id is one of the known ones.
        if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
            return real_call();
        }
        let now = duration(&now).unwrap_or_default();
        d = d.saturating_sub(now);
        if d.is_zero() {
            return 0;
        }
    }
    if coop_sleep(d) {
        return 0;
    }
    if !absolute && !rem.is_null() && user::write(rem, ZERO).is_err() {
        return libc::EFAULT;
    }
    libc::EINTR
}

/// Hook for `usleep(3)`.
///
/// # Safety
/// Always safe to call; `unsafe` only to match the other hooks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usleep(usec: useconds_t) -> c_int {
    if !cooperative() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::usleep()(usec) };
    }
    if coop_sleep(Duration::from_micros(u64::from(usec))) {
        return 0;
    }
    real::set_errno(libc::EINTR);
    -1
}

/// Hook for `sleep(3)`.
///
/// # Safety
/// Always safe to call; `unsafe` only to match the other hooks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sleep(seconds: c_uint) -> c_uint {
    if !cooperative() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::sleep()(seconds) };
    }
    coop_sleep(Duration::from_secs(u64::from(seconds)));
    0
}

hook_addresses!(nanosleep, clock_nanosleep, usleep, sleep);
