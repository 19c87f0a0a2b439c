//! Pools and processes: coroutine pools, thread pools and process pools the
//! hub waits on without blocking, child processes and a queue shared between
//! processes.
//!
//! * [`Pool`], [`Group`] — sets of coroutines of one thread, bounded or not
//!   (gevent's `Pool` and `Group`).
//! * [`ThreadPool`] — OS threads for blocking or CPU-bound closures
//!   (`concurrent.futures.ThreadPoolExecutor`, gevent's `ThreadPool`).
//! * [`Process`], [`ProcessHandle`], [`Runnable`] — `multiprocessing.Process`.
//! * [`ProcessPool`] — worker processes for CPU-bound `fn(A) -> R` tasks
//!   (`multiprocessing.Pool`).
//! * [`ProcessQueue`] — `multiprocessing.Queue`.
//! * [`pipe`], [`Connection`] — `multiprocessing.Pipe`.
//! * [`ProcessLock`], [`ProcessSemaphore`], [`ProcessEvent`],
//!   [`SharedValue`] — `multiprocessing.Lock`, `Semaphore`, `Event` and
//!   `Value`.
//! * [`PoolError`] — why a pool task produced no result.
//!
//! Values that cross a process boundary (arguments, results, queue items,
//! pipe messages) are serialized with serde: any type that derives
//! `Serialize` and `Deserialize` works.
//!
//! # A process pool, as in Python
//!
//! [`ProcessPool::new(n)`](ProcessPool::new) forks `n` workers (`new(0)`:
//! one per CPU, as Python's `Pool()`). [`ProcessPool::builder`] takes
//! Python's `initializer` and `maxtasksperchild`; `imap`, `imap_unordered`
//! (lazy iterators), `map_async` and `error_callback`s (the `*_with`
//! methods) are there too. What a newcomer from `multiprocessing.Pool`
//! needs to know:
//!
//! * **A task is a `fn(A) -> R` item, not a closure.** Like Python's rule
//!   that tasks must pickle, the function has to exist in the worker: pass
//!   a named function; a closure that captures nothing also coerces to a
//!   `fn` pointer, one that captures does not compile.
//! * **One argument.** Several go in one tuple: write `fn f((lo, hi): (u64,
//!   u64))` and call `pool.apply(f, (1, 10))`. A Python-style `fn f(lo: u64,
//!   hi: u64)` is a `fn(u64, u64)`, not a `fn(A) -> R`, and rustc's E0308
//!   about mismatched fn pointers is what that looks like. `map` with tuple
//!   items is Python's `starmap`.
//! * **Your own types** derive serde's traits; add
//!   `serde = { version = "1", features = ["derive"] }` to your
//!   `Cargo.toml`.
//! * **Callbacks run on the caller's thread**, in a coroutine of its hub:
//!   `apply_async`'s callback runs when the caller next blocks on a moss
//!   call (`get`, `join`, a sleep, I/O), never on a thread of its own.
//! * Waiting is cooperative: a coroutine in `apply` or `map` lets the other
//!   coroutines of its thread run.
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//!
//! use moss::pool::{PoolError, ProcessPool};
//! use serde::{Deserialize, Serialize};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! // Two arguments travel as one tuple.
//! fn count_primes((lo, hi): (u64, u64)) -> usize {
//!     (lo..hi).filter(|&n| n > 1 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0)).count()
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Job {
//!     id: u32,
//!     text: String,
//! }
//!
//! fn words(job: Job) -> (u32, usize) {
//!     (job.id, job.text.split_whitespace().count())
//! }
//!
//! fn fails(_: ()) -> u32 {
//!     panic!("no luck")
//! }
//!
//! let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
//! let pool = ProcessPool::new(cpus.min(4))?;
//! assert_eq!(pool.apply(square, 7)?, 49);
//! assert_eq!(pool.map(count_primes, [(0, 10), (10, 20)])?, vec![4, 4]);
//! let job = Job { id: 1, text: "to be or not to be".into() };
//! assert_eq!(pool.apply(words, job)?, (1, 6));
//! assert!(matches!(pool.apply(fails, ()), Err(PoolError::Panicked { .. })));
//!
//! // The callback runs here, in a coroutine, while `get` waits.
//! let seen = Rc::new(Cell::new(0));
//! let s = seen.clone();
//! let r = pool.apply_async(square, 9, move |v: &u64| s.set(*v));
//! assert_eq!(r.get()?, 81);
//! assert_eq!(seen.get(), 81);
//!
//! pool.close(); // no new tasks
//! pool.join(); // the workers finish what was queued and exit
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod callback;
mod connection;
mod doorbell;
mod error;
mod frame;
mod group;
mod pool_manager;
mod pool_worker;
mod process;
mod process_lock;
mod process_map;
mod process_pool;
mod process_queue;
mod process_sync;
mod queue_wire;
mod shared_value;
mod thread_pool;

pub use connection::{Connection, pipe};
pub use error::PoolError;
pub use group::{Group, ImapOrdered, ImapUnordered, KillOnDrop, Pool};
pub use process::{CHILD_STACK_SIZE, PANIC_EXIT_CODE, Process, ProcessHandle, Runnable};
pub use process_lock::{ProcessLock, ProcessLockGuard};
pub use process_map::ProcessImap;
pub use process_pool::{ProcessPool, ProcessPoolBuilder};
pub use process_queue::ProcessQueue;
pub use process_sync::{ProcessEvent, ProcessSemaphore};
pub use shared_value::{Plain, SharedValue};
pub use thread_pool::{Imap, ThreadPool};

pub(crate) use process::wait_fd;

/// A pool size as the pools' constructors take it: `n`, or for 0 one per
/// CPU ([`std::thread::available_parallelism`], or 1 if unknown), as
/// Python's `Pool()`.
fn size_or_cpus(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}
