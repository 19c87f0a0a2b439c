//! Channels: `channel()` / `bounded(n)` give a cloneable [`Sender`] and one
//! [`Receiver`] over the queue engine (`queue_core.rs`), with close
//! semantics in the style of `std::sync::mpsc`:
//!
//! * when the last `Sender` is dropped, the receiver still gets what is
//!   buffered, then `recv` fails with [`RecvError`] (a blocked `recv` wakes);
//! * when the `Receiver` is dropped, buffered items are dropped and every
//!   `send` (including blocked ones) fails with [`SendError`], which gives
//!   the value back.
//!
//! `bounded(0)` is a rendezvous channel: `send` waits until a `recv` takes
//! the value from its hands.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::error::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};
use super::queue_core::{Fifo, GetError, PutError, QueueCore};
use super::waitlist::deadline_in;

struct Chan<T> {
    core: QueueCore<T, Fifo<T>>,
    senders: AtomicUsize,
}

/// Creates an unbounded channel: `send` never waits.
///
/// ```
/// let (tx, rx) = moss::sync::channel();
/// let tx2 = tx.clone();
/// moss::spawn(move || tx.send("a").unwrap());
/// moss::spawn(move || tx2.send("b").unwrap());
/// let mut got: Vec<_> = rx.iter().collect(); // ends when both senders are gone
/// got.sort();
/// assert_eq!(got, ["a", "b"]);
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    with_capacity(usize::MAX)
}

/// Creates a channel holding at most `n` values: `send` waits while it is
/// full. `bounded(0)` is a rendezvous: each `send` waits for a `recv`.
///
/// ```
/// use std::time::Duration;
/// use moss::sync::{bounded, TrySendError};
/// let (tx, rx) = bounded(1);
/// tx.send(1).unwrap();
/// assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
/// assert_eq!(rx.recv(), Ok(1));
/// drop(rx);
/// assert_eq!(tx.send(3).unwrap_err().into_inner(), 3);
/// ```
pub fn bounded<T>(n: usize) -> (Sender<T>, Receiver<T>) {
    with_capacity(n)
}

fn with_capacity<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        core: QueueCore::new(cap, false),
        senders: AtomicUsize::new(1),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// The sending half of a channel; clone it for more producers.
/// `Send + Sync` for `T: Send`.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Sends `v`, waiting while a bounded channel is full. Fails (giving `v`
    /// back) if the receiver is gone, also while waiting. A `kill` or
    /// `timeout` of the waiter unwinds it.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        crate::coop::proceed();
        match self.chan.core.put(v, None) {
            Ok(()) => Ok(()),
            Err(PutError::Closed(v)) => Err(SendError(v)),
            Err(PutError::Full(_)) => unreachable!("no deadline"),
        }
    }

    /// Sends `v` if that does not need to wait.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.send_until(v, Some(Instant::now()))
    }

    /// Sends `v`, waiting at most `d` for room ([`TrySendError::Full`] then).
    pub fn send_timeout(&self, v: T, d: Duration) -> Result<(), TrySendError<T>> {
        crate::coop::proceed();
        self.send_until(v, deadline_in(d))
    }

    fn send_until(&self, v: T, deadline: Option<Instant>) -> Result<(), TrySendError<T>> {
        match self.chan.core.put(v, deadline) {
            Ok(()) => Ok(()),
            Err(PutError::Full(v)) => Err(TrySendError::Full(v)),
            Err(PutError::Closed(v)) => Err(TrySendError::Disconnected(v)),
        }
    }

    /// Values buffered now.
    pub fn len(&self) -> usize {
        self.chan.core.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.chan.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.chan.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.chan.core.close(true);
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("len", &self.len()).finish()
    }
}

/// The receiving half of a channel. `Send + Sync` for `T: Send`.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Receiver<T> {
    /// The next value, waiting while the channel is empty; [`RecvError`] once
    /// it is drained and every sender is gone. A `kill` or `timeout` of the
    /// waiter unwinds it; a value handed to it just before is passed on.
    pub fn recv(&self) -> Result<T, RecvError> {
        crate::coop::proceed();
        self.chan.core.get(None).map_err(|_| RecvError)
    }

    /// The next value if there is one now.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan
            .core
            .get(Some(Instant::now()))
            .map_err(|e| match e {
                GetError::Empty => TryRecvError::Empty,
                GetError::Closed => TryRecvError::Disconnected,
            })
    }

    /// The next value, waiting at most `d`.
    pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        crate::coop::proceed();
        self.chan.core.get(deadline_in(d)).map_err(|e| match e {
            GetError::Empty => RecvTimeoutError::Timeout,
            GetError::Closed => RecvTimeoutError::Disconnected,
        })
    }

    /// An iterator of received values that ends when the channel is drained
    /// and every sender is gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// Values buffered now.
    pub fn len(&self) -> usize {
        self.chan.core.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `recv` would return at once (a value, or disconnection).
    pub(crate) fn is_ready(&self) -> bool {
        self.chan.core.get_ready()
    }

    pub(crate) fn core(&self) -> &QueueCore<T, Fifo<T>> {
        &self.chan.core
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Buffered values are dropped here, outside the channel's lock.
        drop(self.chan.core.close(false));
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .finish()
    }
}

/// Blocking iterator over a [`Receiver`]'s values; see [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Owning blocking iterator over a [`Receiver`]'s values.
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
