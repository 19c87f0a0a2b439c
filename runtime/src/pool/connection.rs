//! A two-way channel between processes: `multiprocessing.Pipe()`
//! ([`pipe`], [`Connection`]).
//!
//! # Design
//!
//! ```text
//!   end 0 ──socket──▶ frames [len: u32 LE][postcard bytes] ──▶ end 1   (direction 0)
//!   end 0 ◀── ... ◀── end 1                                           (direction 1)
//!   shared page: per direction a send lock, a recv lock, "writing",
//!                "reading" and "torn" flags; one doorbell for the locks
//! ```
//!
//! A pipe is a connected `AF_UNIX` stream socket pair (non-blocking), a
//! page of shared memory and a [`Doorbell`], all made by [`pipe`] before
//! the children are forked. A message is one frame of the shared frame
//! codec. Each direction has a send lock and a recv lock (the lock words of
//! `process_lock.rs`): one writer and one reader at a time, whatever
//! process, thread or coroutine they are, so frames never interleave and
//! each is read whole by one reader, even when several processes use the
//! same end. Readers read exactly one frame (never ahead), so an end shared
//! by several processes never delivers a message twice.
//!
//! # Cancellation
//!
//! A `kill` or `timeout` that reaches `send` or `recv` before the first
//! byte of a message leaves the pipe as it was. Once a message has started
//! it must be finished, or every later reader would read garbage: the
//! cancelled call hands the rest of the message to a coroutine of its own
//! on the same hub (it keeps the lock) and unwinds at once. So a send
//! cancelled in its middle still delivers its message; a recv cancelled in
//! its middle reads the message to its end and keeps it for the next
//! `recv` of this process (any thread): nothing is lost, though its place
//! in the order may change. A call made by a destructor while its thread
//! unwinds is not unwound again: it fails with an error instead.
//!
//! # Failing instead of hanging
//!
//! If a message can never be finished (the process on the other side died
//! in its middle, or the finishing coroutine was killed), that direction is
//! marked *torn* and shut down: every later send and recv of that direction
//! fails with an error saying so, in every process. A process that dies
//! between messages while holding a lock is simply replaced by the next
//! sender or reader (see `process_lock.rs`).
//!
//! # End of file
//!
//! A `recv` whose peer end is closed in every process (dropped, or its
//! process exited) fails with `UnexpectedEof` (Python's `EOFError`); a
//! `send` to it fails with `BrokenPipe`. As with Python's fork start
//! method, a child inherits every fd its parent had, so the parent's own
//! end stays open in a child forked after the pipe was made, until that
//! child exits.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::doorbell::{Doorbell, SLICE, Waited, wait_fd};
use super::frame;
use super::process::poll_wait;
use super::process_lock::LockWord;
use crate::hub::Mode;
use crate::park;
use crate::reactor::Interest;
use crate::sys::atfork;
use crate::sys::fd;
use crate::sys::shm::{Shared, SharedState};

/// The shared page; index `d` is direction `d` (data sent by end `d`).
#[repr(C)]
struct Page {
    send_lock: [LockWord; 2],
    recv_lock: [LockWord; 2],
    /// A message of this direction has started and is not complete.
    writing: [AtomicU32; 2],
    reading: [AtomicU32; 2],
    /// The direction is unusable (see the module docs).
    torn: [AtomicU32; 2],
}

// SAFETY: only atomics (lock words are atomics); all zero is "both
// directions free and whole".
unsafe impl SharedState for Page {}

/// What both ends (and their finishing coroutines) share in one process.
struct Common {
    page: Shared<Page>,
    bell: Doorbell,
}

/// Messages whose `recv` was cancelled in their middle and that were read
/// to the end since, for the next `recv` of this process.
struct Rescued {
    /// The fork generation they belong to: a forked child's copy is empty.
    generation: u64,
    items: VecDeque<Vec<u8>>,
}

/// One end, untyped: everything but serialization. Cloned into the
/// coroutines that finish cancelled messages.
#[derive(Clone)]
struct End {
    sock: Arc<OwnedFd>,
    common: Arc<Common>,
    /// 0 or 1: this end sends direction `side` and receives `1 - side`.
    side: usize,
    rescued: Arc<Mutex<Rescued>>,
}

/// Creates a pipe: two connected [`Connection`] ends, each able to send
/// and receive (`multiprocessing.Pipe()`, duplex). Create it before
/// forking; give one end to the child (move it into its closure) and keep
/// the other.
///
/// ```
/// use moss::pool::{pipe, Process};
///
/// let (parent, child) = pipe::<String>().unwrap();
/// let p = Process::new(move || {
///     let question = child.recv().unwrap();
///     child.send(&format!("{question}? 42")).unwrap();
/// })
/// .start()
/// .unwrap();
/// parent.send(&"the answer".to_string()).unwrap();
/// assert_eq!(parent.recv().unwrap(), "the answer? 42");
/// assert_eq!(p.join().unwrap(), 0);
/// ```
pub fn pipe<T: Serialize + DeserializeOwned>() -> io::Result<(Connection<T>, Connection<T>)> {
    let (a, b) = fd::socketpair()?;
    fd::set_nonblocking(a.as_raw_fd(), true)?;
    fd::set_nonblocking(b.as_raw_fd(), true)?;
    let common = Arc::new(Common {
        page: Shared::new()?,
        bell: Doorbell::new()?,
    });
    let end = |sock, side| Connection {
        end: End {
            sock: Arc::new(sock),
            common: common.clone(),
            side,
            rescued: Arc::new(Mutex::new(Rescued {
                generation: atfork::generation(),
                items: VecDeque::new(),
            })),
        },
        _messages: PhantomData,
    };
    Ok((end(a, 0), end(b, 1)))
}

/// One end of a [`pipe`]: sends and receives `T` (any serde type) as whole
/// messages. `Send + Sync`: coroutines and threads of a process may use an
/// end at once, and so may several processes (each message is sent and
/// received whole).
///
/// Waits yield: a coroutine parks while its hub runs the others.
pub struct Connection<T> {
    end: End,
    _messages: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends `v` as one message, waiting while the pipe is full (a message
    /// larger than the socket buffer is written while the peer reads it).
    /// `InvalidInput` if `v` cannot be serialized or is 4 GiB or more,
    /// `BrokenPipe` if the other end is closed or the direction is torn.
    pub fn send(&self, v: &T) -> io::Result<()> {
        let mut frame = postcard::to_extend(v, frame::start()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot serialize the message: {e}"),
            )
        })?;
        frame::finish(&mut frame, "a message")?;
        self.end.send(frame)
    }

    /// Receives the next message, waiting as long as it takes.
    /// `UnexpectedEof` once the other end is closed and everything sent has
    /// been received; `InvalidData` if a message cannot be deserialized as
    /// `T` (the message is consumed, the pipe stays usable).
    pub fn recv(&self) -> io::Result<T> {
        match self.end.recv(None)? {
            Some(payload) => decode(&payload),
            None => unreachable!("no deadline"),
        }
    }

    /// [`recv`](Self::recv), waiting at most `d` for a message to start
    /// (`TimedOut` if none did; a message that has started is received
    /// whole). `Duration::ZERO` only takes what is there.
    pub fn recv_timeout(&self, d: Duration) -> io::Result<T> {
        match self.end.recv(Instant::now().checked_add(d))? {
            Some(payload) => decode(&payload),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for a message",
            )),
        }
    }

    /// Whether a message (or end of file) is there to receive, waiting at
    /// most `d` for one (Python's `poll(timeout)`; `Duration::ZERO` looks
    /// without waiting). Another reader of this end may take it first.
    pub fn poll(&self, d: Duration) -> bool {
        self.end.poll(Instant::now().checked_add(d))
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> io::Result<T> {
    postcard::from_bytes(payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot deserialize the message: {e}"),
        )
    })
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("end", &self.end.side)
            .field("fd", &self.end.sock.as_raw_fd())
            .finish()
    }
}

/// Which lock of a direction.
#[derive(Clone, Copy)]
enum Role {
    Send,
    Recv,
}

/// Holds a lock of a direction; unlocks when dropped (unless forgotten:
/// then a finishing coroutine unlocks).
struct Held<'a> {
    end: &'a End,
    dir: usize,
    role: Role,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.end.unlock(self.dir, self.role);
    }
}

impl End {
    fn page(&self) -> &Page {
        self.common.page.get()
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn lock_word(&self, dir: usize, role: Role) -> &LockWord {
        match role {
            Role::Send => &self.page().send_lock[dir],
            Role::Recv => &self.page().recv_lock[dir],
        }
    }

    /// Locks `role` of `dir`: `None` if `deadline` passed first, an error
    /// if the lock was taken over from a process that died in the middle
    /// of a message.
    fn lock(
        &self,
        dir: usize,
        role: Role,
        deadline: Option<Instant>,
    ) -> io::Result<Option<Held<'_>>> {
        let Some(owner_died) = self
            .lock_word(dir, role)
            .lock_until(&self.common.bell, deadline)
        else {
            return Ok(None);
        };
        let held = Held {
            end: self,
            dir,
            role,
        };
        let flag = match role {
            Role::Send => &self.page().writing[dir],
            Role::Recv => &self.page().reading[dir],
        };
        if owner_died && flag.load(Ordering::SeqCst) != 0 {
            self.tear(dir);
            return Err(torn_error());
        }
        self.check(dir)?;
        Ok(Some(held))
    }

    fn unlock(&self, dir: usize, role: Role) {
        self.lock_word(dir, role).unlock(&self.common.bell);
    }

    fn check(&self, dir: usize) -> io::Result<()> {
        if self.page().torn[dir].load(Ordering::SeqCst) != 0 {
            return Err(torn_error());
        }
        Ok(())
    }

    /// Marks direction `dir` torn and shuts it down from this end, so that
    /// the other side's waits end (see the module docs).
    fn tear(&self, dir: usize) {
        self.page().torn[dir].store(1, Ordering::SeqCst);
        let how = if dir == self.side {
            Shutdown::Write
        } else {
            Shutdown::Read
        };
        let _ = fd::shutdown(self.fd(), how);
    }

    /// Whether the process holding the other role's lock of `dir` died in
    /// the middle of a message.
    fn peer_died(&self, dir: usize, peer: Role) -> bool {
        let flag = match peer {
            Role::Send => &self.page().writing[dir],
            Role::Recv => &self.page().reading[dir],
        };
        flag.load(Ordering::SeqCst) != 0 && self.lock_word(dir, peer).holder_gone()
    }

    // ---- sending ----

    fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        let dir = self.side;
        self.check(dir)?;
        let held = self.lock(dir, Role::Send, None)?.expect("no deadline");
        let mut w = FrameWrite {
            end: self.clone(),
            frame,
            done: 0,
        };
        loop {
            match w.step() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(e),
            }
            let slice = Some(Instant::now() + SLICE);
            match wait_fd(self.fd(), Interest::Writable, slice, Mode::Fallible) {
                Waited::Ready => {}
                Waited::TimedOut => {
                    if self.peer_died(dir, Role::Recv) {
                        self.tear(dir);
                        return Err(torn_error());
                    }
                }
                Waited::Cancelled => {
                    if w.done > 0 {
                        // Finish it in a coroutine of its own, which keeps
                        // (and then releases) the lock.
                        std::mem::forget(held);
                        crate::spawn(move || w.finish());
                    }
                    return Err(cancelled());
                }
            }
        }
    }

    // ---- receiving ----

    fn take_rescued(&self) -> Option<Vec<u8>> {
        let mut r = self.rescued.lock().unwrap_or_else(|e| e.into_inner());
        let generation = atfork::generation();
        if r.generation != generation {
            // Inherited from the parent: those messages are the parent's.
            r.generation = generation;
            r.items.clear();
        }
        r.items.pop_front()
    }

    /// One message's payload; `None` if `deadline` passed before one started.
    fn recv(&self, deadline: Option<Instant>) -> io::Result<Option<Vec<u8>>> {
        let dir = 1 - self.side;
        if let Some(p) = self.take_rescued() {
            return Ok(Some(p));
        }
        self.check(dir)?;
        let Some(held) = self.lock(dir, Role::Recv, deadline)? else {
            return Ok(None);
        };
        // A finishing coroutine of this process may have left one meanwhile.
        if let Some(p) = self.take_rescued() {
            return Ok(Some(p));
        }
        let mut r = FrameRead {
            end: self.clone(),
            header: [0; frame::HEADER],
            got_header: 0,
            payload: Vec::new(),
            got: 0,
        };
        loop {
            if r.step()? {
                return Ok(Some(std::mem::take(&mut r.payload)));
            }
            let started = r.got_header > 0;
            let slice = Instant::now() + SLICE;
            let until = match deadline {
                Some(d) if !started => d.min(slice),
                _ => slice,
            };
            match wait_fd(self.fd(), Interest::Readable, Some(until), Mode::Fallible) {
                Waited::Ready => {}
                Waited::TimedOut => {
                    if !started && deadline.is_some_and(|d| d <= Instant::now()) {
                        return Ok(None);
                    }
                    if started && self.peer_died(dir, Role::Send) {
                        self.tear(dir);
                        return Err(torn_error());
                    }
                }
                Waited::Cancelled => {
                    if started {
                        std::mem::forget(held);
                        crate::spawn(move || r.finish());
                    }
                    return Err(cancelled());
                }
            }
        }
    }

    fn poll(&self, deadline: Option<Instant>) -> bool {
        {
            let r = self.rescued.lock().unwrap_or_else(|e| e.into_inner());
            if r.generation == atfork::generation() && !r.items.is_empty() {
                return true;
            }
        }
        // A look first: a wait through the hub with a past deadline would
        // not look at all.
        if poll_wait(self.fd(), Interest::Readable, Some(Instant::now())).unwrap_or(true) {
            return true;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return false;
        }
        match wait_fd(self.fd(), Interest::Readable, deadline, Mode::Fallible) {
            Waited::Ready => true,
            Waited::TimedOut => false,
            Waited::Cancelled if park::cancel_deliverable() => park::deliver_cancel(),
            Waited::Cancelled => false, // in a destructor during an unwind
        }
    }
}

fn torn_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the pipe is broken: a message was left half-sent or half-received \
         (a process died in its middle, or finishing it was cancelled)",
    )
}

/// A `send` or `recv` cancelled: unwinds the caller (which may unwind),
/// else the error of a call cancelled in a destructor during an unwind.
fn cancelled() -> io::Error {
    if park::cancel_deliverable() {
        park::deliver_cancel();
    }
    io::Error::other("cancelled (a kill or timeout reached a call made while unwinding)")
}

fn eof_error(started: bool) -> io::Error {
    let what = if started {
        "the other end of the pipe was closed in the middle of a message"
    } else {
        "the other end of the pipe was closed"
    };
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}

/// A message being sent; the caller holds the send lock.
struct FrameWrite {
    end: End,
    frame: Vec<u8>,
    /// Bytes written so far.
    done: usize,
}

impl FrameWrite {
    /// One write: `Ok(true)` when the message is complete, `Ok(false)` if
    /// the socket is full.
    fn step(&mut self) -> io::Result<bool> {
        let dir = self.end.side;
        let flag = &self.end.page().writing[dir];
        loop {
            // Set before the first byte can leave: a writer killed at any
            // point after it is known to have been in the middle.
            flag.store(1, Ordering::SeqCst);
            match fd::write(self.end.fd(), &self.frame[self.done..], true) {
                Ok(n) => {
                    self.done += n;
                    if self.done == self.frame.len() {
                        flag.store(0, Ordering::SeqCst);
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.done == 0 {
                        flag.store(0, Ordering::SeqCst);
                    }
                    return Ok(false);
                }
                Err(e) => {
                    if self.done > 0 {
                        self.end.tear(dir);
                    }
                    flag.store(0, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
    }

    /// Finishes a cancelled send (in a coroutine of its own), then releases
    /// the send lock. A failure (a dead reader, a kill) tears the direction.
    fn finish(mut self) {
        let dir = self.end.side;
        let end = self.end.clone();
        let _unlock = Held {
            end: &end,
            dir,
            role: Role::Send,
        };
        loop {
            match self.step() {
                Ok(true) | Err(_) => return,
                Ok(false) => {}
            }
            match wait_fd(
                self.end.fd(),
                Interest::Writable,
                Some(Instant::now() + SLICE),
                Mode::Fallible,
            ) {
                Waited::Ready => {}
                Waited::TimedOut if !self.end.peer_died(dir, Role::Recv) => {}
                Waited::TimedOut | Waited::Cancelled => {
                    self.end.tear(dir);
                    self.end.page().writing[dir].store(0, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// A message being received; the caller holds the recv lock.
struct FrameRead {
    end: End,
    header: [u8; frame::HEADER],
    got_header: usize,
    payload: Vec<u8>,
    got: usize,
}

impl FrameRead {
    /// Reads what is there: `Ok(true)` when the message is complete,
    /// `Ok(false)` if the socket is empty. Never reads past the message.
    fn step(&mut self) -> io::Result<bool> {
        let dir = 1 - self.end.side;
        let flag = &self.end.page().reading[dir];
        loop {
            let in_header = self.got_header < frame::HEADER;
            let buf = if in_header {
                &mut self.header[self.got_header..]
            } else {
                &mut self.payload[self.got..]
            };
            let started = self.got_header > 0;
            // Set before the first byte can be taken (see `FrameWrite::step`).
            flag.store(1, Ordering::SeqCst);
            // A zero-length body is complete without a read.
            let n = if buf.is_empty() {
                0
            } else {
                match fd::read(self.end.fd(), buf) {
                    Ok(0) => {
                        if started {
                            self.end.tear(dir);
                        }
                        flag.store(0, Ordering::SeqCst);
                        return Err(eof_error(started));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !started {
                            flag.store(0, Ordering::SeqCst);
                        }
                        return Ok(false);
                    }
                    Err(e) => {
                        if started {
                            self.end.tear(dir);
                        }
                        flag.store(0, Ordering::SeqCst);
                        return Err(e);
                    }
                }
            };
            if in_header {
                self.got_header += n;
                if self.got_header == frame::HEADER {
                    self.payload = vec![0; frame::body_len(self.header)];
                }
            } else {
                self.got += n;
            }
            if self.got_header == frame::HEADER && self.got == self.payload.len() {
                flag.store(0, Ordering::SeqCst);
                return Ok(true);
            }
        }
    }

    /// Finishes a cancelled recv (in a coroutine of its own): keeps the
    /// message for the next `recv` of this process, then releases the recv
    /// lock. A failure (a dead writer, a kill) tears the direction.
    fn finish(mut self) {
        let dir = 1 - self.end.side;
        let end = self.end.clone();
        let _unlock = Held {
            end: &end,
            dir,
            role: Role::Recv,
        };
        loop {
            match self.step() {
                Ok(true) => {
                    let payload = std::mem::take(&mut self.payload);
                    let mut r = end.rescued.lock().unwrap_or_else(|e| e.into_inner());
                    r.items.push_back(payload);
                    return;
                }
                Err(_) => return,
                Ok(false) => {}
            }
            match wait_fd(
                end.fd(),
                Interest::Readable,
                Some(Instant::now() + SLICE),
                Mode::Fallible,
            ) {
                Waited::Ready => {}
                Waited::TimedOut if !end.peer_died(dir, Role::Send) => {}
                Waited::TimedOut | Waited::Cancelled => {
                    end.tear(dir);
                    end.page().reading[dir].store(0, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}
