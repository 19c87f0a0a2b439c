//! Pools and processes: thread pools and process pools the hub waits on
//! without blocking, child processes and a queue shared between processes.
//!
//! * [`Process`], [`ProcessHandle`], [`Runnable`] — `multiprocessing.Process`
//!   (module `process`).
//! * [`ProcessQueue`] — `multiprocessing.Queue` (module `process_queue`).

mod process;
mod process_queue;

pub use process::{PANIC_EXIT_CODE, Process, ProcessHandle, Runnable};
pub use process_queue::ProcessQueue;
