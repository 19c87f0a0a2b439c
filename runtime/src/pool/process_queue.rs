//! A bounded FIFO queue shared by processes: `multiprocessing.Queue`.
//!
//! # Design
//!
//! Everything lives in kernel objects that `fork` shares: four pipes and one
//! page of `MAP_SHARED` memory, all created by [`ProcessQueue::new`] before
//! the children are forked.
//!
//! ```text
//!   data   pipe: frames  [len: u32 LE][postcard bytes]  (FIFO of items)
//!   slots  pipe: one byte per free slot   (starts with `capacity` bytes)
//!   wlock  pipe: one byte = the writers' lock on `data`
//!   rlock  pipe: one byte = the readers' lock on `data`
//!   shared page: `len`, the number of items written or being written
//! ```
//!
//! A pipe holding *k* one-byte tokens is a counting semaphore that works
//! across processes: reading one byte is atomic (exactly one reader gets each
//! byte), and "a token is available" is plain readability, which the hub can
//! wait for. All fds are non-blocking; a waiter tries the read first and on
//! `EAGAIN` waits for readiness through its hub (a coroutine yields, a root or
//! plain thread blocks in `epoll_wait`).
//!
//! * `put`: take a slot token (this is what makes the queue bounded), take
//!   the write lock, write the whole frame (waiting for pipe space while a
//!   reader drains it, so an item larger than the pipe buffer still arrives
//!   whole and contiguous), release the write lock. The slot token now
//!   belongs to the item.
//! * `get`: take the read lock, read one whole frame (waiting for data),
//!   release the read lock, give the slot token back.
//!
//! One writer at a time means frames never interleave; one reader at a time
//! means each frame is read whole by exactly one reader: every item is
//! delivered exactly once. Lock and slot tokens are held by guards, so a
//! timed-out or cancelled call gives them back. Once the first byte of a
//! frame has been written or read, the call finishes that frame whatever
//! happens (a cancellation waits for the frame to complete, blocking the
//! thread if it must, and is delivered at the next blocking point): a frame
//! is never torn.
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
//! Limits (as with Python's queue): a process killed in the middle of a
//! `put` or `get` may leave a torn frame or take a lock token with it, after
//! which the queue is unusable; an item larger than the data pipe's buffer
//! (grown to 1 MiB where the system allows) is written while a consumer
//! reads it, so its `put` waits for a consumer.
//!
//! ```
//! use std::sync::Arc;
//! use moss_runtime::pool::{Process, ProcessQueue};
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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame;
use super::process::{poll_wait, wait_fd};
use crate::reactor::{Interest, Registration, WaitError};
use crate::sync::{Empty, Full, Timeout};
use crate::sys::fd;
use crate::sys::shm::SharedMem;

/// The data pipe's buffer is grown to this where the system allows.
const DATA_PIPE_SIZE: usize = 1 << 20;

/// A bounded queue of `T` shared by a parent and its forked children.
/// `Send + Sync`; share it with an `Arc` captured by the child's closure.
pub struct ProcessQueue<T> {
    capacity: usize,
    data_r: OwnedFd,
    data_w: OwnedFd,
    slots_r: OwnedFd,
    slots_w: OwnedFd,
    wlock_r: OwnedFd,
    wlock_w: OwnedFd,
    rlock_r: OwnedFd,
    rlock_w: OwnedFd,
    shared: SharedMem,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> ProcessQueue<T> {
    /// A queue holding at most `capacity` items (`capacity >= 1`; more than
    /// 65536 needs a larger pipe buffer than the default, which is tried).
    pub fn new(capacity: usize) -> io::Result<ProcessQueue<T>> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ProcessQueue capacity must be at least 1",
            ));
        }
        let (data_r, data_w) = fd::pipe(true)?;
        let (slots_r, slots_w) = fd::pipe(true)?;
        let (wlock_r, wlock_w) = fd::pipe(true)?;
        let (rlock_r, rlock_w) = fd::pipe(true)?;
        // Best effort: a bigger buffer lets bigger items be put without a
        // consumer reading at the same time.
        let _ = fd::set_pipe_size(data_w.as_raw_fd(), DATA_PIPE_SIZE);
        if capacity > 65536 {
            let got = fd::set_pipe_size(slots_w.as_raw_fd(), capacity).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("ProcessQueue capacity {capacity} needs a pipe buffer that large: {e}"),
                )
            })?;
            debug_assert!(got >= capacity);
        }
        fill(slots_w.as_raw_fd(), capacity)?;
        fill(wlock_w.as_raw_fd(), 1)?;
        fill(rlock_w.as_raw_fd(), 1)?;
        let shared = SharedMem::new(4096)?;
        Ok(ProcessQueue {
            capacity,
            data_r,
            data_w,
            slots_r,
            slots_w,
            wlock_r,
            wlock_w,
            rlock_r,
            rlock_w,
            shared,
            _items: PhantomData,
        })
    }

    fn count(&self) -> &AtomicUsize {
        // SAFETY: the mapping is page aligned, at least one page long, zeroed
        // at creation (a valid AtomicUsize of 0), lives as long as `self`, and
        // is only ever accessed through atomics, in every process.
        unsafe { &*self.shared.as_ptr().cast::<AtomicUsize>() }
    }

    /// The capacity given at creation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items in the queue (approximate while other processes use it).
    pub fn len(&self) -> usize {
        self.count().load(Ordering::SeqCst)
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

        let slot = match acquire(&self.slots_r, &self.slots_w, wait) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(Put::Full(v)),
            Err(e) => return Err(Put::Io(e)),
        };
        // The slot is ours: wait for the writers' lock as long as it takes
        // (another writer is busy writing a frame).
        let lock = match acquire(&self.wlock_r, &self.wlock_w, Wait::Forever) {
            Ok(t) => t.expect("no deadline"),
            Err(e) => return Err(Put::Io(e)),
        };
        self.count().fetch_add(1, Ordering::SeqCst);
        if let Err(e) = write_frame(self.data_w.as_raw_fd(), &frame) {
            self.count().fetch_sub(1, Ordering::SeqCst);
            return Err(Put::Io(e));
        }
        drop(lock);
        std::mem::forget(slot); // the slot now belongs to the item
        Ok(())
    }

    /// `Ok(None)`: empty (nothing came before the wait ran out).
    fn get_deadline(&self, wait: Wait) -> io::Result<Option<T>> {
        let Some(lock) = acquire(&self.rlock_r, &self.rlock_w, wait)? else {
            return Ok(None);
        };
        let Some(payload) = read_frame(self.data_r.as_raw_fd(), wait)? else {
            return Ok(None);
        };
        self.count().fetch_sub(1, Ordering::SeqCst);
        drop(lock);
        release(self.slots_w.as_raw_fd())?;
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
            .field("len", &self.shared_len())
            .finish()
    }
}

impl<T> ProcessQueue<T> {
    fn shared_len(&self) -> usize {
        // SAFETY: as in `count`.
        unsafe { &*self.shared.as_ptr().cast::<AtomicUsize>() }.load(Ordering::SeqCst)
    }
}

/// How long a call may wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Until(Instant),
    Forever,
}

impl From<Option<Duration>> for Wait {
    fn from(t: Option<Duration>) -> Wait {
        match t {
            None => Wait::Forever,
            Some(Duration::ZERO) => Wait::No,
            Some(d) => Wait::until(d),
        }
    }
}

impl Wait {
    fn until(d: Duration) -> Wait {
        match Instant::now().checked_add(d) {
            Some(t) => Wait::Until(t),
            None => Wait::Forever,
        }
    }

    fn error(self, full_or_empty: &str, timed_out: &str) -> io::Error {
        match self {
            Wait::No => io::Error::new(io::ErrorKind::WouldBlock, full_or_empty.to_owned()),
            _ => io::Error::new(io::ErrorKind::TimedOut, timed_out.to_owned()),
        }
    }

    /// Waits for `fd`; false when the wait is over (no waiting, or deadline).
    fn wait_for(self, fd: RawFd, interest: Interest) -> io::Result<bool> {
        match self {
            Wait::No => Ok(false),
            Wait::Until(t) => wait_fd(fd, interest, Some(t)),
            Wait::Forever => wait_fd(fd, interest, None),
        }
    }
}

/// A token taken from a token pipe; given back on drop.
struct Token {
    w: RawFd,
}

impl Drop for Token {
    fn drop(&mut self) {
        // A token pipe always has room for the tokens taken from it.
        let _ = release(self.w);
    }
}

/// Takes one token from the pipe `r` (whose write end is `w`): `None` if
/// the wait ran out.
fn acquire(r: &OwnedFd, w: &OwnedFd, wait: Wait) -> io::Result<Option<Token>> {
    let mut b = [0u8; 1];
    loop {
        match fd::read(r.as_raw_fd(), &mut b) {
            Ok(1) => return Ok(Some(Token { w: w.as_raw_fd() })),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "token pipe closed",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait.wait_for(r.as_raw_fd(), Interest::Readable)? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn release(w: RawFd) -> io::Result<()> {
    match fd::write(w, &[0], false)? {
        1 => Ok(()),
        _ => Err(io::Error::other("token pipe refused a token")),
    }
}

fn fill(w: RawFd, n: usize) -> io::Result<()> {
    let zeros = [0u8; 4096];
    let mut left = n;
    while left > 0 {
        let k = fd::write(w, &zeros[..left.min(zeros.len())], false)?;
        left -= k;
    }
    Ok(())
}

/// Writes a whole frame; once the first byte is out, it finishes whatever
/// happens (see the module docs).
fn write_frame(fd: RawFd, frame: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < frame.len() {
        match fd::write(fd, &frame[done..], false) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if done == 0 {
                    wait_fd(fd, Interest::Writable, None)?;
                } else {
                    wait_committed(fd, Interest::Writable)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one whole frame's payload: `None` if `wait` ran out before its
/// first byte arrived.
fn read_frame(fd: RawFd, wait: Wait) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; frame::HEADER];
    let mut got = 0;
    while got < frame::HEADER {
        match fd::read(fd, &mut header[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "queue pipe closed",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if got > 0 {
                    wait_committed(fd, Interest::Readable)?;
                } else if !wait.wait_for(fd, Interest::Readable)? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let len = frame::body_len(header);
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match fd::read(fd, &mut payload[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "queue pipe closed",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_committed(fd, Interest::Readable)?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(payload))
}

/// Waits for `fd` in the middle of a frame: a pending cancellation must not
/// tear it, so it is left pending and the wait finishes by blocking the
/// thread in `poll` (the peer is mid-frame too and will make progress).
fn wait_committed(fd: RawFd, interest: Interest) -> io::Result<()> {
    let Ok(dup) = fd::dup(fd) else {
        return poll_wait(fd, interest, None).map(drop);
    };
    let Ok(reg) = Registration::new(dup.as_raw_fd()) else {
        return poll_wait(fd, interest, None).map(drop);
    };
    match reg.wait_raw(interest, None) {
        Ok(()) => Ok(()),
        Err(WaitError::Cancelled) => {
            drop(reg);
            poll_wait(fd, interest, None).map(drop)
        }
        Err(e) => Err(io::Error::other(e)),
    }
}
