//! # moss
//!
//! Stackful coroutines with gevent-style I/O: write plain blocking code, get
//! the concurrency of an event loop.
//!
//! ```
//! use std::time::{Duration, Instant};
//! let t = Instant::now();
//! let hs: Vec<_> = (0..100).map(|i| moss::spawn(move || { moss::sleep(Duration::from_millis(50)); i })).collect();
//! let sum: u32 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
//! assert_eq!(sum, 4950);
//! assert!(t.elapsed() < Duration::from_secs(2)); // they slept at the same time
//! ```
//!
//! This crate only re-exports: the runtime lives in `moss-runtime`, the I/O
//! layer in `moss-io`.

pub use moss_io::monkey;
pub use moss_io::{net, server, signal, subprocess};
pub use moss_runtime::sync;
pub use moss_runtime::{
    Builder, Cancelled, CoroutineId, CoroutineLocal, Current, DEFAULT_STACK_SIZE, Elapsed, JoinAll,
    JoinError, JoinHandle, Joined, MAX_STACK_SIZE, MIN_STACK_SIZE, block_on, current, dump,
    greenlet, join_all, panic_message, run, run_per_core, sleep, spawn, spawn_later, timeout, wait,
    yield_now,
};
pub use moss_runtime::{coroutine_local, pool, thread};

/// Futures that need a particular async runtime (cargo feature `tokio`).
#[cfg(feature = "tokio")]
pub use moss_runtime::compat;
