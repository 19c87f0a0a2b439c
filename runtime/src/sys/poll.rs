//! `poll(2)`: blocking the thread until one of a few fds is ready.
//!
//! Contract: for threads that run no coroutines (a process pool's manager)
//! and for fallbacks where the hub cannot be used (no fd left to register a
//! wait). Everything that may run in a coroutine waits through the hub's
//! reactor instead. [`poll`] retries `EINTR` with the time that is left.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::cvt::cvt;

/// One entry of [`poll`].
pub(crate) type PollFd = libc::pollfd;

/// Builds a [`PollFd`] for `fd` waiting for readability and/or writability.
pub(crate) fn poll_fd(fd: &impl AsRawFd, read: bool, write: bool) -> PollFd {
    poll_raw_fd(fd.as_raw_fd(), read, write)
}

/// [`poll_fd`] for a raw fd number.
pub(crate) fn poll_raw_fd(fd: RawFd, read: bool, write: bool) -> PollFd {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Whether a polled fd reported readability, hang-up or an error.
pub(crate) fn poll_readable(p: &PollFd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Whether a polled fd reported writability (or an error).
pub(crate) fn poll_writable(p: &PollFd) -> bool {
    p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// `poll(2)`, blocking the thread up to `timeout` (`None`: forever).
/// Returns the number of ready fds (0: timed out).
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: the pointer and count describe `fds`, writable for the call.
        match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
