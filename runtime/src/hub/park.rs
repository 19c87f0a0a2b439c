//! Parking and waking: how a context leaves the CPU and how it gets it back.
//!
//! ```text
//!   coroutine                                  root (the thread's own stack)
//!   ─────────                                  ─────────────────────────────
//!   park: state Running → Parked               park: state Running → Parked
//!         suspend: switch to the hub loop            run_until(RootReady): the hub
//!         ... (resumed by the loop) ...              loop runs right here until the
//!         end_park                                   root is Ready, then end_park
//!
//!   wake(token): the park `token` names still going on? → Ready, into the run
//!                queue (a root needs no queue: its loop sees the state)
//! ```
//!
//! A coroutine's suspend is a corosensei `suspend` on its own stack back into
//! the loop's `resume`; the loop always runs on the root's stack. A switch
//! from one coroutine to another is therefore suspend + resume, with no hub
//! stack in between.

use std::time::{Duration, Instant};

use super::{BATCH, Hub, Until};
use crate::task::{Header, ROOT_KEY, State, Task, Token, Wakeup, header_of, may_unwind};
use crate::timer::Action;
use std::rc::Rc;

/// How a park treats a cancellation (a `kill`, an expired `timeout`).
///
/// A cancellation is delivered as an unwind, never while the context is
/// already unwinding (`may_unwind`): that would abort the process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// A call that can fail (sleep, a timed wait, I/O): any pending
    /// cancellation ends the park with `Cancelled`; the caller unwinds if it
    /// may, else ends early with its error or timeout value.
    Fallible,
    /// A call that cannot fail (join, a lock, an untimed get): `Cancelled`
    /// only when the context may unwind; otherwise it keeps waiting, and the
    /// cancellation stays pending for a later blocking point.
    Infallible,
    /// A wait that must not be ended by a cancellation already pending (a C
    /// hook acquiring a lock): only a new, stronger one (a kill over a
    /// pending timeout) ends it with `Cancelled`.
    Shielded,
}

impl Hub {
    /// Ends the wait `token` with `why`; false if that wait is already over.
    ///
    /// The task is looked up without a reference count until the wake is
    /// known to end a park (a root needs no queue: its loop sees the state).
    #[inline]
    pub(crate) fn wake(&self, token: Token, why: Wakeup) -> bool {
        self.wake_inline(token, why)
    }

    /// [`wake`](Self::wake), inlined into the hub's event dispatch (one
    /// call per I/O event saved).
    #[inline(always)]
    pub(crate) fn wake_inline(&self, token: Token, why: Wakeup) -> bool {
        if token.key == ROOT_KEY {
            let h = &self.root.0;
            return h.id.0 == token.id && h.state.wake(token.seq, why);
        }
        let t = {
            let tasks = self.tasks.borrow();
            let Some(t) = tasks.get(token.key as usize) else {
                return false;
            };
            let h = header_of(t);
            if h.id.0 != token.id || !h.state.wake(token.seq, why) {
                return false;
            }
            t.clone()
        };
        self.run_queue.push(t);
        true
    }

    /// Ends whatever park `t` is in with `why` (a cancellation); false if it
    /// is not parked.
    pub(crate) fn wake_parked(&self, t: &Rc<dyn Task>, why: Wakeup) -> bool {
        if !t.header().state.wake_parked(why) {
            return false;
        }
        self.schedule(t.clone());
        true
    }

    /// Queues a task that became Ready (a woken root needs no queue: its
    /// loop sees the state).
    #[inline]
    pub(super) fn schedule(&self, t: Rc<dyn Task>) {
        if !header_of(&t).is_root() {
            self.run_queue.push(t);
        }
    }

    /// Suspends the current context until woken, the deadline passes, or a
    /// cancellation is requested (how a pending one counts: see [`Mode`]).
    /// Never unwinds.
    ///
    /// Inlined (with its rare paths out of line) for the reason given at
    /// `yield_now`: fewer returns between a resume and user code.
    #[inline(always)]
    pub(crate) fn park(&self, deadline: Option<Instant>, what: &'static str, mode: Mode) -> Wakeup {
        let h = self.current_header();
        if h.state.cancel_pending()
            && let Some(w) = self.park_cancel_pending(h, mode)
        {
            return w;
        }
        self.park_now(h, deadline, what, mode)
    }

    /// `park` entered with a cancellation pending: what it returns at once,
    /// or `None` to park all the same (the cancellation deferred or shielded).
    #[cold]
    fn park_cancel_pending(&self, h: &Header, mode: Mode) -> Option<Wakeup> {
        // Not back from a park: only the thread's count tells.
        h.state.forget_calm_park();
        h.state.mark_seen();
        match mode {
            Mode::Fallible => {
                h.state.abandon_park();
                Some(Wakeup::Cancelled)
            }
            Mode::Infallible if may_unwind() => {
                h.state.abandon_park();
                Some(Wakeup::Cancelled)
            }
            Mode::Infallible => {
                self.deferred.borrow_mut().push(h.token());
                self.wake_joiners(h);
                None
            }
            Mode::Shielded => None,
        }
    }

    /// Whether the current context runs its own code: false while the hub
    /// loop runs on the root's stack (the root is parked then), where a park
    /// would re-enter the loop.
    pub(crate) fn context_running(&self) -> bool {
        self.current_header().state.is(State::Running)
    }

    /// Parks `h` (the current context) until a wake of this park, the
    /// deadline or a cancellation request (see [`Mode`]).
    #[inline(always)]
    fn park_now(
        &self,
        h: &Header,
        deadline: Option<Instant>,
        what: &'static str,
        mode: Mode,
    ) -> Wakeup {
        if crate::greenlet::drives_greenlets(h) {
            // Before any state changes but the park's end: the wakers handed
            // out for it (a joiner, an I/O waiter) go stale.
            h.state.abandon_park();
            crate::greenlet::cannot_block();
        }
        if deadline.is_some() && !self.arm_park_timer(h, deadline) {
            h.state.abandon_park();
            return Wakeup::TimedOut;
        }
        h.waiting_on.set(what);
        h.parked_at.set(self.clock.stamp());
        if !h.state.park() {
            self.begin_unwinding_park(h);
        }
        self.switch_out(h);
        if mode == Mode::Infallible && h.state.woken_by() == Wakeup::Cancelled {
            self.hold_cancel(h);
        }
        if h.state.end_unwinding_park() {
            self.unwinding_parks.set(self.unwinding_parks.get() - 1);
        }
        let w = h.state.end_park();
        if h.timer.get().is_some() {
            self.disarm_park_timer(h);
        }
        if w == Wakeup::Cancelled {
            h.state.mark_seen();
        }
        w
    }

    /// Leaves the CPU until the parked context `h` is woken: a coroutine
    /// suspends to the hub loop, the root runs the loop.
    #[inline(always)]
    fn switch_out(&self, h: &Header) {
        if h.is_root() {
            self.run_until(Until::RootReady, true);
        } else {
            self.suspend(h);
        }
    }

    /// An infallible wait was ended by a cancellation: if the context may
    /// not unwind now (it is unwinding, or cannot tell: it parked while the
    /// thread was unwinding, see `cancel.rs`), the
    /// same park goes on as if none were pending. The hub loop wakes such
    /// waits again once no context of the thread is unwinding; a wake that
    /// is not a cancellation ends the park as usual.
    #[inline(never)]
    fn hold_cancel(&self, h: &Header) {
        while !h.state.may_take_cancel() {
            h.state.mark_seen();
            self.deferred.borrow_mut().push(h.token());
            h.state.repark();
            // A killer waiting for this death may be the context whose
            // unwind this wait now waits for (see `cancel::kill_until`).
            self.wake_joiners(h);
            self.switch_out(h);
            if h.state.woken_by() != Wakeup::Cancelled {
                return;
            }
        }
    }

    /// The park of `h` begins while the thread unwinds: counted, and
    /// `h` is certainly the unwinding context if no other is in such a park.
    #[cold]
    #[inline(never)]
    fn begin_unwinding_park(&self, h: &Header) {
        let n = self.unwinding_parks.get();
        h.state.begin_unwinding_park(n == 0);
        self.unwinding_parks.set(n + 1);
    }

    /// Arms the timer of a timed park; false if the deadline already passed.
    #[inline(never)]
    fn arm_park_timer(&self, h: &Header, deadline: Option<Instant>) -> bool {
        let Some(d) = deadline else { return true };
        if d <= Instant::now() {
            return false;
        }
        let k = self.timers.borrow_mut().insert(d, Action::Wake(h.token()));
        h.timer.set(Some(k));
        true
    }

    #[inline(never)]
    fn disarm_park_timer(&self, h: &Header) {
        if let Some(k) = h.timer.take() {
            self.timers.borrow_mut().cancel(k);
        }
    }

    /// Switches from the running coroutine back to the hub loop.
    #[inline(always)]
    fn suspend(&self, h: &Header) {
        let y = h.yielder.get();
        debug_assert!(!y.is_null(), "suspend outside a coroutine");
        // SAFETY: `yielder` is the `&Yielder` corosensei gave this task's body,
        // alive on its stack while the body runs; we run on that stack now
        // (current is this task), so it is alive and ours to suspend.
        unsafe { (*y).suspend(()) };
    }

    /// The start of a blocking call (`coop.rs`): spends a unit of the
    /// running context's budget; when it is gone, yields. Returns whether it
    /// yielded (then the running context may check for a cancellation).
    #[inline(always)]
    pub(crate) fn spend_budget(&self) -> bool {
        let b = self.budget.get();
        if b == 0 {
            return self.budget_spent();
        }
        self.budget.set(b - 1);
        false
    }

    /// The running context spent its budget (`coop.rs`): it goes to the
    /// back of the run queue if other contexts are ready, and the hub polls
    /// I/O and fires timers before resuming anyone if it has not done so
    /// for `POLL_EVERY`. Never unwinds; returns whether it switched (false
    /// where no switch is possible or useful).
    #[cold]
    #[inline(never)]
    fn budget_spent(&self) -> bool {
        self.budget.set(crate::coop::BUDGET);
        if !self.context_running() || crate::greenlet::in_coroutine_driven_greenlet() {
            return false;
        }
        let h = self.current_header();
        // Nothing to be fair to on a thread without coroutines.
        if h.is_root() && self.live_tasks() == 0 {
            return false;
        }
        let now = Instant::now();
        let poll_due =
            now.saturating_duration_since(self.forced_poll.get()) >= crate::coop::POLL_EVERY;
        if !poll_due && self.run_queue.is_empty() {
            return false;
        }
        if poll_due {
            self.forced_poll.set(now);
        }
        if h.is_root() {
            // Runs the ready coroutines once, then polls.
            self.yield_now(h);
        } else {
            if poll_due {
                // The loop polls before it resumes anyone.
                self.since_poll.set(BATCH);
            }
            h.state.yield_();
            self.suspend(h);
        }
        true
    }

    /// Lets every other ready context run once; the caller `h` (the current
    /// context) goes to the back of the run queue. Cancellation is the
    /// caller's business (`moss::yield_now` is a cancellation point).
    ///
    /// Inlined into callers on purpose: a switch from a shallow call depth
    /// keeps the CPU's return-stack predictions intact (each `ret` between
    /// the resume point and user code mispredicts after a stack switch).
    #[inline(always)]
    pub(crate) fn yield_now(&self, h: &Header) {
        let y = h.yielder.get();
        if y.is_null() {
            // The root, or a coroutine driving greenlets.
            return self.yield_unswitchable(h);
        }
        if self.run_queue.is_empty() && self.yield_alone() {
            return;
        }
        // The hub loop requeues a task that suspends in state Ready.
        h.state.yield_();
        // A non-null `yielder` is the `&Yielder` corosensei gave this task's
        // body, alive on its stack while the body runs; we run on that stack
        // now (current is this task, driving no greenlet: `Header::yielder`).
        // SAFETY: so it is alive and ours to suspend.
        unsafe { (*y).suspend(()) };
    }

    /// A coroutine's `yield_now` with nobody else ready: a fast yield,
    /// counted as a resume (the loop counts those of a switch). True to go
    /// on without a switch; false when the hub should poll first.
    #[inline(always)]
    fn yield_alone(&self) -> bool {
        let n = self.since_poll.get() + 1;
        self.since_poll.set(n);
        if n >= BATCH {
            return false;
        }
        // Go on, unless ring entries wait for the next poll (the
        // coroutines parked on them, a writer whose send is queued say,
        // run only after it): then poll now.
        match &self.reactor.ring {
            Some(r) if r.queued() => {
                self.since_poll.set(BATCH);
                false
            }
            _ => true,
        }
    }

    /// `yield_now` of the root, or of a coroutine driving greenlets (which
    /// cannot switch: it panics if it would have to).
    #[inline(never)]
    fn yield_unswitchable(&self, h: &Header) {
        if h.is_root() {
            // Let every task that is ready now run once, then poll: the root
            // parks until its own turn in the run queue comes.
            self.root_turn.set(Some(h.state.park_seq()));
            h.state.park();
            self.run_queue.push(self.root.clone());
            self.run_until(Until::RootReady, true);
            h.state.end_park();
            self.poll_once(Some(Duration::ZERO));
            return;
        }
        debug_assert!(crate::greenlet::drives_greenlets(h));
        if self.run_queue.is_empty() && self.yield_alone() {
            return;
        }
        crate::greenlet::cannot_block();
    }
}
