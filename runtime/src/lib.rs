//! # moss-runtime
//!
//! The core of moss: stackful coroutines (on corosensei) scheduled by one
//! *hub* per OS thread, with pooled guarded stacks, timers, a mio reactor and
//! a cross-thread wake-up queue.
//!
//! * [`coroutine`](crate::spawn) API — `spawn`, `join`, `kill`, `sleep`,
//!   `timeout`, `run`, `wait`, `dump` (module `coroutine`, re-exported here).
//! * [`greenlet`] — raw symmetric coroutines without a hub.
//! * [`block_on`] — a coroutine waits for a future (async Rust), polling it
//!   on its own stack while the hub runs the others.
//! * [`park`] — the blocking primitive every waiting moss call is built on,
//!   for sync primitives and pools.
//! * [`reactor`] — fd registration for I/O types.
//! * [`sync`] — events, results, locks, semaphores, queues and channels
//!   shared by coroutines and threads.
//!
//! Architecture notes live next to the code: the hub loop in `hub.rs`, a
//! coroutine's life cycle in `task/state.rs`, cancellation in `cancel.rs`, stacks
//! in `stack_pool.rs` and `sys/`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod block_on;
mod cancel;
mod coroutine;
pub mod greenlet;
mod hub;
mod io_slot;
pub mod park;
mod payload;
pub mod pool;
mod stack_pool;
pub mod sync;
#[doc(hidden)]
pub mod sys;
mod task;
pub mod thread;
mod timer;

/// Registering fds with the hub and waiting for readiness (for I/O types).
pub mod reactor {
    pub use crate::io_slot::{Interest, Registration, WaitError};

    /// The id of this thread's hub (creating it if needed); compare with
    /// [`Registration::hub_id`] to detect a socket moved to another thread.
    pub fn hub_id() -> u64 {
        crate::hub::Hub::current().remote.hub_id
    }

    /// Waits until `fd` is ready for `interest` (`true`) or `deadline`
    /// passes (`false`), through this thread's hub: a coroutine parks, a
    /// root or plain thread runs its hub. The fd is duplicated for the wait,
    /// so any number of waiters may wait on one fd, and it need not stay
    /// registered. A `kill`/`timeout` of the calling coroutine unwinds it.
    /// Falls back to a thread-blocking `poll` if no fd is left to duplicate.
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
}

pub use block_on::block_on;
pub use cancel::Cancelled;
pub use coroutine::{
    Builder, Current, Elapsed, JoinHandle, current, dump, join_all, run, run_per_core, sleep,
    spawn, spawn_later, timeout, wait, yield_now,
};
pub use payload::panic_message;
pub use stack_pool::{DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE};
pub use task::{CoroutineId, JoinError};
