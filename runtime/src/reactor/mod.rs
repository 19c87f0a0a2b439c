//! The reactor: fd readiness for I/O types, one per hub.
//!
//! Every fd is registered with the hub's epoll instance once, edge-triggered,
//! for both directions (Go's netpoller is the model). Each direction has a
//! `ready` bit and a list of parked waiters:
//!
//! ```text
//!   edge (epoll event) ──▶ waiters?  yes ──▶ wake them all (each retries its syscall)
//!                                    no  ──▶ set `ready`
//!   wait(interest)     ──▶ `ready`?  yes ──▶ clear it, return at once
//!                                    no  ──▶ queue the caller, park
//! ```
//!
//! Callers follow "try the syscall first; on `EAGAIN`, wait, then retry". A
//! stale `ready` bit costs one extra `EAGAIN`, never a missed wake-up: any
//! edge after the failed syscall is delivered to the waiter list or the bit.
//! Deadlines and cancellation remove the waiter again, so the slot stays
//! consistent (if an edge took it off the list meanwhile, before it ran,
//! that edge goes back into the `ready` bit); dropping the
//! [`Registration`] wakes waiters, which then see [`WaitError::Closed`].
//!
//! [`Registration`] is the API I/O types use; [`wait_fd`] waits on an fd
//! without registering it.
//!
//! # Backends
//!
//! A hub's I/O runs on epoll (the default) or on io_uring ([`uring`]),
//! chosen per process by `MOSS_IO=uring` in the environment or by
//! [`set_backend`] before the hub is created. On io_uring, `moss::net`
//! operations are submitted whole to the ring; readiness waits (this
//! module's API) keep working through the epoll set, which the ring
//! watches. A hub whose ring cannot be set up runs on epoll and says so
//! once per process on stderr.

mod backend;
pub(crate) mod poller;
mod registration;
pub mod uring;

pub use backend::{Backend, backend, set_backend};
pub use registration::{Interest, Local, RegId, Registration, WaitError};

/// The id of this thread's hub (creating it if needed); compare with
/// [`Registration::hub_id`] to detect a socket moved to another thread.
#[inline]
pub fn hub_id() -> u64 {
    crate::hub::Hub::current().remote.hub_id
}

/// Waits until `fd` is ready for `interest` (`true`) or `deadline`
/// passes (`false`), through this thread's hub: a coroutine parks, a
/// root or plain thread runs its hub. The fd is duplicated for the wait,
/// so any number of waiters may wait on one fd, and it need not stay
/// registered. A `kill`/`timeout` of the calling coroutine unwinds it.
/// If no fd is left to duplicate, polls the fd with growing naps
/// ([`crate::backoff`]): the hub keeps running.
pub fn wait_fd(
    fd: std::os::fd::RawFd,
    interest: Interest,
    deadline: Option<std::time::Instant>,
) -> std::io::Result<bool> {
    crate::pool::wait_fd(fd, interest, deadline)
}

/// `pidfd_open(pid, 0)`: an fd (close-on-exec) that polls readable once
/// the process `pid` has exited, for [`wait_fd`]. Fails with the
/// kernel's error (`ESRCH`, `ENOSYS` before Linux 5.3).
pub fn pidfd_open(pid: libc::pid_t) -> std::io::Result<std::os::fd::OwnedFd> {
    crate::sys::process::pidfd_open(pid)
}

/// The fork generation of this process (0 in the original, another
/// number in each child forked by libc's `fork`): an object that owns
/// threads records it and rebuilds itself when it differs, since a
/// forked child has none of the parent's other threads.
pub fn fork_generation() -> u64 {
    crate::sys::atfork::generation()
}
