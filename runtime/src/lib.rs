//! # moss-runtime
//!
//! The core of moss: stackful coroutines (on corosensei) scheduled by one
//! *hub* per OS thread, with pooled guarded stacks, timers, a mio reactor and
//! a cross-thread wake-up queue.
//!
//! * [`coroutine`](crate::spawn) API — `spawn`, `join`, `kill`, `sleep`,
//!   `timeout`, `run`, `wait`, `dump` (module `coroutine`, re-exported here);
//!   gevent's `Greenlet` result API on [`JoinHandle`] (`link`,
//!   `is_successful`, `kill_nowait`, `kill_timeout`; module `link`) and
//!   [`JoinAll`], `joinall` with a timeout, stop on error, or a count.
//! * [`coroutine_local!`] — per-coroutine values (gevent's `local`).
//! * [`greenlet`] — raw symmetric coroutines without a hub.
//! * [`block_on`] — a coroutine waits for a future (async Rust), polling it
//!   on its own stack while the hub runs the others.
//! * `compat` (cargo feature `tokio`) — futures that need tokio's reactor,
//!   run on a tokio runtime moss owns.
//! * [`coop`] — fairness: a coroutine whose blocking calls keep completing
//!   without parking yields after a budget of them.
//! * [`monitor`] — a thread that reports a hub blocked by one coroutine;
//!   [`dump_all`] — `dump` for every hub of the process.
//! * [`park`] — the blocking primitive every waiting moss call is built on,
//!   for sync primitives and pools; [`backoff`] — polling with growing naps
//!   for waits with nothing to park on (no pidfd, no fd left).
//! * [`reactor`] — fd registration for I/O types.
//! * [`sync`] — events, results, locks, semaphores, queues and channels
//!   shared by coroutines and threads.
//!
//! Architecture notes live next to the code, in the module headers: the hub
//! loop, a coroutine's life cycle and its transitions, how cancellation is
//! delivered, the reactor, stacks and the platform layer.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod backoff;
mod block_on;
mod cancel;
#[cfg(feature = "tokio")]
pub mod compat;
pub mod coop;
mod coroutine;
pub mod greenlet;
mod hub;
mod join_all;
mod link;
mod local;
pub mod monitor;
pub mod park;
mod payload;
pub mod pool;
pub mod reactor;
mod stack_pool;
pub mod sync;
#[doc(hidden)]
pub mod sys;
mod task;
pub mod thread;
mod timer;

pub use block_on::block_on;
pub use cancel::Cancelled;
pub use coroutine::{
    Builder, Current, Elapsed, JoinHandle, current, dump, join_all, run, run_per_core, sleep,
    spawn, spawn_later, timeout, wait, yield_now,
};
pub use join_all::{JoinAll, Joined};
pub use local::CoroutineLocal;
pub use monitor::dump_all;
pub use payload::panic_message;
pub use stack_pool::{DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE};
pub use task::{CoroutineId, JoinError};
