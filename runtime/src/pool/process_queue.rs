//! A bounded FIFO queue shared by processes: `multiprocessing.Queue`.
//!
//! # Design
//!
//! Everything lives in kernel objects that `fork` shares: four pipes and
//! one page of `MAP_SHARED` memory, all created by [`ProcessQueue::new`]
//! before the children are forked (see `queue_wire.rs` for the layout).
//!
//! * `put`: take the writers' lock (one atomic word naming the process
//!   that holds it), count the item if the queue has room (this is what
//!   makes it bounded; else wait for room, holding the lock), write the
//!   whole frame `[len][postcard bytes]` (waiting for pipe space while a
//!   reader drains it, so an item larger than the pipe buffer still
//!   arrives whole and contiguous), release the lock.
//! * `get`: take the readers' lock, read one whole frame (waiting for
//!   data), uncount the item, release the lock.
//!
//! One writer at a time means frames never interleave; one reader at a time
//! means each frame is read whole by exactly one reader: every item is
//! delivered exactly once. Waits go through the hub: a coroutine parks, a
//! root runs its hub.
//!
//! # Cancellation
//!
//! A `kill` or `timeout` that reaches a call before its first byte leaves
//! the queue as it was (the lock goes back, the item is uncounted). Once a frame has started it
//! must be finished, or every later reader would read garbage: the
//! cancellation is delivered as usual and the unwinding call finishes the
//! frame on its way out, parking (so a peer that is a coroutine of the same
//! thread, such as the consumer of a large item, runs meanwhile):
//!
//! * a put cancelled in the middle of its item still delivers the item;
//! * a get cancelled in the middle of an item reads it to the end and keeps
//!   it for the next get of the same process (on any thread): no item is
//!   lost, though its place in the order may change.
//!
//! If the frame can never be finished (the unwinding call is cancelled
//! again, or the process on the other side died in the middle of its put
//! or get), the queue is marked broken and every call, in every process,
//! fails with an error saying so, instead of waiting forever. A process
//! killed while its `get` waits for an item (it has read nothing), or while
//! its `put` waits for the lock or for room (it has written nothing),
//! breaks nothing: the lock it held (and a put's count) is taken over by
//! one waiter within 200 ms.
//!
//! `len`, `is_empty` and `is_full` read the shared counter: exact when the
//! queue is quiet, approximate while others put and get (as in Python).
//!
//! The methods are those of [`Queue`](crate::sync::Queue) (`put`, `get`,
//! the `_timeout` and `_nowait` forms with [`Full`], [`Timeout`] and
//! [`Empty`], `len`, `is_empty`, `is_full`). An item that cannot be
//! serialized, or a failing pipe, makes them panic with a clear message;
//! [`checked_put`](ProcessQueue::checked_put) and
//! [`checked_get`](ProcessQueue::checked_get) report those as `io::Error`
//! instead.
//!
//! Limits: an item larger than the data pipe's buffer (grown to 1 MiB where
//! the system allows) is written while a consumer reads it, so its `put`
//! waits for a consumer; a process that died holding a lock is noticed
//! within 200 ms unless its pid was recycled meanwhile.
//!
//! ```
//! use std::sync::Arc;
//! use moss::pool::{Process, ProcessQueue};
//!
//! let q = Arc::new(ProcessQueue::<String>::new(4).unwrap());
//! let child = {
//!     let q = q.clone();
//!     Process::new(move || q.put(format!("hello from {}", std::process::id())))
//!         .start()
//!         .unwrap()
//! };
//! let msg = q.get();
//! assert_eq!(msg, format!("hello from {}", child.pid()));
//! assert_eq!(child.join().unwrap(), 0);
//! ```

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame;
use super::queue_wire::{Wait, Wire};
use crate::sync::{Empty, Full, Timeout};

/// A bounded queue of `T` shared by a parent and its forked children.
/// `Send + Sync`; share it with an `Arc` captured by the child's closure.
pub struct ProcessQueue<T> {
    capacity: usize,
    wire: Wire,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> ProcessQueue<T> {
    /// A queue holding at most `capacity` items (`capacity >= 1`; an
    /// `InvalidInput` error above `usize::MAX / 8`).
    pub fn new(capacity: usize) -> io::Result<ProcessQueue<T>> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ProcessQueue capacity must be at least 1",
            ));
        }
        Ok(ProcessQueue {
            capacity,
            wire: Wire::new(capacity)?,
            _items: PhantomData,
        })
    }

    /// The capacity given at creation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items in the queue (approximate while other processes use it).
    pub fn len(&self) -> usize {
        self.wire.len()
    }

    /// Whether the queue looks empty (approximate, see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue looks full (approximate, see [`len`](Self::len)).
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Appends `v`, waiting while the queue is full.
    ///
    /// # Panics
    /// If `v` cannot be serialized with postcard, or the queue's pipes
    /// fail (see [`checked_put`](Self::checked_put) for an error instead).
    pub fn put(&self, v: T) {
        match self.put_deadline(v, Wait::Forever) {
            Ok(()) => {}
            Err(Put::Full(_)) => unreachable!("no deadline"),
            Err(Put::Io(e)) => panic!("moss: ProcessQueue::put: {e}"),
        }
    }

    /// Appends `v`, waiting at most `d` for a free slot; gives the item back
    /// in [`Full`] if none came.
    ///
    /// # Panics
    /// As [`put`](Self::put).
    pub fn put_timeout(&self, v: T, d: Duration) -> Result<(), Full<T>> {
        match self.put_deadline(v, Wait::until(d)) {
            Ok(()) => Ok(()),
            Err(Put::Full(v)) => Err(Full(v)),
            Err(Put::Io(e)) => panic!("moss: ProcessQueue::put_timeout: {e}"),
        }
    }

    /// Appends `v` if a slot is free now; gives it back in [`Full`]
    /// otherwise.
    ///
    /// # Panics
    /// As [`put`](Self::put).
    pub fn put_nowait(&self, v: T) -> Result<(), Full<T>> {
        match self.put_deadline(v, Wait::No) {
            Ok(()) => Ok(()),
            Err(Put::Full(v)) => Err(Full(v)),
            Err(Put::Io(e)) => panic!("moss: ProcessQueue::put_nowait: {e}"),
        }
    }

    /// Removes and returns the oldest item, waiting while the queue is empty.
    ///
    /// # Panics
    /// If the queue's pipes fail or an item cannot be deserialized (see
    /// [`checked_get`](Self::checked_get) for an error instead).
    pub fn get(&self) -> T {
        match self.get_deadline(Wait::Forever) {
            Ok(Some(v)) => v,
            Ok(None) => unreachable!("no deadline"),
            Err(e) => panic!("moss: ProcessQueue::get: {e}"),
        }
    }

    /// Like [`get`](Self::get), waiting at most `d`.
    ///
    /// # Panics
    /// As [`get`](Self::get).
    pub fn get_timeout(&self, d: Duration) -> Result<T, Timeout> {
        match self.get_deadline(Wait::until(d)) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Timeout),
            Err(e) => panic!("moss: ProcessQueue::get_timeout: {e}"),
        }
    }

    /// Removes and returns the oldest item if one is there now (and no other
    /// consumer is busy reading); [`Empty`] otherwise.
    ///
    /// # Panics
    /// As [`get`](Self::get).
    pub fn get_nowait(&self) -> Result<T, Empty> {
        match self.get_deadline(Wait::No) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Empty),
            Err(e) => panic!("moss: ProcessQueue::get_nowait: {e}"),
        }
    }

    /// [`put`](Self::put) that reports every failure as an `io::Error`:
    /// `timeout` `None` waits for a slot as long as it takes, `Some(d)` at
    /// most `d` (`TimedOut`; `Duration::ZERO` gives `WouldBlock`, "queue is
    /// full"; the item is dropped), `InvalidInput` if `v` cannot be
    /// serialized.
    pub fn checked_put(&self, v: T, timeout: Option<Duration>) -> io::Result<()> {
        let wait = Wait::from(timeout);
        match self.put_deadline(v, wait) {
            Ok(()) => Ok(()),
            Err(Put::Full(_)) => {
                Err(wait.error("queue is full", "timed out waiting for a free slot"))
            }
            Err(Put::Io(e)) => Err(e),
        }
    }

    /// [`get`](Self::get) that reports every failure as an `io::Error`:
    /// `timeout` as in [`checked_put`](Self::checked_put) (`TimedOut`, or
    /// `WouldBlock` "queue is empty"), `InvalidData` if an item cannot be
    /// deserialized.
    pub fn checked_get(&self, timeout: Option<Duration>) -> io::Result<T> {
        let wait = Wait::from(timeout);
        self.get_deadline(wait)?
            .ok_or_else(|| wait.error("queue is empty", "timed out waiting for an item"))
    }

    fn put_deadline(&self, v: T, wait: Wait) -> Result<(), Put<T>> {
        let mut frame = match postcard::to_extend(&v, frame::start()) {
            Ok(f) => f,
            Err(e) => {
                return Err(Put::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot serialize the item: {e}"),
                )));
            }
        };
        if let Err(e) = frame::finish(&mut frame, "a serialized item") {
            return Err(Put::Io(e));
        }
        match self.wire.put(&frame, wait) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Put::Full(v)),
            Err(e) => Err(Put::Io(e)),
        }
    }

    /// `Ok(None)`: empty (nothing came before the wait ran out).
    fn get_deadline(&self, wait: Wait) -> io::Result<Option<T>> {
        let Some(payload) = self.wire.get(wait)? else {
            return Ok(None);
        };
        postcard::from_bytes(&payload).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot deserialize the item: {e}"),
            )
        })
    }
}

/// Why a put did not happen.
enum Put<T> {
    /// No free slot in time: the item comes back.
    Full(T),
    Io(io::Error),
}

impl<T> fmt::Debug for ProcessQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessQueue")
            .field("capacity", &self.capacity)
            .field("len", &self.wire.len())
            .finish()
    }
}
