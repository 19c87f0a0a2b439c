//! [`Registration`]: an fd registered with the calling thread's reactor, and
//! waiting for its readiness.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::hub::{Hub, Mode};
use crate::task::Wakeup;

/// Which readiness to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Data (or EOF, or an error) can be read; a listener can accept.
    Readable,
    /// Data can be written (or the peer is gone).
    Writable,
}

/// Why [`Registration::wait_raw`] returned without readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed.
    TimedOut,
    /// A `kill` or `timeout` is pending for the waiting coroutine; it is
    /// delivered at the next moss blocking point (see [`crate::park`]).
    Cancelled,
    /// The registration was dropped (the fd is being closed).
    Closed,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::TimedOut => "timed out waiting for readiness",
            WaitError::Cancelled => "the waiting coroutine was cancelled",
            WaitError::Closed => "the file descriptor was closed while waiting",
        })
    }
}

impl std::error::Error for WaitError {}

static NEXT_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An fd registered with the current thread's hub (edge-triggered, both
/// directions). Dropping it deregisters the fd and wakes its waiters; it does
/// not close the fd. Tied to the thread that created it.
///
/// ```
/// use std::io::Read;
/// use std::os::fd::AsRawFd;
/// use moss_runtime::reactor::{Interest, Registration};
///
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// a.set_nonblocking(true).unwrap();
/// let reg = Registration::new(a.as_raw_fd()).unwrap();
/// let writer = moss_runtime::spawn(move || {
///     moss_runtime::sleep(std::time::Duration::from_millis(10));
///     std::io::Write::write_all(&mut &b, b"hi").unwrap();
///     b
/// });
/// let mut buf = [0u8; 2];
/// loop {
///     match a.read(&mut buf) {
///         Ok(n) => { assert_eq!(&buf[..n], b"hi"); break }
///         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
///             reg.wait(Interest::Readable, None).unwrap()
///         }
///         Err(e) => panic!("{e}"),
///     }
/// }
/// writer.join().unwrap();
/// ```
pub struct Registration {
    key: usize,
    generation: u64,
    fd: RawFd,
    hub_id: u64,
    _not_send: PhantomData<*const ()>,
}

impl Registration {
    /// Registers `fd` (which the caller has made non-blocking) with this
    /// thread's hub.
    pub fn new(fd: RawFd) -> io::Result<Registration> {
        let hub = Hub::current();
        let generation = NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = hub.reactor.register(fd, generation)?;
        Ok(Registration {
            key,
            generation,
            fd,
            hub_id: hub.remote.hub_id,
            _not_send: PhantomData,
        })
    }

    /// The registered fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The id of the hub this registration belongs to (see [`hub_id`](super::hub_id)).
    pub fn hub_id(&self) -> u64 {
        self.hub_id
    }

    /// Waits until the fd is ready for `interest`, or `deadline` passes
    /// (`ErrorKind::TimedOut`). A pending `kill`/`timeout` of the calling
    /// coroutine unwinds it from here; while the coroutine is unwinding
    /// already (a destructor doing I/O), the cancellation instead ends the
    /// wait early with an error (`ErrorKind::Other`, [`WaitError::Cancelled`]).
    #[inline(always)]
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        to_io(self.wait_in(interest, deadline, Mode::Fallible))
    }

    /// Like [`wait`](Self::wait) but never unwinds: for code that cannot
    /// unwind (C ABI hooks) and fails its call instead. On `Cancelled` the
    /// cancellation stays pending. It is reported also while the caller is
    /// unwinding already (a destructor doing I/O), when it must not be
    /// delivered: see [`park::deliver_cancel`](crate::park::deliver_cancel).
    #[inline]
    pub fn wait_raw(&self, interest: Interest, deadline: Option<Instant>) -> Result<(), WaitError> {
        self.wait_in(interest, deadline, Mode::Fallible)
    }

    /// [`wait_raw`](Self::wait_raw) with `mode` saying how a cancellation
    /// counts (for a caller whose own deadline, not `deadline`, decides
    /// whether it can fail: a wait cut into slices).
    #[inline]
    pub(crate) fn wait_mode(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mode: Mode,
    ) -> Result<(), WaitError> {
        self.wait_in(interest, deadline, mode)
    }

    /// The wait, with `mode` saying how a cancellation counts.
    #[inline(always)]
    fn wait_in(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mode: Mode,
    ) -> Result<(), WaitError> {
        let hub = Hub::current();
        debug_assert_eq!(
            hub.remote.hub_id, self.hub_id,
            "fd used on another thread's hub"
        );
        let id = self.id();
        wait_slot(hub, id, false, interest, deadline, mode).unwrap_or(Err(WaitError::Closed))
    }

    /// The registration's [`RegId`].
    #[inline]
    pub fn id(&self) -> RegId {
        RegId {
            key: self.key,
            generation: self.generation,
        }
    }

    /// Whether contexts are parked on the registration (waits through its
    /// [`RegId`] included, which hold no reference to it).
    pub fn has_waiters(&self) -> bool {
        let Some(hub) = Hub::try_current() else {
            return false;
        };
        if hub.remote.hub_id != self.hub_id {
            return false;
        }
        let Ok(slots) = hub.reactor.slots.try_borrow() else {
            return false;
        };
        slots.get(self.key).is_some_and(|s| {
            s.generation == self.generation && !(s.readers.is_empty() && s.writers.is_empty())
        })
    }

    /// Whether waits through the registration's [`RegId`] alone
    /// ([`Local::wait`]) are allowed: its owner says so while it is its
    /// only user and still the fd's current registration; they are not
    /// until then. Waits through the `Registration` itself are always
    /// allowed.
    pub fn set_exclusive(&self, exclusive: bool) {
        let Some(hub) = Hub::try_current() else {
            return;
        };
        if hub.remote.hub_id != self.hub_id {
            return;
        }
        let Ok(mut slots) = hub.reactor.slots.try_borrow_mut() else {
            return;
        };
        if let Some(s) = slots.get_mut(self.key)
            && s.generation == self.generation
        {
            s.exclusive = exclusive;
        }
    }
}

/// A [`Registration`]'s name: `Copy` and `Send`, for an I/O object to keep
/// and wait through ([`Local::wait`]) without looking the registration up.
/// It names the registration only on the hub that holds it, and only while
/// it lives: generations are unique in the process, so a stale or foreign
/// `RegId` names nothing, whatever hub it is used on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegId {
    key: usize,
    generation: u64,
}

impl RegId {
    /// Names no registration.
    pub const NONE: RegId = RegId {
        key: usize::MAX,
        generation: 0,
    };

    /// The two numbers it is made of (for storing it in atomics).
    pub fn to_parts(self) -> (usize, u64) {
        (self.key, self.generation)
    }

    /// The `RegId` made of [`to_parts`](Self::to_parts)' numbers. Any
    /// numbers are safe: they name a live registration or none.
    pub fn from_parts(key: usize, generation: u64) -> RegId {
        RegId { key, generation }
    }
}

/// This thread's hub as an I/O operation uses it: looked up once per
/// operation and passed down to each of its steps (the backend check, the
/// fairness budget, the readiness wait), which would otherwise look it up
/// again in a thread-local each. Not `Send`.
#[derive(Clone, Copy)]
pub struct Local {
    hub: &'static Hub,
    _not_send: PhantomData<*const ()>,
}

impl Local {
    /// This thread's (creating its hub if needed).
    #[inline]
    pub fn get() -> Local {
        Local {
            hub: Hub::current(),
            _not_send: PhantomData,
        }
    }

    /// Whether the hub runs on io_uring (see [`super::uring`]).
    #[inline]
    pub fn uring(self) -> bool {
        self.hub.reactor.ring.is_some()
    }

    /// The hub's id (see [`hub_id`](super::hub_id)).
    #[inline]
    pub fn hub_id(self) -> u64 {
        self.hub.remote.hub_id
    }

    /// [`coop::proceed`](crate::coop::proceed) on this hub.
    #[inline]
    pub fn proceed(self) {
        let hub = self.hub;
        if hub.spend_budget() {
            crate::cancel::check(hub, hub.current_header());
        }
    }

    /// [`Registration::wait`] on the registration `id` names, if this hub
    /// holds it and its owner allows waits through its id
    /// ([`Registration::set_exclusive`]); `None`, having done nothing,
    /// otherwise (then the caller looks its registration up). Unlike
    /// `Registration::wait`, a wait whose registration is dropped meanwhile
    /// ends as woken, not with `Closed` (its owner may have replaced it
    /// after an edge woke the waiter): the caller retries its syscall,
    /// which tells.
    #[inline(always)]
    pub fn wait(
        self,
        id: RegId,
        interest: Interest,
        deadline: Option<Instant>,
    ) -> Option<io::Result<()>> {
        wait_slot(self.hub, id, true, interest, deadline, Mode::Fallible).map(to_io)
    }
}

/// A wait's result as `Registration::wait` reports it.
#[inline(always)]
fn to_io(r: Result<(), WaitError>) -> io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => wait_error(e),
    }
}

#[cold]
#[inline(never)]
fn wait_error(e: WaitError) -> io::Result<()> {
    match e {
        WaitError::TimedOut => Err(io::Error::from(io::ErrorKind::TimedOut)),
        WaitError::Closed => Err(io::Error::new(io::ErrorKind::NotConnected, e)),
        WaitError::Cancelled => {
            crate::cancel::deliver_or_fail(Hub::current());
            Err(io::Error::other(e))
        }
    }
}

/// The wait on the slot `id` of `hub`'s reactor; `None`, having done
/// nothing, if the slot is gone (or, with `exclusive`, not exclusive).
///
/// Inlined into I/O types on purpose: every return between the switch
/// and the retried syscall mispredicts after a stack switch (see the hub's
/// `yield_now`).
#[inline(always)]
fn wait_slot(
    hub: &Hub,
    id: RegId,
    exclusive: bool,
    interest: Interest,
    deadline: Option<Instant>,
    mode: Mode,
) -> Option<Result<(), WaitError>> {
    let h = hub.current_header();
    // Copied: after the park, the registration is not touched again, so a
    // waiter whose registration is dropped meanwhile (by a `close` hook of
    // another coroutine) stays sound and reports `Closed`.
    let RegId { key, generation } = id;
    {
        let mut slots = hub.reactor.slots.borrow_mut();
        let slot = match slots.get_mut(key) {
            Some(s) if s.generation == generation && (s.exclusive || !exclusive) => s,
            _ => return None,
        };
        let hup = interest == Interest::Readable && slot.read_hup;
        let (waiters, flag) = match interest {
            Interest::Readable => (&mut slot.readers, &mut slot.read_ready),
            Interest::Writable => (&mut slot.writers, &mut slot.write_ready),
        };
        if std::mem::take(flag) || hup {
            return Some(Ok(()));
        }
        // (A pending cancellation ends the park below at once.)
        waiters.push(h.token());
    }
    let reactor = &hub.reactor;
    let removals = reactor.removals.get();
    reactor.waiters.set(reactor.waiters.get() + 1);
    let w = hub.park(deadline, "I/O readiness", mode);
    reactor.waiters.set(reactor.waiters.get() - 1);
    if w == Wakeup::Notified && reactor.removals.get() == removals {
        // An edge took the waiter off its list, and the slot is there
        // still: no slot was removed meanwhile.
        return Some(Ok(()));
    }
    let mut slots = reactor.slots.borrow_mut();
    let slot = match slots.get_mut(key) {
        Some(s) if s.generation == generation => s,
        // Through an id: the slot's owner may have replaced it after an
        // edge woke us (it does not see a woken waiter): a wake-up
        // (perhaps spurious: the caller's syscall tells) rather than
        // `Closed`, which its caller would report.
        _ if exclusive => return Some(wakeup_result(w)),
        _ => return Some(Err(WaitError::Closed)),
    };
    if w != Wakeup::Notified {
        // A deadline or a cancellation ended the park: the waiter is
        // still queued, unless an edge came after that end and before
        // this context ran (a readiness edge takes every waiter of its
        // direction off the list; a dropped registration takes its slot
        // along). Then the edge was handed to a waiter that will not use
        // it: it goes back into the ready bit, or a caller that waits
        // before trying its syscall (a drained stream) would wait for an
        // edge that already came.
        let (waiters, flag) = match interest {
            Interest::Readable => (&mut slot.readers, &mut slot.read_ready),
            Interest::Writable => (&mut slot.writers, &mut slot.write_ready),
        };
        // (The park is over: `h`'s token has moved on, its context not.)
        if !waiters.remove(h.token()) {
            *flag = true;
        }
    }
    Some(wakeup_result(w))
}

#[inline(always)]
fn wakeup_result(w: Wakeup) -> Result<(), WaitError> {
    match w {
        Wakeup::Notified => Ok(()),
        Wakeup::TimedOut => Err(WaitError::TimedOut),
        Wakeup::Cancelled => Err(WaitError::Cancelled),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(hub) = Hub::try_current() else {
            return;
        };
        if hub.remote.hub_id != self.hub_id {
            return;
        }
        if let Some(waiters) = hub.reactor.deregister(self.key, self.generation) {
            for t in waiters.into_iter() {
                hub.wake(t, Wakeup::Notified);
            }
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("fd", &self.fd)
            .field("hub", &self.hub_id)
            .finish()
    }
}
