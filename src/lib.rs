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
//! # Where things are
//!
//! | you want | look at |
//! |---|---|
//! | coroutines: spawn, join, kill, sleep, timeouts | [`spawn`], [`JoinHandle`], [`sleep`], [`timeout`], [`Builder`], [`run`], [`wait`] |
//! | what is everyone waiting on? which coroutine blocks its thread? | [`dump`], [`dump_all`], [`monitor`] |
//! | events, locks, queues, channels, waiting for the first of several | [`sync`] |
//! | a bounded set of coroutines (gevent's `Pool`), thread pools, processes, process pools | [`pool`] |
//! | sockets, name lookups | [`net`] |
//! | a TCP server (gevent's `StreamServer`) | [`server::StreamServer`] |
//! | unmodified blocking code (std, `ureq`, ...) made cooperative, and what stays blocking | [`monkey`] |
//! | child processes with yielding waits and pipes | [`subprocess`] |
//! | Unix signals: wait for one, or run a handler | [`signal`] |
//! | OS threads whose `join` yields | [`thread`] |
//! | per-coroutine values (gevent's `local`) | [`coroutine_local!`] |
//! | fairness: the budget after which a busy coroutine yields | [`coop`] |
//! | raw symmetric coroutines (the `greenlet` package) | [`greenlet`] |
//! | async Rust from coroutines | [`block_on`], `compat::tokio` (cargo feature `tokio`) |
//!
//! The repository's README maps gevent, `threading` and `multiprocessing`
//! names to these, and its `examples/` are complete programs.
//!
//! # Things to know on the first day
//!
//! * A coroutine gives the thread to others only when it blocks in a moss
//!   call (or, after [`monkey::patch_all`], in a std call), or after a
//!   budget of such calls in a row that completed at once ([`coop`]: a
//!   connection that always has data cannot starve the others). Work that
//!   computes, or blocks somewhere moss does not see, holds up every
//!   coroutine of the thread: CPU work belongs in a
//!   [`ThreadPool`](pool::ThreadPool) or [`ProcessPool`](pool::ProcessPool).
//! * `main` is the thread's root coroutine: when it blocks on a moss call,
//!   the others run. When it returns, the process ends: wait for the
//!   coroutines first ([`join`](JoinHandle::join), [`join_all`], [`wait`],
//!   or [`run`]).
//! * Coroutines never move between threads, so [`spawn`] takes closures
//!   that are not `Send` (`Rc<RefCell<_>>` is fine). Use [`run_per_core`]
//!   for several cores and [`sync`] types to share between threads.
//! * [`JoinHandle::kill`] and [`timeout`] unwind the coroutine from its
//!   blocking call; destructors run, so cleanup goes in `Drop` guards.
//!   Dropping a `JoinHandle` detaches the coroutine; tie coroutines to
//!   their owner with [`pool::Group::kill_on_drop`].
//! * A program that seems stuck: [`dump`] lists every coroutine of the
//!   thread, what it waits on and for how long. A `main` that waits on
//!   something nothing can ever wake panics with "this operation would
//!   block forever" and that list ([`wait`] says what is detected).
//!
//! This crate only re-exports: the runtime lives in `moss-runtime`, the I/O
//! layer in `moss-io`; use them through `moss::`.

pub use moss_io::monkey;
pub use moss_io::{net, server, signal, subprocess};
pub use moss_runtime::sync;
pub use moss_runtime::{
    Builder, Cancelled, CoroutineId, CoroutineLocal, Current, DEFAULT_STACK_SIZE, Elapsed, JoinAll,
    JoinError, JoinHandle, Joined, MAX_STACK_SIZE, MIN_STACK_SIZE, block_on, current, dump,
    dump_all, greenlet, join_all, panic_message, run, run_per_core, sleep, spawn, spawn_later,
    timeout, wait, yield_now,
};
pub use moss_runtime::{coop, coroutine_local, monitor, pool, reactor, thread};

/// Futures that need a particular async runtime (cargo feature `tokio`).
#[cfg(feature = "tokio")]
pub use moss_runtime::compat;

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
