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
pub use process_pool::ProcessPool;
pub use process_queue::ProcessQueue;
pub use process_sync::{ProcessEvent, ProcessSemaphore};
pub use shared_value::{Plain, SharedValue};
pub use thread_pool::{Imap, ThreadPool};

pub(crate) use process::wait_fd;
