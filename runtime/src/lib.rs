//! # moss-runtime
//!
//! The core of moss: stackful coroutines (on corosensei) scheduled by one
//! *hub* per OS thread, with pooled guarded stacks, timers, a mio reactor and
//! a cross-thread wake-up queue.
//!
//! * [`coroutine`](crate::spawn) API — `spawn`, `join`, `kill`, `sleep`,
//!   `timeout`, `run`, `wait`, `dump` (module `coroutine`, re-exported here).
//! * [`greenlet`] — raw symmetric coroutines without a hub.
//! * [`park`] — the blocking primitive every waiting moss call is built on,
//!   for sync primitives and pools.
//! * [`reactor`] — fd registration for I/O types.
//! * [`sync`] — events, results, locks, semaphores, queues and channels
//!   shared by coroutines and threads.
//!
//! Architecture notes live next to the code: the hub loop in `hub.rs`, a
//! coroutine's life cycle in `task.rs`, cancellation in `cancel.rs`, stacks
//! in `stack_pool.rs` and `sys/`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod cancel;
mod coroutine;
pub mod greenlet;
mod hub;
mod io_slot;
pub mod park;
pub mod pool;
mod stack_pool;
pub mod sync;
mod sys;
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
}

pub use cancel::Cancelled;
pub use coroutine::{
    Builder, Current, Elapsed, JoinHandle, current, dump, join_all, run, run_per_core, sleep,
    spawn, spawn_later, timeout, wait, yield_now,
};
pub use stack_pool::{DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE};
pub use task::{CoroutineId, JoinError};
