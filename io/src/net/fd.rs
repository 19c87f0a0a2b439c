//! The shared engine of every moss socket: a kernel-non-blocking fd plus the
//! state that emulates std's blocking semantics on top of the hub.
//!
//! # Blocking emulation
//!
//! The kernel fd is always `O_NONBLOCK`. An operation tries its syscall first;
//! only on `EAGAIN` does it wait for readiness on the current thread's hub
//! and retry. What std would configure on the kernel socket is kept here:
//!
//! * `set_nonblocking(true)` is a user-level flag: operations return
//!   `WouldBlock` instead of waiting.
//! * read/write timeouts become the deadline of the readiness wait. When it
//!   passes the operation fails exactly as std's `SO_RCVTIMEO` does on Linux:
//!   `EAGAIN`, i.e. [`io::ErrorKind::WouldBlock`] (raw os error 11). A
//!   connect with a timeout fails with [`io::ErrorKind::TimedOut`], as std's
//!   `connect_timeout`.
//!
//! # Registration: per thread, lazy
//!
//! moss sockets are `Send + Sync` like their std twins, but a
//! `Registration` belongs to one thread's hub. So the socket holds no
//! registration; each thread keeps a table indexed by fd number, shared
//! with the monkey hooks (`registry.rs`), and an entry records which socket
//! (a process-unique `uid`) it was made for. The first wait of a socket on
//! a thread registers it there (edge-triggered, both directions, once);
//! later waits on that thread find it in O(1).
//!
//! * Dropping a socket releases its entry on the dropping thread (which
//!   deregisters it) before the fd is closed.
//! * A socket that moved to another thread leaves its old entry behind. The
//!   kernel drops the epoll interest when the fd is closed, and the stale
//!   entry is replaced (by uid mismatch) when that thread next sees the same
//!   fd number. Events it receives meanwhile only set readiness bits nobody
//!   reads.
//! * Hooked std code using the same fd on the same thread shares the entry
//!   (or takes it over), so a socket can go back and forth between std and
//!   moss types, and threads, without colliding with its own registration.
//!
//! # The cached registration
//!
//! The socket keeps the [`RegId`] its thread's table last gave it, and a
//! wait goes straight to the hub's slot it names: no table lookup per
//! operation. The hub finds the slot only if it holds it (ids are unique
//! in the process: one made on another thread, or before a `fork`, names
//! nothing here) and the table still lists it as the socket's alone (it
//! marks a registration the hooks share, or one it replaced, as not
//! exclusive). Otherwise the wait asks the table, as the first wait does,
//! and caches what it gets.
//!
//! # The drained hint (2 syscalls per echoed message)
//!
//! A stream read that returns fewer bytes than asked for emptied the kernel's
//! receive queue at that moment. The next read then waits for readiness
//! *first* instead of trying a `recv` that would almost surely fail with
//! `EAGAIN`. No wake-up can be lost: any data arriving after the drain raises
//! a new edge, which either wakes the waiter or sets the slot's ready bit
//! (then the wait returns at once). A stale ready bit costs one `EAGAIN`.
//! The hint is ignored while the hooks share the registration (their waits
//! may consume the edge).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moss_runtime::reactor::{Interest, Local, RegId, uring};

use super::sys;
use crate::registry::{self, Got, Owner};

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// The moss-side state of one socket fd. Field order matters in [`Evented`]:
/// this is dropped (deregistered) before the fd is closed.
pub(crate) struct IoState {
    fd: RawFd,
    uid: u64,
    nonblocking: AtomicBool,
    drained: AtomicBool,
    /// On an io_uring hub: the last operation was a send (see
    /// `ring_write_op`).
    sent: AtomicBool,
    /// Nanoseconds; 0 means none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    /// The [`RegId`] of the registration this thread's table last gave
    /// the socket (see "The cached registration"), in two parts: a torn
    /// pair names no registration.
    reg_key: AtomicUsize,
    reg_generation: AtomicU64,
}

/// A socket `S` whose fd is in non-blocking mode, with blocking emulation.
pub(crate) struct Evented<S: AsRawFd> {
    // Declared first: dropped (deregistered) before `io` closes the fd.
    state: IoState,
    io: S,
}

impl<S: AsRawFd> Evented<S> {
    /// Wraps `io`, switching its fd to non-blocking mode. An fd that was
    /// non-blocking already keeps std's non-blocking behaviour (moss's
    /// flag is set), so a round trip through the std type changes nothing.
    pub(crate) fn new(io: S) -> io::Result<Evented<S>> {
        let was_nonblocking = sys::set_nonblocking(io.as_raw_fd(), true)?;
        let e = Evented::from_nonblocking(io);
        e.set_nonblocking(was_nonblocking);
        Ok(e)
    }

    /// Wraps `io` whose fd is already non-blocking (fresh from `accept4` or
    /// `socket` with `SOCK_NONBLOCK`).
    pub(crate) fn from_nonblocking(io: S) -> Evented<S> {
        Evented {
            state: IoState {
                fd: io.as_raw_fd(),
                uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
                nonblocking: AtomicBool::new(false),
                drained: AtomicBool::new(false),
                sent: AtomicBool::new(false),
                read_timeout: AtomicU64::new(0),
                write_timeout: AtomicU64::new(0),
                reg_key: AtomicUsize::new(RegId::NONE.to_parts().0),
                reg_generation: AtomicU64::new(RegId::NONE.to_parts().1),
            },
            io,
        }
    }

    /// The wrapped socket (its fd is non-blocking: use the `*_op` methods
    /// for anything that may block).
    pub(crate) fn get(&self) -> &S {
        &self.io
    }

    /// Unwraps the socket in blocking mode (unless the user asked for
    /// non-blocking), deregistering it from this thread's hub.
    pub(crate) fn into_inner(self) -> S {
        let Evented { state, io } = self;
        let nonblocking = state.nonblocking.load(Ordering::Relaxed);
        drop(state);
        // Cannot fail on a valid fd; a std socket in the wrong mode would be
        // the only consequence.
        let _ = sys::set_nonblocking(io.as_raw_fd(), nonblocking);
        io
    }

    pub(crate) fn set_nonblocking(&self, on: bool) {
        self.state.nonblocking.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.state.read_timeout, d)
    }

    pub(crate) fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.state.write_timeout, d)
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        load_timeout(&self.state.read_timeout)
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        load_timeout(&self.state.write_timeout)
    }

    /// A read-side operation (`recv`, `accept`, `recv_from`, `peek`).
    /// `stream` enables the drained hint: the op returns a byte count and a
    /// short count means the queue was emptied. `peek` passes `false`.
    ///
    /// Inlined into each operation (as the waits under it are): one call
    /// and return fewer per message.
    #[inline(always)]
    pub(crate) fn read_op<T>(
        &self,
        stream: Option<usize>,
        op: impl FnMut(&S) -> io::Result<T>,
        len_of: impl Fn(&T) -> usize,
    ) -> io::Result<T> {
        self.read_op_in(Local::get(), stream, op, len_of)
    }

    /// [`read_op`](Self::read_op) with this thread's hub looked up already.
    #[inline(always)]
    pub(crate) fn read_op_in<T>(
        &self,
        here: Local,
        stream: Option<usize>,
        mut op: impl FnMut(&S) -> io::Result<T>,
        len_of: impl Fn(&T) -> usize,
    ) -> io::Result<T> {
        let st = &self.state;
        let nonblocking = st.nonblocking.load(Ordering::Relaxed);
        if !nonblocking {
            // Fairness: a reader that always finds data yields now and then
            // (see moss_runtime::coop); before the syscall, so a kill
            // delivered there loses no data.
            here.proceed();
        }
        let mut deadline = None;
        if stream.is_some() && !nonblocking && st.drained.load(Ordering::Relaxed) {
            deadline = self.deadline(&st.read_timeout);
            match here.wait(self.cached(), Interest::Readable, deadline) {
                Some(r) => eagain_on_timeout(r)?,
                None => self.drained_wait(deadline)?,
            }
        }
        loop {
            match op(&self.io) {
                Ok(v) => {
                    if let Some(asked) = stream {
                        let n = len_of(&v);
                        st.drained.store(n > 0 && n < asked, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !nonblocking => {
                    deadline = self.wait_again(here, Interest::Readable, deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The drained hint's wait when the cached registration did not serve
    /// (the first wait on this thread, or the hooks share the fd): skipped
    /// while the hooks share the registration.
    #[inline(never)]
    fn drained_wait(&self, deadline: Option<Instant>) -> io::Result<()> {
        let got = self.registration()?;
        if got.shared {
            return Ok(());
        }
        wait_for(&got, Interest::Readable, deadline)
    }

    /// A write-side operation (`send`, `send_to`).
    #[inline(always)]
    pub(crate) fn write_op<T>(&self, op: impl FnMut(&S) -> io::Result<T>) -> io::Result<T> {
        self.write_op_in(Local::get(), op)
    }

    /// [`write_op`](Self::write_op) with this thread's hub looked up
    /// already.
    #[inline(always)]
    pub(crate) fn write_op_in<T>(
        &self,
        here: Local,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> io::Result<T> {
        let st = &self.state;
        let nonblocking = st.nonblocking.load(Ordering::Relaxed);
        if !nonblocking {
            here.proceed();
        }
        let mut deadline = None;
        loop {
            match op(&self.io) {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !nonblocking => {
                    deadline = self.wait_again(here, Interest::Writable, deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// On an io_uring hub, runs `op` (one of `sys::ring`'s receives on this
    /// fd, given the deadline of the read timeout) instead of the
    /// readiness loop; `None` on an epoll hub and for a socket in moss's
    /// non-blocking mode, where the caller takes `read_op`/`write_op`. An
    /// expired timeout reads as `EAGAIN`, as on the readiness path.
    #[inline]
    pub(crate) fn ring_op<T>(
        &self,
        op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        self.ring_op_in(Local::get(), op)
    }

    /// [`ring_op`](Self::ring_op) with this thread's hub looked up already.
    #[inline(always)]
    pub(crate) fn ring_op_in<T>(
        &self,
        here: Local,
        op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        if !here.uring() {
            return None;
        }
        self.ring_read(here, op)
    }

    #[inline(never)]
    fn ring_read<T>(
        &self,
        here: Local,
        op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let r = self.ring_loop(here, &self.state.read_timeout, Interest::Readable, op);
        if r.is_some() {
            self.state.sent.store(false, Ordering::Relaxed);
        }
        r
    }

    /// [`ring_op`](Self::ring_op) for `sys::ring`'s sends, with the write
    /// timeout. A send submitted to the ring never waits inside the kernel
    /// (`MSG_DONTWAIT`): when it finds no room it completes with `EAGAIN`,
    /// and this waits for room on the hub's edge-triggered epoll set (as
    /// `write_op` does), then submits it again.
    ///
    /// Only a send that follows a receive (or is the socket's first
    /// operation) goes to the ring; a send that follows a send returns
    /// `None`, and the caller's `write_op` issues `send(2)`. A send on the
    /// ring completes at the hub's next poll, so it is free when the
    /// coroutine parks until then anyway (a reply, then a receive: the
    /// echo and request/response pattern), but a coroutine streaming sends
    /// would be held to one send per loop iteration, however much room the
    /// socket has, and fall behind a producer (a chat server's writer
    /// draining its outbox line by line behind a reader that splits each
    /// read into several lines).
    #[inline]
    pub(crate) fn ring_write_op<T>(
        &self,
        op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        self.ring_write_op_in(Local::get(), op)
    }

    /// [`ring_write_op`](Self::ring_write_op) with this thread's hub looked
    /// up already.
    #[inline(always)]
    pub(crate) fn ring_write_op_in<T>(
        &self,
        here: Local,
        op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        if !here.uring() {
            return None;
        }
        self.ring_write(here, op)
    }

    #[inline(never)]
    fn ring_write<T>(
        &self,
        here: Local,
        op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let sent = &self.state.sent;
        if sent.load(Ordering::Relaxed) || !uring::ring_sends() {
            return None;
        }
        let r = self.ring_loop(here, &self.state.write_timeout, Interest::Writable, op);
        if r.is_some() {
            sent.store(true, Ordering::Relaxed);
        }
        r
    }

    /// The ring operation of `ring_op`/`ring_write_op` on an io_uring hub.
    #[inline]
    fn ring_loop<T>(
        &self,
        here: Local,
        timeout: &AtomicU64,
        interest: Interest,
        mut op: impl FnMut(RawFd, Option<Instant>) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let st = &self.state;
        if st.nonblocking.load(Ordering::Relaxed) {
            return None;
        }
        // Fairness, as in `read_op`: before the operation, so a kill
        // delivered there loses no data.
        here.proceed();
        let deadline = self.deadline(timeout);
        loop {
            match op(st.fd, deadline) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_deadline(&e) => {
                    return Some(Err(io::Error::from_raw_os_error(libc::EAGAIN)));
                }
                // A send (`MSG_DONTWAIT`) that found no room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.wait(here, interest, deadline) {
                        return Some(Err(e));
                    }
                }
                r => return Some(r),
            }
        }
    }

    /// Clears the drained hint (after a peek found data, say).
    pub(crate) fn clear_drained(&self) {
        self.state.drained.store(false, Ordering::Relaxed);
    }

    /// Waits for readiness with an explicit deadline; on expiry fails with
    /// `ErrorKind::TimedOut` (for `connect_timeout`). Ignores the
    /// non-blocking flag: callers check it.
    pub(crate) fn wait_until(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        self.registration()?.reg.wait(interest, deadline)
    }

    pub(crate) fn is_nonblocking(&self) -> bool {
        self.state.nonblocking.load(Ordering::Relaxed)
    }

    fn deadline(&self, timeout: &AtomicU64) -> Option<Instant> {
        match timeout.load(Ordering::Relaxed) {
            0 => None,
            ns => Instant::now().checked_add(Duration::from_nanos(ns)),
        }
    }

    /// Waits for readiness; an expired deadline reads as `EAGAIN`, as an
    /// expired `SO_RCVTIMEO`/`SO_SNDTIMEO` does for std on Linux.
    #[inline(always)]
    fn wait(&self, here: Local, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        match here.wait(self.cached(), interest, deadline) {
            Some(r) => eagain_on_timeout(r),
            None => self.wait_listed(interest, deadline),
        }
    }

    /// The wait after an `EAGAIN` until `deadline`, or, if none is set yet,
    /// the deadline of the direction's timeout from now; returns the
    /// deadline it used. Out of line: an echo's read waits before its
    /// syscall (the drained hint), its write does not wait.
    #[inline(never)]
    fn wait_again(
        &self,
        here: Local,
        interest: Interest,
        mut deadline: Option<Instant>,
    ) -> io::Result<Option<Instant>> {
        if deadline.is_none() {
            deadline = self.deadline(match interest {
                Interest::Readable => &self.state.read_timeout,
                Interest::Writable => &self.state.write_timeout,
            });
        }
        self.wait(here, interest, deadline)?;
        Ok(deadline)
    }

    /// `wait` through this thread's table (the cached registration did not
    /// serve).
    #[inline(never)]
    fn wait_listed(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        wait_for(&self.registration()?, interest, deadline)
    }

    /// The registration this thread's table last gave the socket (see "The
    /// cached registration"): valid only if the hub finds it.
    #[inline(always)]
    fn cached(&self) -> RegId {
        let st = &self.state;
        RegId::from_parts(
            st.reg_key.load(Ordering::Relaxed),
            st.reg_generation.load(Ordering::Relaxed),
        )
    }

    /// This thread's registration of the socket, made on first use; cached
    /// in the socket.
    fn registration(&self) -> io::Result<Got> {
        let st = &self.state;
        let got = registry::get(st.fd, Owner::Net(st.uid)).map_err(no_registration)?;
        if got.fresh {
            // A fresh registration knows nothing about past edges: try the
            // syscall before trusting the drained hint again.
            st.drained.store(false, Ordering::Relaxed);
        }
        let (key, generation) = got.reg.id().to_parts();
        st.reg_key.store(key, Ordering::Relaxed);
        st.reg_generation.store(generation, Ordering::Relaxed);
        Ok(got)
    }
}

/// `Write::write_all` over a socket's `write` (std's loop: a short write
/// sends the rest, a write of 0 fails with `WriteZero`, `EINTR` retries),
/// inlined with the socket's `write` into the socket's `write_all`.
#[inline(always)]
pub(crate) fn write_all(
    mut buf: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<()> {
    while !buf.is_empty() {
        match write(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ));
            }
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A wait that needs a registration cannot have one (this thread is
/// exiting, its registrations are gone): a cancellation pending for the
/// caller (the exit's kill, say) unwinds it from here, as the wait would
/// have; otherwise the operation fails with `e`. (A coroutine killed at
/// thread exit after a ring send completed, with more to send, gets here.)
#[cold]
#[inline(never)]
fn no_registration(e: io::Error) -> io::Error {
    if moss_runtime::park::cancel_deliverable() {
        moss_runtime::park::deliver_cancel();
    }
    e
}

/// Whether `e` is a ring operation's own deadline passing (not a kernel
/// `ETIMEDOUT`, which carries its errno).
pub(crate) fn is_deadline(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut && e.raw_os_error().is_none()
}

/// Waits on `got`; an expired deadline reads as `EAGAIN` (see `wait`).
#[inline(always)]
fn wait_for(got: &Got, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
    eagain_on_timeout(got.reg.wait(interest, deadline))
}

/// A wait's result, its deadline passing read as `EAGAIN`.
#[inline(always)]
fn eagain_on_timeout(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        }
        r => r,
    }
}

impl Drop for IoState {
    fn drop(&mut self) {
        // Deregisters the fd (unless the hooks still use it) before it is
        // closed.
        registry::release(self.fd, Owner::Net(self.uid));
    }
}

fn store_timeout(slot: &AtomicU64, d: Option<Duration>) -> io::Result<()> {
    let ns = match d {
        None => 0,
        Some(d) if d.is_zero() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1),
    };
    slot.store(ns, Ordering::Relaxed);
    Ok(())
}

fn load_timeout(slot: &AtomicU64) -> Option<Duration> {
    match slot.load(Ordering::Relaxed) {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}
