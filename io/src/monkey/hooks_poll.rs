//! Readiness hooks: `poll` and `select`.
//!
//! On a thread with a hub, a call with a non-zero timeout first asks the
//! kernel with a zero timeout (so results are always the kernel's own).
//! If nothing is ready it waits without blocking the thread: the fds go
//! into a temporary epoll instance (level-triggered; its fd is at 3 or
//! above, like the hub's, when stdio is closed), that epoll fd is
//! registered with the hub (an epoll fd is itself pollable: it turns
//! readable when any member is ready), the caller parks on it, and on each
//! wake-up the zero-timeout call is repeated. This works for any pollable
//! fd (sockets, pipes, ttys, eventfds), cooperative or not, and leaves the
//! fds' own registrations alone. Costs: `epoll_create1` + one `epoll_ctl`
//! per fd per blocking call, which is fine for `poll`/`select` users
//! (std uses `poll` only for `connect_timeout`).
//!
//! An fd listed in several entries (separate read and write interests, as
//! C code often does) is watched once with the union of their events. When
//! the deadline passes, the zero-timeout call runs once more, so an fd that
//! turned ready just before is reported, as the real call would.
//! fds epoll refuses (regular files are always ready anyway) are skipped.
//! If the temporary epoll cannot be made (no fd left: `EMFILE`/`ENFILE`)
//! or registered, the zero-timeout call is repeated with growing naps on
//! hub timers in between (1 ms doubling to 50 ms, see
//! `moss_runtime::backoff`): the hub keeps running, and readiness is
//! noticed up to one nap late.
//! A pending `kill`/`timeout` fails the call with `ECANCELED` (not `EINTR`,
//! which std's `connect_timeout` would retry at once, spinning).
//! Elsewhere (not patched, no hub, zero timeout) the real call runs.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use libc::{fd_set, nfds_t, pollfd, timeval};
use moss_runtime::backoff::{Polled, poll_until};
use moss_runtime::park;
use moss_runtime::reactor::{Interest, Registration, WaitError};

use super::{patched, real, user};

/// Waits cooperatively until `check()` returns non-zero (its result is
/// returned), `deadline` passes (0) or a cancellation is pending (-1,
/// `ECANCELED`). `fds` are the (fd, poll events) to watch.
fn wait_any(
    fds: &[(c_int, i16)],
    deadline: Option<Instant>,
    check: &mut dyn FnMut() -> c_int,
) -> c_int {
    // SAFETY: plain syscall; the fd is owned at once below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    // At 3 or above, like the hub's fds: a closed stdio number would take
    // it, and what the program opens next as its stdin would get another.
    // SAFETY: the kernel just returned `ep` to us; nothing owns it. It is
    // closed below on every path.
    let ep = match (ep >= 0).then(|| unsafe { moss_runtime::sys::fd::own(ep) }) {
        Some(Ok(ep)) => std::os::fd::IntoRawFd::into_raw_fd(ep),
        _ => return wait_napping(deadline, "poll (monkey, no fd left)", check),
    };
    struct Ep(c_int);
    impl Drop for Ep {
        fn drop(&mut self) {
            // SAFETY: we own this epoll fd; the registration using it was
            // dropped before (declared after it).
            unsafe { real::close()(self.0) };
        }
    }
    let ep = Ep(ep);
    for (fd, events) in merge_interests(fds) {
        let mut ev = libc::epoll_event {
            events: epoll_events(events),
            u64: 0,
        };
        // SAFETY: `ev` is a valid epoll_event; each fd is added once (the
        // interests of duplicate entries were merged); a failure (EPERM
        // for a regular file, which is always ready anyway) skips the fd.
        unsafe { libc::epoll_ctl(ep.0, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }
    let Ok(reg) = Registration::new(ep.0) else {
        return wait_napping(deadline, "poll (monkey, no fd left)", check);
    };
    loop {
        match reg.wait_raw(Interest::Readable, deadline) {
            Ok(()) | Err(WaitError::Closed) => {
                let r = check();
                if r != 0 {
                    return r;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return 0;
                }
            }
            // The kernel's own answer at the deadline: an fd that turned
            // ready just before it counts, as it would for the real call.
            Err(WaitError::TimedOut) => return check(),
            Err(WaitError::Cancelled) => {
                real::set_errno(libc::ECANCELED);
                return -1;
            }
        }
    }
}

/// A cooperative wait with no fd of its own to park on (none left, or the
/// hub refuses it): calls `check()` until it returns non-zero (returned,
/// errno as it left it), napping on hub timers in between
/// (`moss_runtime::backoff`: 1 ms doubling to 50 ms); 0 once `deadline`
/// passed and one last check found nothing; -1 with `ECANCELED` on a
/// pending cancellation. The caller must be able to park.
pub(super) fn wait_napping(
    deadline: Option<Instant>,
    what: &'static str,
    check: &mut dyn FnMut() -> c_int,
) -> c_int {
    let ready = || {
        let r = check();
        (r != 0).then_some(r)
    };
    match poll_until(deadline, what, ready) {
        Polled::Ready(r) => r,
        Polled::TimedOut => 0,
        Polled::Cancelled => {
            real::set_errno(libc::ECANCELED);
            -1
        }
    }
}

/// The fds of `fds` once each, with the poll events of all their entries
/// OR-ed together: `poll` may list one fd several times (separate read and
/// write interests), but an epoll instance takes each fd once.
fn merge_interests(fds: &[(c_int, i16)]) -> Vec<(c_int, i16)> {
    let mut sorted = fds.to_vec();
    sorted.sort_unstable_by_key(|&(fd, _)| fd);
    let mut merged: Vec<(c_int, i16)> = Vec::with_capacity(sorted.len());
    for (fd, events) in sorted {
        match merged.last_mut() {
            Some((f, e)) if *f == fd => *e |= events,
            _ => merged.push((fd, events)),
        }
    }
    merged
}

/// epoll's events for `poll` events.
fn epoll_events(events: i16) -> u32 {
    let mut ev = 0;
    if events & (libc::POLLIN | libc::POLLRDNORM | libc::POLLRDBAND) != 0 {
        ev |= libc::EPOLLIN as u32;
    }
    if events & libc::POLLPRI != 0 {
        ev |= libc::EPOLLPRI as u32;
    }
    if events & (libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND) != 0 {
        ev |= libc::EPOLLOUT as u32;
    }
    if events & libc::POLLRDHUP != 0 {
        ev |= libc::EPOLLRDHUP as u32;
    }
    ev
}

/// Hook for `poll(2)`.
///
/// # Safety
/// As `poll(2)`: `fds` points at `nfds` pollfds.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = |t: c_int| unsafe { real::poll()(fds, nfds, t) };
    if !patched() || timeout == 0 || !park::can_park() {
        return op(timeout);
    }
    let saved = real::errno();
    let r = op(0);
    if r != 0 {
        return r;
    }
    let deadline = if timeout < 0 {
        None
    } else {
        Instant::now().checked_add(Duration::from_millis(timeout as u64))
    };
    let watch: Vec<(c_int, i16)> = (0..nfds as usize)
        // SAFETY: the caller passed `nfds` valid pollfds.
        .map(|i| unsafe { *fds.add(i) })
        .filter(|p| p.fd >= 0)
        .map(|p| (p.fd, p.events))
        .collect();
    let r = wait_any(&watch, deadline, &mut || op(0));
    if r >= 0 {
        real::set_errno(saved);
    }
    r
}

/// Hook for `select(2)`.
///
/// # Safety
/// As `select(2)`: each non-null set points at an `fd_set`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    readfds: *mut fd_set,
    writefds: *mut fd_set,
    exceptfds: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    // SAFETY: forwarded with the caller's arguments and contract.
    let real_select = |r, w, e, t| unsafe { real::select()(nfds, r, w, e, t) };
    if !patched() || !park::can_park() || nfds < 0 || nfds > libc::FD_SETSIZE as c_int {
        return real_select(readfds, writefds, exceptfds, timeout);
    }
    // The hook copies the caller's timeout and sets itself; an invalid
    // pointer goes to the real call, which reports EFAULT.
    let limit = match (!timeout.is_null()).then(|| user::read(timeout)) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return real_select(readfds, writefds, exceptfds, timeout),
    };
    // A zero timeout polls; a negative one is libc's EINVAL, not a wait
    // (libc carries 10^6 µs or more over into seconds, as the sum below).
    let invalid = |t: &timeval| t.tv_sec < 0 || t.tv_usec < 0;
    if limit.is_some_and(|t| (t.tv_sec == 0 && t.tv_usec == 0) || invalid(&t)) {
        return real_select(readfds, writefds, exceptfds, timeout);
    }
    let copy = |s: *mut fd_set| -> Result<Option<fd_set>, user::Fault> {
        (!s.is_null()).then(|| user::read(s)).transpose()
    };
    let (Ok(r0), Ok(w0), Ok(e0)) = (copy(readfds), copy(writefds), copy(exceptfds)) else {
        return real_select(readfds, writefds, exceptfds, timeout);
    };
    let start = Instant::now();
    let deadline = limit.and_then(|t| {
        start.checked_add(
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64),
        )
    });
    // One zero-timeout select on fresh copies of the caller's sets; the
    // result is written back only when something is ready (or on error).
    let mut attempt = || -> c_int {
        let (mut r, mut w, mut e) = (r0, w0, e0);
        let ptr = |s: &mut Option<fd_set>| {
            s.as_mut()
                .map_or(std::ptr::null_mut(), |s| s as *mut fd_set)
        };
        let mut zero = timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let n = real_select(ptr(&mut r), ptr(&mut w), ptr(&mut e), &mut zero);
        if n != 0 {
            for (dst, src) in [(readfds, r), (writefds, w), (exceptfds, e)] {
                // `src` is Some only when `dst` is non-null.
                if let Some(s) = src
                    && user::write(dst, s).is_err()
                {
                    real::set_errno(libc::EFAULT);
                    return -1;
                }
            }
        }
        n
    };
    let saved = real::errno();
    let mut n = attempt();
    if n == 0 {
        let mut watch = Vec::new();
        for fd in 0..nfds {
            let mut ev = 0i16;
            // SAFETY: FD_ISSET on valid sets with fd < nfds <= FD_SETSIZE.
            unsafe {
                if r0.as_ref().is_some_and(|s| libc::FD_ISSET(fd, s)) {
                    ev |= libc::POLLIN;
                }
                if w0.as_ref().is_some_and(|s| libc::FD_ISSET(fd, s)) {
                    ev |= libc::POLLOUT;
                }
                if e0.as_ref().is_some_and(|s| libc::FD_ISSET(fd, s)) {
                    ev |= libc::POLLPRI;
                }
            }
            if ev != 0 {
                watch.push((fd, ev));
            }
        }
        n = wait_any(&watch, deadline, &mut attempt);
    }
    // A set or the timeout that cannot be written back (read-only memory).
    let mut fault = false;
    if n == 0 {
        // SAFETY: an all-zero fd_set is the empty set.
        let empty: fd_set = unsafe { std::mem::zeroed() };
        for s in [readfds, writefds, exceptfds] {
            fault |= !s.is_null() && user::write(s, empty).is_err();
        }
    }
    // Linux reports the time left (and, as here, ignores a timeout in
    // read-only memory).
    if !timeout.is_null() {
        let _ = user::write(timeout, remaining(deadline));
    }
    if fault {
        real::set_errno(libc::EFAULT);
        return -1;
    }
    if n >= 0 {
        real::set_errno(saved);
    }
    n
}

fn remaining(deadline: Option<Instant>) -> timeval {
    let left = deadline.map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(Instant::now())
    });
    timeval {
        tv_sec: left.as_secs() as libc::time_t,
        tv_usec: left.subsec_micros() as libc::suseconds_t,
    }
}

hook_addresses!(poll, select);
