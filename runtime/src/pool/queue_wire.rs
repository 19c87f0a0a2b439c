//! The kernel side of a [`ProcessQueue`](super::ProcessQueue): a pipe of
//! frames that are never torn, and a shared page of lock words and counts.
//!
//! ```text
//!   data pipe:   frames  [len: u32 LE][postcard bytes]  (FIFO of items)
//!   shared page: item count (+ the writer's phase bits), "broken" flag,
//!                the writers' and the readers' lock words, "reading" flag
//!   three doorbells: the writers' lock freed, the readers' lock freed,
//!                room made (for the writers' lock holder only)
//! ```
//!
//! Each lock is one [`LockWord`]: 0 when free, else the identity (pid and
//! start time) of the process holding it, changed only by compare-and-swap.
//! Taking, giving back and taking over a lock is one atomic step, so a
//! process killed at any point holds the lock or does not: there is no
//! moment where a lock is taken but nobody is named as its holder. Waiters
//! wait on a [`Doorbell`] (see `doorbell.rs`), through their hub (a
//! coroutine parks, a root runs the hub; a thread without a hub blocks in
//! `poll`, as nothing of it could run meanwhile).
//!
//! The count of items is the queue's bound: a writer counts its item
//! (compare-and-swap below the capacity) while it holds the writers' lock,
//! so a writer killed while it waits for the lock or for room holds nothing.
//!
//! # Committed frames
//!
//! Once the first byte of a frame is written (or read), the frame must be
//! finished, or every later reader would read garbage. A `kill` or
//! `timeout` that reaches a put or get in the middle of a frame is
//! delivered as usual (the call unwinds), and the frame is finished by the
//! unwinding call itself, in the destructor of its [`FrameWrite`] or
//! [`FrameRead`], parking on the fd so that the hub keeps running: a peer
//! that is a coroutine of the same thread (the consumer of a large item,
//! say) makes progress meanwhile. So:
//!
//! * a put cancelled in the middle of its item still delivers the item;
//! * a get cancelled in the middle of an item finishes reading it and keeps
//!   it for the next get of this process (any thread), so no item is lost.
//!
//! # Failing instead of hanging
//!
//! A frame can never be finished when the finishing call is cancelled a
//! second time, or when the peer process died holding its lock (killed in
//! the middle of a put or get). Then the shared page is marked *broken*:
//! every waiter is woken (both doorbells rung, a byte in the data pipe
//! after draining it) and every call, in every process, fails with an
//! error saying so.
//!
//! Waits for a lock, and waits in the middle of a frame for the other side,
//! check every [`SLICE`] whether the process holding that lock still lives.
//! One that died is taken over (one compare-and-swap from its identity: one
//! process wins), and the winner repairs what the dead holder left, from
//! the phase it had published before each step:
//!
//! * a reader that had read nothing of a frame (`reading` clear: killed
//!   while it waited for an item, the common case) took nothing;
//! * a writer with [`UNWRITTEN`] set had counted its item and written none
//!   of it (killed while it waited for room in a full pipe): the count is
//!   given back;
//! * a writer with neither bit set had finished its frame or not begun one;
//! * a reader with `reading` set, or a writer with [`WRITING`] set, may
//!   have died inside a read or write of a frame's bytes: the queue breaks.
//!
//! Each repair is one atomic step, so a winner killed in its turn leaves
//! the next one the same work or none. The lock is then the winner's: a
//! waiter goes on with its call, a peer in the middle of a frame gives it
//! back.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::doorbell::{Doorbell, SLICE, Waited, wait_fd};
use super::frame;
use super::process_lock::LockWord;
use crate::hub::Mode;
use crate::park;
use crate::reactor::Interest;
use crate::sys::fd;
use crate::sys::shm::SharedMem;

/// The data pipe's buffer is grown to this where the system allows.
const DATA_PIPE_SIZE: usize = 1 << 20;

/// The shared page's layout.
///
/// # Invariants
/// Valid when zeroed (a fresh `SharedMem`); only accessed through atomics,
/// from every process that shares the mapping.
#[repr(C)]
struct Page {
    /// Items written or being written, and not yet taken by a get; plus
    /// the phase bits of the writers' lock holder, [`UNWRITTEN`] or
    /// [`WRITING`] (one word: the item and its phase change together).
    count: AtomicUsize,
    /// 0, or why the queue can no longer be used (`TORN`, `HOLDER_DIED`).
    broken: AtomicUsize,
    /// The writers' lock: one writer at a time writes frames.
    wlock: LockWord,
    /// The readers' lock: one reader at a time reads frames.
    rlock: LockWord,
    /// The holder of `rlock` may have read part of a frame: set before its
    /// first read of a frame, cleared once that read found nothing or the
    /// frame is whole and uncounted.
    reading: AtomicBool,
    /// Waiters for room: the holder of `wlock`, if it waits for room.
    room_waiters: AtomicU32,
}

const TORN: usize = 1;
const HOLDER_DIED: usize = 2;

/// In `Page::count`: the holder of the writers' lock counted its item and
/// has written no byte of it.
const UNWRITTEN: usize = 1 << (usize::BITS - 1);
/// In `Page::count`: the holder of the writers' lock may be inside a write
/// of its frame's bytes (set before its first write, cleared when the frame
/// is whole).
const WRITING: usize = 1 << (usize::BITS - 2);
/// The item count in `Page::count`.
const ITEMS: usize = !(UNWRITTEN | WRITING);

/// The largest capacity: the count's bits above it are phase bits.
const MAX_CAPACITY: usize = ITEMS / 2;

/// One of the two locks.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Writers,
    Readers,
}

/// How long a call may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
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
    pub(crate) fn until(d: Duration) -> Wait {
        match Instant::now().checked_add(d) {
            Some(t) => Wait::Until(t),
            None => Wait::Forever,
        }
    }

    /// The error of a call that found the queue full or empty (`No`) or
    /// timed out.
    pub(crate) fn error(self, full_or_empty: &str, timed_out: &str) -> io::Error {
        match self {
            Wait::No => io::Error::new(io::ErrorKind::WouldBlock, full_or_empty.to_owned()),
            _ => io::Error::new(io::ErrorKind::TimedOut, timed_out.to_owned()),
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Until(t) => Some(t),
            _ => None,
        }
    }
}

/// The pipe, doorbells and shared page of one queue, plus this process's
/// items rescued from cancelled gets.
pub(crate) struct Wire {
    capacity: usize,
    data_r: OwnedFd,
    data_w: OwnedFd,
    /// Rung when the writers' lock is given back; its waiters count in
    /// `wlock`.
    wbell: Doorbell,
    /// Rung when the readers' lock is given back; its waiters count in
    /// `rlock`.
    rbell: Doorbell,
    /// Rung when an item is taken, for the writer holding the lock that
    /// waits for room (apart from the lock's waiters: one that drained a
    /// ring meant for it could not take it in its place).
    room: Doorbell,
    shared: SharedMem,
    /// Payloads of items whose get was cancelled in their middle and that
    /// were read to the end during the unwind; still counted. The next get
    /// of this process takes them first.
    rescued: Mutex<VecDeque<Vec<u8>>>,
}

impl Wire {
    pub(crate) fn new(capacity: usize) -> io::Result<Wire> {
        if capacity > MAX_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ProcessQueue capacity {capacity} is above {MAX_CAPACITY}"),
            ));
        }
        let (data_r, data_w) = fd::pipe(true)?;
        // Best effort: a bigger buffer lets bigger items be put without a
        // consumer reading at the same time.
        let _ = fd::set_pipe_size(data_w.as_raw_fd(), DATA_PIPE_SIZE);
        Ok(Wire {
            capacity,
            data_r,
            data_w,
            wbell: Doorbell::new()?,
            rbell: Doorbell::new()?,
            room: Doorbell::new()?,
            shared: SharedMem::new(4096)?,
            rescued: Mutex::new(VecDeque::new()),
        })
    }

    fn page(&self) -> &Page {
        // SAFETY: the mapping is page aligned, a page long (larger than
        // `Page`), zeroed at creation (a valid `Page`), lives as long as
        // `self`, and is only accessed through atomics, in every process.
        unsafe { &*self.shared.as_ptr().cast::<Page>() }
    }

    fn word(&self, side: Side) -> &LockWord {
        match side {
            Side::Writers => &self.page().wlock,
            Side::Readers => &self.page().rlock,
        }
    }

    fn bell(&self, side: Side) -> &Doorbell {
        match side {
            Side::Writers => &self.wbell,
            Side::Readers => &self.rbell,
        }
    }

    /// Items in the queue (approximate while other processes use it).
    pub(crate) fn len(&self) -> usize {
        self.page().count.load(Ordering::SeqCst) & ITEMS
    }

    fn full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Writes the complete `frame` as one item. `Ok(false)`: no free slot
    /// came within `wait`.
    pub(crate) fn put(&self, frame: &[u8], wait: Wait) -> io::Result<bool> {
        self.check()?;
        let Some(lock) = self.lock(Side::Writers, wait)? else {
            return Ok(false);
        };
        if !self.take_slot(wait)? {
            return Ok(false);
        }
        let mut w = FrameWrite {
            wire: self,
            frame,
            done: 0,
            wait,
            lock: Some(lock),
        };
        w.run()
    }

    /// Counts an item if the queue has room, waiting within `wait` (the
    /// caller holds the writers' lock). Sets [`UNWRITTEN`] with the count.
    fn take_slot(&self, wait: Wait) -> io::Result<bool> {
        let count = &self.page().count;
        let attempt = |_| {
            if let Err(e) = self.check() {
                return Some(Err(e));
            }
            let c = count.load(Ordering::SeqCst);
            let room = c & ITEMS < self.capacity;
            (room
                && count
                    .compare_exchange(c, (c + 1) | UNWRITTEN, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok())
            .then_some(Ok(true))
        };
        if let Some(r) = attempt(false) {
            return r;
        }
        if let Wait::No = wait {
            return Ok(false);
        }
        let waiters = &self.page().room_waiters;
        self.room
            .wait_for(waiters, wait.deadline(), attempt)
            .unwrap_or(Ok(false))
    }

    /// Reads one item's payload: `Ok(None)` if none came within `wait`.
    pub(crate) fn get(&self, wait: Wait) -> io::Result<Option<Vec<u8>>> {
        self.check()?;
        let rescued = self
            .rescued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(payload) = rescued {
            self.uncount();
            return Ok(Some(payload));
        }
        let Some(lock) = self.lock(Side::Readers, wait)? else {
            return Ok(None);
        };
        // Declared after `lock`: an unwinding get finishes its frame while
        // it still holds the readers' lock.
        let mut r = FrameRead::new(self);
        let Some(payload) = r.run(wait)? else {
            return Ok(None);
        };
        // The item is uncounted before `r` clears `reading`: a reader that
        // dies after that holds nothing but the lock, which a waiter may
        // then take over without breaking the queue.
        self.uncount();
        drop(r);
        drop(lock);
        Ok(Some(payload))
    }

    /// One item taken: its room goes to a writer waiting for it.
    fn uncount(&self) {
        self.page().count.fetch_sub(1, Ordering::SeqCst);
        self.room.ring_if_waited(&self.page().room_waiters);
    }

    /// Takes `side`'s lock within `wait`: `None` if it ran out (or, for a
    /// writer that does not wait, the queue is full). A holder that died is
    /// taken over (see the module docs). A cancellation unwinds the caller,
    /// without the lock.
    fn lock(&self, side: Side, wait: Wait) -> io::Result<Option<Held<'_>>> {
        let word = self.word(side);
        // A writer that does not wait still waits for the lock while the
        // queue has room: its holder is writing, not waiting for room.
        let nowait_writer = side == Side::Writers && matches!(wait, Wait::No);
        let attempt = |slice_ended: bool| {
            if let Err(e) = self.check() {
                return Some(Err(e));
            }
            if word.try_lock() {
                return Some(Ok(Some(Held { wire: self, side })));
            }
            if nowait_writer && self.full() {
                return Some(Ok(None));
            }
            if !slice_ended {
                return None;
            }
            match self.take_over(side) {
                Ok(true) => Some(Ok(Some(Held { wire: self, side }))),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            }
        };
        if let Some(r) = attempt(false) {
            return r;
        }
        if matches!(wait, Wait::No) && !nowait_writer {
            return Ok(None);
        }
        self.bell(side)
            .wait_for(word.waiters(), wait.deadline(), attempt)
            .unwrap_or(Ok(None))
    }

    /// Takes `side`'s lock over if its holder died, and repairs what that
    /// holder left (see the module docs). `Ok(true)`: this process holds
    /// the lock now; an error if the dead holder may have been in the
    /// middle of a frame (the queue is broken).
    fn take_over(&self, side: Side) -> io::Result<bool> {
        let word = self.word(side);
        if !word.take_over() {
            return Ok(false);
        }
        let page = self.page();
        let torn = match side {
            Side::Readers => page.reading.load(Ordering::SeqCst),
            Side::Writers => {
                let c = page.count.load(Ordering::SeqCst);
                if c & UNWRITTEN != 0 {
                    // Only the holder changes the phase bits: one step.
                    page.count.fetch_sub(1 | UNWRITTEN, Ordering::SeqCst);
                }
                c & WRITING != 0
            }
        };
        if torn {
            self.mark_broken(HOLDER_DIED);
            word.unlock(self.bell(side));
            return Err(broken_error(HOLDER_DIED));
        }
        Ok(true)
    }

    /// Fails if the queue is broken.
    fn check(&self) -> io::Result<()> {
        match self.page().broken.load(Ordering::SeqCst) {
            0 => Ok(()),
            why => Err(broken_error(why)),
        }
    }

    /// Marks the queue broken for every process and wakes every waiter
    /// (see the module docs).
    fn mark_broken(&self, why: usize) {
        let _ = self
            .page()
            .broken
            .compare_exchange(0, why, Ordering::SeqCst, Ordering::SeqCst);
        for bell in [&self.wbell, &self.rbell, &self.room] {
            bell.ring();
        }
        // Room for a writer waiting mid-frame, a byte for waiting readers.
        let mut buf = [0u8; 64 * 1024];
        while matches!(fd::read(self.data_r.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        let _ = fd::write(self.data_w.as_raw_fd(), &[0], false);
    }

    /// Waits until `fd` is ready for `interest` or `deadline`, never
    /// unwinding. With `peer`, wakes every [`SLICE`] to check that the
    /// process holding that side's lock still lives: a dead one is taken
    /// over and its lock given back, or, if it died in the middle of a
    /// frame, the queue breaks and the call fails.
    fn wait(
        &self,
        fd: RawFd,
        interest: Interest,
        deadline: Option<Instant>,
        peer: Option<Side>,
    ) -> io::Result<Waited> {
        loop {
            self.check()?;
            let until = match peer {
                None => deadline,
                Some(_) => {
                    let slice = Instant::now() + SLICE;
                    Some(deadline.map_or(slice, |d| d.min(slice)))
                }
            };
            match wait_fd(fd, interest, until, Mode::Fallible) {
                Waited::TimedOut => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(Waited::TimedOut);
                    }
                    if let Some(side) = peer
                        && self.take_over(side)?
                    {
                        drop(Held { wire: self, side });
                    }
                }
                w => return Ok(w),
            }
        }
    }
}

fn broken_error(why: usize) -> io::Error {
    let what = match why {
        TORN => {
            "an item was left half-written or half-read (a put or get cancelled in its middle could not finish it)"
        }
        _ => "a process died in the middle of a put or get",
    };
    io::Error::other(format!(
        "the ProcessQueue is broken: {what}; it cannot be used any more"
    ))
}

/// One of the two locks, held by this process; given back on drop.
struct Held<'a> {
    wire: &'a Wire,
    side: Side,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let (w, side) = (self.wire, self.side);
        w.word(side).unlock(w.bell(side));
    }
}

/// One item being written, holding the writers' lock and counted. Dropped
/// in the middle (an unwinding put), it finishes the frame first.
struct FrameWrite<'a> {
    wire: &'a Wire,
    frame: &'a [u8],
    done: usize,
    /// The put's wait: it bounds the wait for pipe space before the first
    /// byte (after it, the frame is committed).
    wait: Wait,
    lock: Option<Held<'a>>,
}

impl FrameWrite<'_> {
    /// Writes the frame: `Ok(false)` if the pipe had no room for its first
    /// byte within the put's wait. A cancellation unwinds (and `drop`
    /// finishes a started frame).
    fn run(&mut self) -> io::Result<bool> {
        while self.done < self.frame.len() {
            if self.step()? {
                continue;
            }
            let fd = self.wire.data_w.as_raw_fd();
            let waited = if self.done > 0 {
                self.wire
                    .wait(fd, Interest::Writable, None, Some(Side::Readers))?
            } else if let Wait::No = self.wait {
                return Ok(false);
            } else {
                self.wire
                    .wait(fd, Interest::Writable, self.wait.deadline(), None)?
            };
            match waited {
                Waited::Cancelled => park::deliver_cancel(),
                Waited::TimedOut if self.done == 0 => return Ok(false),
                Waited::Ready | Waited::TimedOut => {}
            }
        }
        Ok(true)
    }

    /// One write; false if the pipe is full.
    fn step(&mut self) -> io::Result<bool> {
        self.wire.check()?;
        let fd = self.wire.data_w.as_raw_fd();
        let count = &self.wire.page().count;
        if self.done == 0 {
            // Before the write: a writer killed inside it may have written.
            count.fetch_xor(UNWRITTEN | WRITING, Ordering::SeqCst);
        }
        match fd::write(fd, &self.frame[self.done..], false) {
            Ok(n) => {
                self.done += n;
                if self.done == self.frame.len() {
                    count.fetch_and(!WRITING, Ordering::SeqCst);
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.done == 0 {
                    count.fetch_xor(UNWRITTEN | WRITING, Ordering::SeqCst);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Finishes a started frame without unwinding; fails on a second
    /// cancellation, a dead reader or a broken queue.
    fn finish(&mut self) -> io::Result<()> {
        while self.done < self.frame.len() {
            if self.step()? {
                continue;
            }
            let fd = self.wire.data_w.as_raw_fd();
            let waited = self
                .wire
                .wait(fd, Interest::Writable, None, Some(Side::Readers))?;
            if let Waited::Cancelled = waited {
                return Err(io::Error::other("cancelled again while finishing an item"));
            }
        }
        Ok(())
    }
}

impl Drop for FrameWrite<'_> {
    fn drop(&mut self) {
        let started = self.done > 0 && self.done < self.frame.len();
        if started && self.finish().is_err() {
            self.wire.mark_broken(TORN);
        }
        if self.done < self.frame.len() {
            // Uncounted, and the phase cleared for the next holder (the
            // room made is for the writers' lock holder: rung at unlock).
            let _ = self
                .wire
                .page()
                .count
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    Some((c & ITEMS) - 1)
                });
        }
        drop(self.lock.take());
    }
}

/// One item being read (the caller holds the readers' lock). Dropped in
/// the middle (an unwinding get), it reads the item to its end and keeps
/// it in the queue's rescued items.
struct FrameRead<'a> {
    wire: &'a Wire,
    header: [u8; frame::HEADER],
    /// Header bytes read so far.
    got_header: usize,
    payload: Vec<u8>,
    /// Payload bytes read so far.
    got: usize,
    /// The payload was handed to the caller.
    delivered: bool,
}

impl<'a> FrameRead<'a> {
    fn new(wire: &'a Wire) -> FrameRead<'a> {
        FrameRead {
            wire,
            header: [0; frame::HEADER],
            got_header: 0,
            payload: Vec::new(),
            got: 0,
            delivered: false,
        }
    }

    fn started(&self) -> bool {
        self.got_header > 0
    }

    fn complete(&self) -> bool {
        self.got_header == frame::HEADER && self.got == self.payload.len()
    }

    /// One read; false if the pipe is empty.
    fn step(&mut self) -> io::Result<bool> {
        self.wire.check()?;
        let fd = self.wire.data_r.as_raw_fd();
        let reading = &self.wire.page().reading;
        if !self.started() {
            // Before the read: a reader killed inside it may have taken bytes.
            reading.store(true, Ordering::SeqCst);
        }
        let buf = if self.got_header < frame::HEADER {
            &mut self.header[self.got_header..]
        } else {
            &mut self.payload[self.got..]
        };
        match fd::read(fd, buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue pipe closed",
            )),
            Ok(n) if self.got_header < frame::HEADER => {
                self.got_header += n;
                if self.got_header == frame::HEADER {
                    self.payload = vec![0; frame::body_len(self.header)];
                }
                Ok(true)
            }
            Ok(n) => {
                self.got += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !self.started() {
                    reading.store(false, Ordering::SeqCst);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one frame: `None` if `wait` ran out before its first byte. A
    /// cancellation unwinds (and `drop` finishes the frame).
    fn run(&mut self, wait: Wait) -> io::Result<Option<Vec<u8>>> {
        while !self.complete() {
            if self.step()? {
                continue;
            }
            let fd = self.wire.data_r.as_raw_fd();
            let waited = if self.started() {
                self.wire
                    .wait(fd, Interest::Readable, None, Some(Side::Writers))?
            } else if let Wait::No = wait {
                return Ok(None);
            } else {
                self.wire
                    .wait(fd, Interest::Readable, wait.deadline(), None)?
            };
            match waited {
                Waited::Ready => {}
                Waited::TimedOut if !self.started() => return Ok(None),
                Waited::TimedOut => {}
                Waited::Cancelled => park::deliver_cancel(),
            }
        }
        self.delivered = true;
        Ok(Some(std::mem::take(&mut self.payload)))
    }

    /// Reads a started frame to its end without unwinding; fails on a
    /// second cancellation, a dead writer or a broken queue.
    fn finish(&mut self) -> io::Result<()> {
        while !self.complete() {
            if self.step()? {
                continue;
            }
            let fd = self.wire.data_r.as_raw_fd();
            let waited = self
                .wire
                .wait(fd, Interest::Readable, None, Some(Side::Writers))?;
            if let Waited::Cancelled = waited {
                return Err(io::Error::other("cancelled again while finishing an item"));
            }
        }
        Ok(())
    }
}

impl Drop for FrameRead<'_> {
    fn drop(&mut self) {
        if !self.delivered && self.started() {
            match self.finish() {
                Ok(()) => self
                    .wire
                    .rescued
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(std::mem::take(&mut self.payload)),
                Err(_) => return self.wire.mark_broken(TORN),
            }
        }
        // The frame is whole, or none was started (dropped before the
        // readers' lock, which is declared first).
        self.wire.page().reading.store(false, Ordering::SeqCst);
    }
}
