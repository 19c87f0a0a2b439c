//! The error of a task run by a [`ThreadPool`](super::ThreadPool) or a
//! [`ProcessPool`](super::ProcessPool).

use std::fmt;
use std::io;

/// Why a pool task produced no result.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The task panicked (the worker survived).
    Panicked {
        /// The panic message (`"<non-string panic payload>"` if it had none).
        message: String,
    },
    /// The worker process running the task died (a signal such as SIGKILL,
    /// SIGSEGV or SIGABRT, or an exit) before answering. It has been
    /// replaced.
    WorkerDied {
        /// The dead worker's pid.
        pid: u32,
        /// The signal that ended it, if a signal did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
    },
    /// The pool was closed (or dropped) before the task was accepted.
    Closed,
    /// The pool was terminated before the task finished.
    Terminated,
    /// Arguments or result could not be (de)serialized for the worker process.
    Serialize(String),
    /// The pool's initializer panicked (or killed the worker) in a worker
    /// forked to replace another: the pool forks no more workers, and every
    /// task queued then or submitted later fails with this.
    Initializer {
        /// Why: the initializer's panic message, or how the worker died.
        message: String,
    },
    /// The pool could not start a worker or talk to one.
    Io {
        /// The kind of the underlying I/O error.
        kind: io::ErrorKind,
        /// Its message.
        message: String,
    },
}

impl PoolError {
    pub(crate) fn io(e: &io::Error) -> PoolError {
        PoolError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> PoolError {
        let message = crate::panic_message(payload).unwrap_or("<non-string panic payload>");
        PoolError::Panicked {
            message: message.to_owned(),
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Panicked { message } => write!(f, "pool task panicked: {message}"),
            PoolError::WorkerDied {
                pid,
                signal: Some(s),
                ..
            } => {
                write!(
                    f,
                    "pool worker process {pid} died from signal {s} while running the task"
                )
            }
            PoolError::WorkerDied { pid, exit_code, .. } => write!(
                f,
                "pool worker process {pid} exited (code {}) while running the task",
                exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
            ),
            PoolError::Closed => f.write_str("the pool is closed"),
            PoolError::Terminated => {
                f.write_str("the pool was terminated before the task finished")
            }
            PoolError::Serialize(m) => write!(f, "pool task data could not be serialized: {m}"),
            PoolError::Initializer { message } => {
                write!(
                    f,
                    "the pool's initializer failed in a new worker: {message}"
                )
            }
            PoolError::Io { message, .. } => write!(f, "pool I/O error: {message}"),
        }
    }
}

impl std::error::Error for PoolError {}

impl From<PoolError> for io::Error {
    fn from(e: PoolError) -> io::Error {
        let kind = match &e {
            PoolError::Io { kind, .. } => *kind,
            PoolError::Serialize(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
