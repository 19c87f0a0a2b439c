//! The error values of `moss::sync`: timeouts, full and empty queues, closed
//! channels, over-released semaphores. Each is a `std::error::Error` with a
//! message that says what happened; those that carry an item give it back.

use std::fmt;
use std::io;

/// A `_timeout` call gave up: the deadline passed before it could proceed.
///
/// ```
/// use std::time::Duration;
/// let ev = moss::sync::Event::new();
/// let r = moss::sync::AsyncResult::<u32>::new();
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// assert_eq!(r.get_timeout(Duration::from_millis(1)), Err(moss::sync::Timeout));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeout;

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting")
    }
}

impl std::error::Error for Timeout {}

impl From<Timeout> for io::Error {
    fn from(e: Timeout) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

/// A `put_nowait` or `put_timeout` found the queue full; the item is given back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

/// A `get_nowait` found the queue empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Empty;

impl fmt::Display for Empty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue is empty")
    }
}

impl std::error::Error for Empty {}

/// A `release` of a [`BoundedSemaphore`](super::BoundedSemaphore) would
/// raise its permits past the initial value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReleaseError {
    /// The semaphore's initial (and maximum) number of permits.
    pub max: usize,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "semaphore released more times than acquired (its maximum is {})",
            self.max
        )
    }
}

impl std::error::Error for ReleaseError {}

/// `JoinableQueue::task_done` was called more often than items were put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than items were put")
    }
}

impl std::error::Error for TaskDoneError {}

/// `send` failed because the receiver is gone; the value is given back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receiver is gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// `try_send` or `send_timeout` could not send; the value is given back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel is full (for `send_timeout`: it stayed full until the deadline).
    Full(T),
    /// The receiver is gone.
    Disconnected(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("sending on a full channel"),
            TrySendError::Disconnected(_) => {
                f.write_str("sending on a channel whose receiver is gone")
            }
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// `recv` failed: every sender is gone and the channel is drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on a closed channel (every sender is gone)")
    }
}

impl std::error::Error for RecvError {}

/// `try_recv` could not receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryRecvError {
    /// Nothing to receive now.
    Empty,
    /// Every sender is gone and the channel is drained.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receiving on an empty channel"),
            TryRecvError::Disconnected => RecvError.fmt(f),
        }
    }
}

impl std::error::Error for TryRecvError {}

/// `recv_timeout` could not receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// Every sender is gone and the channel is drained.
    Disconnected,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on a channel"),
            RecvTimeoutError::Disconnected => RecvError.fmt(f),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}
