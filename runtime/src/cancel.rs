//! Cancellation: how `kill` and `timeout` reach a coroutine.
//!
//! ```text
//!  request                      the target's next blocking point             catcher
//!  ───────                      ────────────────────────────────             ───────
//!  kill / timeout fires:        park ends (or returns at once) with
//!  set the pending value  ───▶  Wakeup::Cancelled
//!  (TaskState), wake the        │
//!  target if it is parked       ├─ may unwind? ── yes ─▶ deliver: take the ──▶ timeout(): its own
//!                               │                        pending value,        scope → Elapsed;
//!                               │                        resume_unwind(        task body: a kill
//!                               │                        Cancelled)            → is_killed()
//!                               │
//!                               └─ no (unwinding already) ─▶ the value stays pending:
//!                                    fallible call (sleep, timed wait, I/O) → ends early
//!                                    with its timeout/error; infallible call (join, lock,
//!                                    untimed get) → the same park goes on; delivered at a
//!                                    blocking point after the unwind
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
//! * Never a second unwind. A cancellation that arrives while the target is
//!   unwinding already (a destructor blocked during a timeout's unwind, or
//!   during a panic) would abort the process if delivered ("panic in a
//!   destructor during cleanup"). It stays pending instead: a call that can
//!   fail ends early with its error or timeout value (`sleep` returns, a
//!   `*_timeout` call times out, I/O fails), a call that cannot fail keeps
//!   waiting; it is delivered at a blocking point after the unwind.
//!   std counts unwinds per *thread*, not per coroutine. A context that
//!   parked while the thread was not unwinding was certainly not unwinding
//!   itself, and still is not when a cancellation ends that park (it has not
//!   run since): it unwinds then, even if another context of the thread is
//!   suspended mid-unwind (a destructor that kills it and waits for its
//!   end). A context that parked while some context of the thread was
//!   unwinding cannot tell whether it is the one, and defers: such waits
//!   are woken again by the hub loop as soon as no context of the thread is
//!   unwinding, and then unwind. A cancellation point that is not a park
//!   (`yield_now`, killing oneself) goes by the thread's count alone.
//!   A `kill` made while the thread unwinds does not wait for a target that
//!   holds its kill that way, unless that target parked while it alone
//!   could be unwinding (then it is, and its wait is its destructor's): the
//!   caller may be the unwinding context (a destructor that stops a helper),
//!   whose unwind the target waits for. Such a target wakes its joiners
//!   when it starts holding, so the killer can tell.
//! * A kill takes precedence over a pending timeout, an enclosing timeout
//!   over an inner one (its unwind passes through the inner scope).
//! * A coroutine killed before it first ran never runs (its closure is
//!   dropped on the killer's stack).
//! * `timeout(d, f)` catches only its own scope's payload (scopes are
//!   numbered), so nested timeouts work in either order, and a kill passes
//!   through every `timeout`.
//! * Code that cannot unwind (an `extern "C"` hook) uses the raw park, sees
//!   `Wakeup::Cancelled`, fails its call, and the cancellation is delivered at
//!   the coroutine's next moss blocking point. If the coroutine ends before
//!   reaching one, a kill it observed that way (or that was deferred) still
//!   makes `join` report `is_killed()` (and a `timeout` reports `Elapsed`),
//!   also when its code panicked on the failed call (std code that unwraps
//!   its `io::Result`).

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::hub::{Hub, Mode};
pub use crate::task::Cancelled;
use crate::task::{Cancel, Header, Seen, State, Task, Wakeup, may_unwind};
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
/// If no cancellation is pending, or if the context may not unwind now (it
/// is unwinding: the caller should have checked [`may_unwind`], or, right
/// after a park, `TaskState::may_take_cancel`).
pub(crate) fn deliver(hub: &Hub) -> ! {
    let st = &hub.current_header().state;
    assert!(
        st.may_take_cancel(),
        "moss: a cancellation cannot be delivered while the coroutine is unwinding"
    );
    let c = st
        .take_cancel()
        .expect("deliver_cancel without a pending cancellation");
    resume_unwind(Box::new(Cancelled(c)))
}

/// A fallible call's park reported a cancellation (call it right after that
/// park, before any code of the caller's runs): unwinds if the context may
/// unwind now. Otherwise returns, and the caller ends early with its error
/// or timeout value; the cancellation stays pending (and seen) for a later
/// blocking point.
pub(crate) fn deliver_or_fail(hub: &Hub) {
    if hub.current_header().state.may_take_cancel() {
        deliver(hub);
    }
}

/// A cancellation point (not right after a park): unwinds the current
/// context `h` if a cancellation is pending for it and the thread is not
/// unwinding.
#[inline(always)]
pub(crate) fn check(hub: &Hub, h: &Header) {
    if h.state.cancel_pending() {
        check_pending(hub);
    }
}

/// `check` with a cancellation pending: out of line, so the hot path stays
/// one load and one branch.
#[cold]
#[inline(never)]
fn check_pending(hub: &Hub) {
    if may_unwind() {
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
        // Killing oneself unwinds at once (unless already unwinding: then
        // the kill is delivered at a blocking point after the unwind).
        check(hub, hub.current_header());
        return false;
    }
    // `kill` cannot fail; `kill_timeout` can (it reports "not dead yet").
    let mode = if deadline.is_some() {
        Mode::Fallible
    } else {
        Mode::Infallible
    };
    while !h.state.is(State::Done) {
        // The target holds its kill until no context of the thread unwinds.
        // Unless it is certainly the one unwinding (then its wait is its own
        // destructor's, which ends as any wait), the caller may be (a
        // destructor stopping a helper), and waiting would wait for itself:
        // the target is doomed, and the caller goes on.
        if !may_unwind() && h.state.cancel_held() && !h.state.unwinding_alone() {
            return false;
        }
        h.add_joiner(hub.current_header().token());
        match hub.park(deadline, "kill", mode) {
            Wakeup::Cancelled => {
                deliver_or_fail(hub);
                return h.state.is(State::Done);
            }
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
    // Fired, but `f` ended before reaching a blocking point: drop it. If a
    // non-unwinding wait (a monkey hook) failed because of it, `f`'s value is
    // that failure, or the panic of code that unwrapped it: report the
    // timeout instead.
    let seen = h.state.end_timeout(scope);
    match r {
        Ok(_) if seen != Seen::No => Err(Elapsed::new(d)),
        // A panic that began before the timeout was seen (it was seen by a
        // destructor's wait during that unwind) goes on.
        Err(_) if seen == Seen::Running => Err(Elapsed::new(d)),
        Ok(v) => Ok(v),
        Err(p) => match p.downcast_ref::<Cancelled>() {
            Some(Cancelled(Cancel::Timeout(s))) if *s == scope => Err(Elapsed::new(d)),
            _ => resume_unwind(p),
        },
    }
}
