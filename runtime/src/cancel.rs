//! Cancellation: how `kill` and `timeout` reach a coroutine.
//!
//! ```text
//!   kill / timeout fires          the target's blocking point            the catcher
//!  ───────────────────────        ──────────────────────────────         ─────────────────
//!   request: set the pending  ──▶ park returns Cancelled (or the    ──▶  timeout(): its own
//!   cancellation; a parked        pending value is seen at entry)        scope → Elapsed
//!   target is woken with          deliver: take it, unwind with          task body: a kill
//!   Wakeup::Cancelled             Cancelled (resume_unwind: the          → JoinError::is_killed
//!                                 panic hook stays silent)
//! ```
//!
//! A cancellation is *requested* by setting the target's pending cancel (its
//! [`TaskState`](crate::task::TaskState)) and, if the target is parked,
//! waking it with `Wakeup::Cancelled`. It is *delivered* when the target is at
//! a blocking point (a park, a `yield_now`): the pending value is taken and
//! the target unwinds with a [`Cancelled`] payload (via `resume_unwind`, so
//! the panic hook stays silent), running its destructors.
//!
//! * Delivered once: the pending value is consumed on delivery; a second
//!   `kill` of a coroutine already killed only waits for it to die. So a
//!   destructor that blocks during the unwind blocks normally.
//! * A kill takes precedence over a pending timeout.
//! * A coroutine killed before it first ran never runs (its closure is
//!   dropped on the killer's stack).
//! * `timeout(d, f)` catches only its own scope's payload (scopes are
//!   numbered), so nested timeouts work in either order, and a kill passes
//!   through every `timeout`.
//! * Code that cannot unwind (an `extern "C"` hook) uses the raw park, sees
//!   `Wakeup::Cancelled`, fails its call, and the cancellation is delivered at
//!   the coroutine's next moss blocking point. If the coroutine ends before
//!   reaching one, a kill it observed that way still makes `join` report
//!   `is_killed()` (and a `timeout` reports `Elapsed`).

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::hub::Hub;
pub use crate::task::Cancelled;
use crate::task::{Cancel, Header, State, Task, Wakeup};
use crate::timer::Action;

/// The error of a [`timeout`](crate::timeout) that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation timed out after {:?}", self.after)
    }
}

impl Elapsed {
    pub(crate) fn new(after: Duration) -> Elapsed {
        Elapsed { after }
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

/// Requests cancellation of the task `t`: records it and wakes `t` if it is
/// parked. Nothing happens if a cancellation that wins is already pending.
pub(crate) fn request(hub: &Hub, t: &Rc<dyn Task>, c: Cancel) {
    let st = &t.header().state;
    let requested = match c {
        Cancel::Kill => st.request_kill(),
        Cancel::Timeout(scope) => st.request_timeout(scope),
    };
    if requested {
        hub.wake_parked(t, Wakeup::Cancelled);
    }
}

/// Unwinds the current context with its pending cancellation.
///
/// # Panics
/// If no cancellation is pending.
pub(crate) fn deliver(hub: &Hub) -> ! {
    let c = hub
        .current_header()
        .state
        .take_cancel()
        .expect("deliver_cancel without a pending cancellation");
    resume_unwind(Box::new(Cancelled(c)))
}

/// A cancellation point: unwinds the current context `h` if a cancellation
/// is pending for it.
#[inline(always)]
pub(crate) fn check(hub: &Hub, h: &Header) {
    if h.state.cancel_pending() {
        deliver(hub);
    }
}

/// Kills the task whose control block is `h` and waits until it has died
/// (see `JoinHandle::kill`).
pub(crate) fn kill(h: &Header) {
    kill_until(h, None);
}

/// Requests the kill of the task whose control block is `h`, without waiting
/// (see `JoinHandle::kill_nowait`): a task that never ran is finished at
/// once; a running one unwinds at its next blocking point (the caller's own
/// task included). Returns false if the task is done.
pub(crate) fn kill_nowait(h: &Header) -> bool {
    let hub = Hub::current();
    let Some(t) = hub.task(h.key.get(), h.id.0) else {
        return false; // done
    };
    if h.state.is(State::New) {
        h.state.kill_unstarted();
        if let Some(k) = h.timer.take() {
            hub.timers.borrow_mut().cancel(k);
        }
        hub.finish_unstarted(&t, None);
        return false;
    }
    request(hub, &t, Cancel::Kill);
    true
}

/// Kills the task whose control block is `h` and waits until it has died
/// or `deadline` passed; returns whether it has died. Killing the caller
/// itself unwinds it at once (if it is already unwinding from its kill,
/// returns false: it cannot wait for its own end).
pub(crate) fn kill_until(h: &Header, deadline: Option<Instant>) -> bool {
    if !kill_nowait(h) {
        return true;
    }
    let hub = Hub::current();
    if hub.current_header().id == h.id {
        if h.state.cancel_pending() {
            deliver(hub);
        }
        return false;
    }
    while !h.state.is(State::Done) {
        h.add_joiner(hub.current_header().token());
        match hub.park(deadline, "kill") {
            Wakeup::Cancelled => deliver(hub),
            Wakeup::TimedOut => return h.state.is(State::Done),
            Wakeup::Notified => {}
        }
    }
    true
}

/// `moss::timeout`: runs `f` in a new timeout scope of the calling context.
pub(crate) fn timeout<T>(d: Duration, f: impl FnOnce() -> T) -> Result<T, Elapsed> {
    let hub = Hub::current();
    let Some(deadline) = Instant::now().checked_add(d) else {
        return Ok(f());
    };
    let h = hub.current_header();
    let scope = hub.new_scope();
    let timer = if d.is_zero() {
        // Fires at the first blocking point: pending from the start.
        h.state.request_timeout(scope);
        None
    } else {
        Some(
            hub.timers
                .borrow_mut()
                .insert(deadline, Action::Timeout(h.token(), scope)),
        )
    };
    let r = catch_unwind(AssertUnwindSafe(f));
    if let Some(k) = timer {
        hub.timers.borrow_mut().cancel(k);
    }
    // Fired, but `f` returned before reaching a blocking point: drop it. If a
    // non-unwinding wait (a monkey hook) failed because of it, `f`'s value is
    // that failure: report the timeout instead.
    let seen = h.state.end_timeout(scope);
    match r {
        Ok(_) if seen => Err(Elapsed::new(d)),
        Ok(v) => Ok(v),
        Err(p) => match p.downcast_ref::<Cancelled>() {
            Some(Cancelled(Cancel::Timeout(s))) if *s == scope => Err(Elapsed::new(d)),
            _ => resume_unwind(p),
        },
    }
}
