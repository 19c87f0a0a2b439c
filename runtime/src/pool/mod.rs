//! Pools and processes: coroutine pools, thread pools and process pools the
//! hub waits on without blocking, child processes and a queue shared between
//! processes.
//!
//! * [`Pool`], [`Group`] — sets of coroutines of one thread, bounded or not
//!   (gevent's `Pool` and `Group`; module `group`).
//! * [`ThreadPool`] — OS threads for blocking or CPU-bound closures
//!   (module `thread_pool`).
//! * [`Process`], [`ProcessHandle`], [`Runnable`] — `multiprocessing.Process`
//!   (module `process`).
//! * [`ProcessPool`] — worker processes for CPU-bound `fn(A) -> R` tasks
//!   (modules `process_pool`, `pool_manager` for its manager thread and
//!   `pool_worker` for the workers' loop).
//! * [`ProcessQueue`] — `multiprocessing.Queue` (modules `process_queue`,
//!   and `queue_wire` for its pipes and frames).
//! * [`pipe`], [`Connection`] — `multiprocessing.Pipe` (module
//!   `connection`).
//! * [`ProcessLock`], [`ProcessSemaphore`], [`ProcessEvent`],
//!   [`SharedValue`] — `multiprocessing.Lock`, `Semaphore`, `Event` and
//!   `Value` (modules `process_lock`, `process_sync`, `shared_value`; their
//!   waiters in other processes are woken through `doorbell`).
//! * [`PoolError`] — why a pool task produced no result (module `error`).
//!
//! The process protocols share one length-prefixed frame codec (module
//! `frame`).

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
