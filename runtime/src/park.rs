//! Parking: the primitive every blocking moss call is built on.
//!
//! A context (a coroutine, or a thread's root) parks; something else wakes it
//! through an [`Unparker`], a deadline passes, or a cancellation arrives.
//! Unparkers are `Send + Sync`: waking a coroutine of the same thread pushes it
//! on the run queue (no syscall, no atomic beyond the unparker's own count);
//! waking one of another thread goes through that hub's cross-thread queue and
//! writes its eventfd only if it sleeps.
//!
//! Protocol for a blocking primitive:
//!
//! ```text
//! loop {
//!     if condition holds { take it; return }
//!     let u = park::unparker();      // identifies *this* wait of the caller
//!     store u with the primitive     // whoever makes the condition true calls u.unpark()
//!     match park::park(deadline, "what") { ... }   // re-check: wake-ups may be spurious
//! }
//! ```
//!
//! An unparker ends only the wait it was created for: once the context has
//! returned from that park, `unpark` is a no-op, so stale unparkers left in
//! wait lists are harmless. Because a root that parks runs the hub, all of
//! this also works on a plain thread with no coroutines: the park blocks the
//! thread in `epoll_wait` until the unparker's eventfd write.
//!
//! [`park`] never unwinds and reports [`Wakeup::Cancelled`] when a `kill` or
//! `timeout` is pending; call [`deliver_cancel`] (after cleaning up) to unwind,
//! or [`park_cancellable`], which does both.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::hub::{Hub, Mode, Remote};
use crate::task::Token;
pub use crate::task::Wakeup;

/// Wakes one particular wait of one context, from any thread.
///
/// Each unparker holds a reference to its hub's wake-up queue; the hub counts
/// those references to know whether another thread could still wake it.
#[derive(Clone)]
pub struct Unparker {
    remote: Arc<Remote>,
    token: Token,
}

impl Unparker {
    /// Ends the wait this unparker was created for, if it is still going on.
    #[inline]
    pub fn unpark(&self) {
        self.unpark_wait(self.token.seq);
    }

    /// Ends wait number `wait` (see [`next_wait`]) of this unparker's
    /// context instead, if it is still going on: for a waker that outlives
    /// several waits of one context (`block_on`'s).
    #[inline]
    pub(crate) fn unpark_wait(&self, wait: u64) {
        let token = Token {
            seq: wait,
            ..self.token
        };
        if let Some(hub) = Hub::try_current()
            && Arc::ptr_eq(&hub.remote, &self.remote)
        {
            hub.wake(token, Wakeup::Notified);
            return;
        }
        self.remote.push(token);
    }

    /// Whether this unparker wakes a context of the calling thread.
    pub fn is_local(&self) -> bool {
        Hub::try_current().is_some_and(|h| Arc::ptr_eq(&h.remote, &self.remote))
    }

    /// Whether it wakes a context of this process: false for an unparker
    /// that a forked child copied from its parent's wait lists (its context
    /// never runs in the child).
    #[inline]
    pub(crate) fn in_this_process(&self) -> bool {
        self.remote.in_this_process()
    }

    /// Whether two unparkers end the same wait.
    pub fn same_wait(&self, other: &Unparker) -> bool {
        Arc::ptr_eq(&self.remote, &other.remote) && self.token == other.token
    }

    /// Whether two unparkers wake the same context (in any of its waits).
    pub(crate) fn same_context(&self, other: &Unparker) -> bool {
        Arc::ptr_eq(&self.remote, &other.remote)
            && self.token.key == other.token.key
            && self.token.id == other.token.id
    }
}

impl fmt::Debug for Unparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unparker")
            .field("hub", &self.remote.hub_id)
            .field("coroutine", &self.token.id)
            .field("wait", &self.token.seq)
            .finish()
    }
}

/// An unparker for the calling context's next (or current) wait.
///
/// While it exists, the hub of this thread counts as wakeable from another
/// thread, so a root blocked on it does not report "would block forever"
/// (unless the process has no other thread).
#[inline]
pub fn unparker() -> Unparker {
    let hub = Hub::current();
    let h = hub.current_header();
    if crate::greenlet::drives_greenlets(h) {
        // Before the caller queues its waiter (a waiter queued by a call
        // that then cannot park would outlive its frame).
        h.state.abandon_park();
        crate::greenlet::cannot_block();
    }
    Unparker {
        remote: hub.remote.clone(),
        token: hub.current_header().token(),
    }
}

/// The number of the calling context's next wait: its waits are numbered in
/// order, and a wait that really parked (did not return at once) is over once
/// [`park`] returns, so a later wait never has the same number.
#[inline]
pub(crate) fn next_wait() -> u64 {
    Hub::current().current_header().state.park_seq()
}

/// Parks the calling context until an unparker of this wait fires
/// (`Notified`), `deadline` passes (`TimedOut`), or a cancellation is pending
/// (`Cancelled`, returned at once if one is already pending). Never unwinds.
/// `what` names the wait in [`dump`](crate::dump).
///
/// `Cancelled` is reported also while the caller is unwinding already (a
/// destructor that blocks), when the cancellation must not be delivered as
/// a second unwind, which would abort the process: a caller that can fail
/// its call does so; one that wants to unwind calls [`deliver_cancel`],
/// which waits until the cancellation can be delivered.
#[inline]
pub fn park(deadline: Option<Instant>, what: &'static str) -> Wakeup {
    let hub = Hub::current();
    let w = hub.park(deadline, what, Mode::Fallible);
    // The caller may run its own code before it delivers (or never does).
    hub.current_header().state.forget_calm_park();
    w
}

/// [`park`] for a wait whose only way to fail is its deadline (an untimed
/// one cannot fail): `Cancelled` only when the cancellation can be
/// delivered. While the caller is unwinding already, a cancellation ends a
/// timed wait early, as its deadline would (`TimedOut`), and leaves an
/// untimed one waiting; it stays pending for a later blocking point.
#[inline]
pub(crate) fn park_until(deadline: Option<Instant>, what: &'static str) -> Wakeup {
    park_until_on(Hub::current(), deadline, what)
}

/// [`park_until`] on this thread's `hub`.
#[inline(always)]
pub(crate) fn park_until_on(hub: &Hub, deadline: Option<Instant>, what: &'static str) -> Wakeup {
    let mode = if deadline.is_some() {
        Mode::Fallible
    } else {
        Mode::Infallible
    };
    match hub.park(deadline, what, mode) {
        Wakeup::Cancelled => cancelled_or_timed_out(hub),
        w => w,
    }
}

/// A park reported a cancellation: `Cancelled` if the caller may take it
/// now, else `TimedOut` (see [`park_until`]).
#[cold]
#[inline(never)]
fn cancelled_or_timed_out(hub: &Hub) -> Wakeup {
    if hub.current_header().state.may_take_cancel() {
        Wakeup::Cancelled
    } else {
        Wakeup::TimedOut
    }
}

/// [`park`], unwinding the caller on cancellation. Returns `Notified` or
/// `TimedOut`. While the caller is unwinding (see [`park`]), a cancellation
/// makes a wait with a `deadline` return `TimedOut` early; one without a
/// deadline goes on.
#[inline]
pub fn park_cancellable(deadline: Option<Instant>, what: &'static str) -> Wakeup {
    match park_until(deadline, what) {
        Wakeup::Cancelled => crate::cancel::deliver(Hub::current()),
        w => w,
    }
}

/// Unwinds the calling coroutine with its pending cancellation.
///
/// Call it after [`park`] returned `Cancelled` (and after cleaning up). A
/// cancellation is never delivered while the thread is unwinding (see
/// [`park`]): then this first waits until it can be delivered. That wait
/// never ends if the caller itself is the one unwinding (a destructor), so
/// code that can run in destructors fails its call on `Cancelled` instead,
/// unless [`cancel_deliverable`] is true.
///
/// # Panics
/// If no cancellation is pending.
pub fn deliver_cancel() -> ! {
    let hub = Hub::current();
    while !hub.current_header().state.may_take_cancel() {
        hub.park(
            None,
            "a cancellation, until an unwind ends",
            Mode::Infallible,
        );
    }
    crate::cancel::deliver(hub)
}

/// Whether a cancellation is pending for the calling context ([`park`]
/// returns `Cancelled` at once).
pub fn cancel_pending() -> bool {
    Hub::try_current().is_some_and(|h| h.current_header().state.cancel_pending())
}

/// Whether a cancellation is pending and can be delivered now: the thread
/// is not unwinding (see [`park`]).
pub fn cancel_deliverable() -> bool {
    cancel_pending() && crate::task::may_unwind()
}

/// Unwinds now if a cancellation is pending and can be delivered: a
/// cancellation point.
pub fn check_cancel() {
    if cancel_deliverable() {
        deliver_cancel();
    }
}

/// Whether this thread has a hub (without creating one).
pub fn hub_exists() -> bool {
    Hub::try_current().is_some()
}

/// Whether the calling context may park cooperatively: this thread has a hub,
/// the caller is a running coroutine or root (not the hub loop itself, which
/// runs on the root's stack while the root is parked, e.g. taking a lock
/// while it drains its cross-thread queue), and it is not a greenlet driven
/// by a coroutine (which cannot suspend that coroutine from its own stack).
/// Code that cannot report an error (C ABI hooks) blocks the thread instead
/// when this is false.
#[inline]
pub fn can_park() -> bool {
    Hub::try_current().is_some_and(|h| h.context_running())
        && !crate::greenlet::in_coroutine_driven_greenlet()
}

/// [`park`] for a wait that cannot fail (a lock that must be acquired): a
/// cancellation that is already pending neither prevents the park nor ends
/// it. It stays pending, to be delivered at the next blocking point that
/// can unwind, and counts as seen (see [`park`]'s callers in C hooks).
/// Returns `Cancelled` only if a kill arrives over a pending timeout while
/// parked. Never unwinds.
#[inline]
pub fn park_shielded(deadline: Option<Instant>, what: &'static str) -> Wakeup {
    let hub = Hub::current();
    let w = hub.park(deadline, what, Mode::Shielded);
    hub.current_header().state.forget_calm_park();
    w
}

/// Whether the caller runs in a coroutine (not on a thread's root).
pub fn in_coroutine() -> bool {
    Hub::try_current().is_some_and(|h| h.in_coroutine())
}
