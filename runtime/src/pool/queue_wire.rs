//! The kernel side of a [`ProcessQueue`](super::ProcessQueue): pipes, token
//! semaphores, frames that are never torn, and a shared page.
//!
//! ```text
//!   data   pipe: frames  [len: u32 LE][postcard bytes]  (FIFO of items)
//!   slots  pipe: one byte per free slot   (starts with `capacity` bytes)
//!   wlock  pipe: one byte = the writers' lock on `data`
//!   rlock  pipe: one byte = the readers' lock on `data`
//!   shared page: item count, "broken" flag, pids holding wlock and rlock
//! ```
//!
//! A pipe holding *k* one-byte tokens is a counting semaphore that works
//! across processes: reading one byte is atomic, and "a token is available"
//! is plain readability, which the hub can wait for. Every fd is
//! non-blocking; a waiter tries first and on `EAGAIN` waits through its hub
//! (a coroutine parks, a root runs the hub; a thread without a hub blocks in
//! `poll`, as nothing of it could run meanwhile).
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
//! every waiter is woken (a token in each lock pipe, a byte in the data
//! pipe after draining it) and every call, in every process, fails with an
//! error saying so. Waits in the middle of a frame and waits for a lock
//! check every [`SLICE`] whether the process holding the other side is
//! still alive (a recycled pid reads as alive). A reader that died while it
//! held the readers' lock but had read nothing of a frame (killed while it
//! waited for an item, the common case) took nothing: the first waiter to
//! notice gives the lock back in its place, and the queue goes on. So
//! does a writer that died holding the writers' lock before it wrote a byte
//! of its frame (killed while it waited for room in a full pipe): its item
//! is uncounted and its slot given back too.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::doorbell::{SLICE, Waited, wait_fd};
use super::frame;
use crate::hub::Mode;
use crate::park;
use crate::reactor::Interest;
use crate::sys::fd;
use crate::sys::process;
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
    /// [`UNWRITTEN`] while the holder of `wlock` has counted its item but
    /// written none of it (one word: the item and the flag change together).
    count: AtomicUsize,
    /// 0, or why the queue can no longer be used (`TORN`, `HOLDER_DIED`).
    broken: AtomicUsize,
    /// The pid holding `wlock`, 0 if none.
    writer: AtomicI32,
    /// The pid holding `rlock`, 0 if none.
    reader: AtomicI32,
    /// The holder of `rlock` may have read part of a frame: set before its
    /// first read of a frame, cleared once that read found nothing or the
    /// frame is whole. A reader that died while it was clear held the lock
    /// without taking anything: the lock is given back in its place
    /// instead of breaking the queue.
    reading: AtomicBool,
}

const TORN: usize = 1;
const HOLDER_DIED: usize = 2;

/// In `Page::count`: the writer holding `wlock` counted its item and has
/// written no byte of it. A writer that died while it was set took a slot
/// and added an item, and that is all: both are given back with the lock
/// instead of breaking the queue.
const UNWRITTEN: usize = 1 << (usize::BITS - 1);

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

/// The pipes and the shared page of one queue, plus this process's items
/// rescued from cancelled gets.
pub(crate) struct Wire {
    data_r: OwnedFd,
    data_w: OwnedFd,
    slots_r: OwnedFd,
    slots_w: OwnedFd,
    wlock_r: OwnedFd,
    wlock_w: OwnedFd,
    rlock_r: OwnedFd,
    rlock_w: OwnedFd,
    shared: SharedMem,
    /// Payloads of items whose get was cancelled in their middle and that
    /// were read to the end during the unwind; still counted and holding
    /// their slots. The next get of this process takes them first.
    rescued: Mutex<VecDeque<Vec<u8>>>,
}

impl Wire {
    pub(crate) fn new(capacity: usize) -> io::Result<Wire> {
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
        Ok(Wire {
            data_r,
            data_w,
            slots_r,
            slots_w,
            wlock_r,
            wlock_w,
            rlock_r,
            rlock_w,
            shared,
            rescued: Mutex::new(VecDeque::new()),
        })
    }

    fn page(&self) -> &Page {
        // SAFETY: the mapping is page aligned, a page long (larger than
        // `Page`), zeroed at creation (a valid `Page`), lives as long as
        // `self`, and is only accessed through atomics, in every process.
        unsafe { &*self.shared.as_ptr().cast::<Page>() }
    }

    /// Items in the queue (approximate while other processes use it).
    pub(crate) fn len(&self) -> usize {
        self.page().count.load(Ordering::SeqCst) & !UNWRITTEN
    }

    /// Writes the complete `frame` as one item. `Ok(false)`: no free slot
    /// came within `wait`.
    pub(crate) fn put(&self, frame: &[u8], wait: Wait) -> io::Result<bool> {
        self.check()?;
        let Some(slot) = self.take_token(&self.slots_r, &self.slots_w, wait, None)? else {
            return Ok(false);
        };
        // The slot is ours: wait for the writers' lock as long as it takes
        // (another writer is busy writing a frame).
        let holder = Some(&self.page().writer);
        let lock = self
            .take_token(&self.wlock_r, &self.wlock_w, Wait::Forever, holder)?
            .expect("no deadline");
        self.page().count.fetch_add(1 | UNWRITTEN, Ordering::SeqCst);
        let mut w = FrameWrite {
            wire: self,
            frame,
            done: 0,
            slot: Some(slot),
            lock: Some(lock),
        };
        w.run()?;
        Ok(true)
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
            self.page().count.fetch_sub(1, Ordering::SeqCst);
            release(self.slots_w.as_raw_fd())?;
            return Ok(Some(payload));
        }
        let holder = Some(&self.page().reader);
        let Some(lock) = self.take_token(&self.rlock_r, &self.rlock_w, wait, holder)? else {
            return Ok(None);
        };
        // Declared after `lock`: an unwinding get finishes its frame while
        // it still holds the readers' lock.
        let mut r = FrameRead::new(self);
        let Some(payload) = r.run(wait)? else {
            return Ok(None);
        };
        // The item is uncounted and its slot back before `r` clears
        // `reading`: a reader that dies after that holds nothing but the
        // lock, which a waiter may then give back in its place.
        self.page().count.fetch_sub(1, Ordering::SeqCst);
        let slot = release(self.slots_w.as_raw_fd());
        drop(r);
        drop(lock);
        slot?;
        Ok(Some(payload))
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
        for w in [&self.slots_w, &self.wlock_w, &self.rlock_w] {
            let _ = fd::write(w.as_raw_fd(), &[0], false);
        }
        // Room for a writer waiting mid-frame, a byte for waiting readers.
        let mut buf = [0u8; 64 * 1024];
        while matches!(fd::read(self.data_r.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        let _ = fd::write(self.data_w.as_raw_fd(), &[0], false);
    }

    /// Takes one token from the pipe `r` (write end `w`): `None` if `wait`
    /// ran out. `holder` (a lock's pid slot) records this process as the
    /// holder, and while waiting, a holder that died breaks the queue.
    /// A cancellation unwinds the caller.
    fn take_token<'a>(
        &'a self,
        r: &OwnedFd,
        w: &'a OwnedFd,
        wait: Wait,
        holder: Option<&'a AtomicI32>,
    ) -> io::Result<Option<Token<'a>>> {
        let mut b = [0u8; 1];
        loop {
            self.check()?;
            match fd::read(r.as_raw_fd(), &mut b) {
                Ok(1) => {
                    let t = Token {
                        w: w.as_raw_fd(),
                        holder,
                    };
                    if let Some(h) = holder {
                        h.store(my_pid(), Ordering::SeqCst);
                    }
                    // A token handed out by `mark_broken` wakes us only.
                    self.check()?;
                    return Ok(Some(t));
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "token pipe closed",
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Wait::No = wait {
                        return Ok(None);
                    }
                    match self.wait(r.as_raw_fd(), Interest::Readable, wait.deadline(), holder)? {
                        Waited::Ready => {}
                        Waited::TimedOut => return Ok(None),
                        Waited::Cancelled => park::deliver_cancel(),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until `fd` is ready for `interest` or `deadline`, never
    /// unwinding. With `holder`, wakes every [`SLICE`] to check that the
    /// process holding that lock still lives (a dead one breaks the queue:
    /// the call fails).
    fn wait(
        &self,
        fd: RawFd,
        interest: Interest,
        deadline: Option<Instant>,
        holder: Option<&AtomicI32>,
    ) -> io::Result<Waited> {
        loop {
            self.check()?;
            let until = match holder {
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
                    if let Some(h) = holder
                        && let Some(dead) = dead_holder(h)
                    {
                        if self.give_back_for_dead(h, dead) {
                            continue; // the lock's token is back: wait on
                        }
                        self.mark_broken(HOLDER_DIED);
                        return Err(broken_error(HOLDER_DIED));
                    }
                }
                w => return Ok(w),
            }
        }
    }
}

impl Wire {
    /// `h`, a lock's holder slot, named `dead`, a process that died holding
    /// the lock. If it held nothing else (a reader that had read nothing of
    /// a frame; a writer that had written nothing of its item, which is
    /// uncounted and its slot given back), gives the lock back in its
    /// place. True if the lock is no longer `dead`'s (given back by this
    /// call or by another waiter); false if `dead` died in the middle of a
    /// frame: the queue must break.
    fn give_back_for_dead(&self, h: &AtomicI32, dead: i32) -> bool {
        let page = self.page();
        let reader = std::ptr::eq(h, &page.reader);
        let idle = if reader {
            !page.reading.load(Ordering::SeqCst)
        } else {
            page.count.load(Ordering::SeqCst) & UNWRITTEN != 0
        };
        // Read after `idle`: only a waiter that clears `h` changes what
        // `dead` left, so while `h` names it, `idle` is what it left.
        if h.load(Ordering::SeqCst) != dead {
            return true;
        }
        if !idle {
            return false;
        }
        if h.compare_exchange(dead, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return true; // another waiter gives it back
        }
        if reader {
            return release(self.rlock_w.as_raw_fd()).is_ok();
        }
        page.count.fetch_sub(1 | UNWRITTEN, Ordering::SeqCst);
        release(self.slots_w.as_raw_fd()).is_ok() && release(self.wlock_w.as_raw_fd()).is_ok()
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

fn my_pid() -> i32 {
    std::process::id() as i32
}

/// The process recorded in `holder`, if it has died without giving its
/// lock back.
fn dead_holder(holder: &AtomicI32) -> Option<i32> {
    let pid = holder.load(Ordering::SeqCst);
    (pid != 0 && pid != my_pid() && process::is_gone(pid)).then_some(pid)
}

/// A token taken from a token pipe; given back on drop (and the lock's
/// holder slot cleared).
struct Token<'a> {
    w: RawFd,
    holder: Option<&'a AtomicI32>,
}

impl Drop for Token<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.holder {
            h.store(0, Ordering::SeqCst);
        }
        // A token pipe always has room for the tokens taken from it.
        let _ = release(self.w);
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

/// One item being written, holding its slot and the writers' lock. Dropped
/// in the middle (an unwinding put), it finishes the frame first.
struct FrameWrite<'a> {
    wire: &'a Wire,
    frame: &'a [u8],
    done: usize,
    slot: Option<Token<'a>>,
    lock: Option<Token<'a>>,
}

impl FrameWrite<'_> {
    /// Writes the frame; a cancellation unwinds (and `drop` finishes).
    fn run(&mut self) -> io::Result<()> {
        while self.done < self.frame.len() {
            if self.step()? {
                continue;
            }
            let holder = (self.done > 0).then_some(&self.wire.page().reader);
            let fd = self.wire.data_w.as_raw_fd();
            match self.wire.wait(fd, Interest::Writable, None, holder)? {
                Waited::Cancelled => park::deliver_cancel(),
                Waited::Ready | Waited::TimedOut => {}
            }
        }
        Ok(())
    }

    /// One write; false if the pipe is full.
    fn step(&mut self) -> io::Result<bool> {
        self.wire.check()?;
        let fd = self.wire.data_w.as_raw_fd();
        let count = &self.wire.page().count;
        if self.done == 0 {
            // Before the write: a writer killed inside it may have written.
            count.fetch_and(!UNWRITTEN, Ordering::SeqCst);
        }
        match fd::write(fd, &self.frame[self.done..], false) {
            Ok(n) => {
                self.done += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.done == 0 {
                    count.fetch_or(UNWRITTEN, Ordering::SeqCst);
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
            let (fd, reader) = (self.wire.data_w.as_raw_fd(), &self.wire.page().reader);
            if let Waited::Cancelled = self.wire.wait(fd, Interest::Writable, None, Some(reader))? {
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
        if self.done == self.frame.len() {
            std::mem::forget(self.slot.take()); // the slot now belongs to the item
        } else {
            // Uncounted, and the flag cleared for the next holder.
            let _ = self
                .wire
                .page()
                .count
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    Some((c & !UNWRITTEN) - 1)
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
                let writer = &self.wire.page().writer;
                self.wire.wait(fd, Interest::Readable, None, Some(writer))?
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
            let (fd, writer) = (self.wire.data_r.as_raw_fd(), &self.wire.page().writer);
            if let Waited::Cancelled = self.wire.wait(fd, Interest::Readable, None, Some(writer))? {
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
