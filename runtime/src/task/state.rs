//! The one owner of a coroutine's scheduling and cancellation state.
//!
//! Everything the hub, a waker, a `kill` or a `timeout` may change about a
//! context (a coroutine, or a thread's root) lives in [`TaskState`] and
//! changes only through the named transitions below. Each transition
//! `debug_assert!`s the state it may start from, so an illegal sequence
//! (resuming a parked task, waking a running one, ...) fails loudly in debug
//! builds and costs nothing in release builds.
//!
//! ```text
//!                 spawn
//!   ─────────────────────────▶ New ──────────────────────────┐
//!                               │ resume (first run:          │ complete_unstarted
//!                               │ binds a stack)              │ (killed before start,
//!                               ▼                             │  or no stack)
//!             resume   ┌──── Running ─────┐ complete           ▼
//!          ┌──────────▶│                  ├─────────────────▶ Done
//!          │           └─┬─────────────┬──┘ (body returned
//!          │     yield_  │             │ park    or unwound)
//!          │             ▼             ▼
//!          └──────── Ready ◀──wake── Parked
//!                          (notify, deadline,
//!                           request_cancel)
//! ```
//!
//! | transition            | from            | to      | who                              |
//! |-----------------------|-----------------|---------|----------------------------------|
//! | `resume`              | New, Ready      | Running | the hub loop, before a switch in |
//! | `park`                | Running         | Parked  | the context itself               |
//! | `wake`, `wake_parked` | Parked          | Ready   | a waker (same park only), timer, cancel |
//! | `end_park`            | Running, Ready  | Running | the context, back from its park (a root is not resumed: its loop returns) |
//! | `repark`              | Running, Ready  | Parked  | the context, back from a park a cancellation ended that it may not take now: the same park goes on |
//! | `abandon_park`        | Running         | Running | the context, a wait that ends before it suspends (cancellation pending, deadline passed, refused): its wakers go stale |
//! | `yield_`              | Running         | Ready   | a coroutine's `yield_now`        |
//! | `complete`            | Running, New    | Done    | the hub, when the body returned or a never-run task is dropped |
//!
//! The root is created `Running` and is never `New` or `Done`.
//!
//! *A park* is identified by the context's `park_seq`: a waker carries the
//! sequence number of the park it was made for, and `end_park` increments it,
//! so a stale waker (its wait already over) finds a different number and does
//! nothing.
//!
//! *Cancellation* (see `cancel.rs` for how it is delivered) is a pending
//! value next to the life cycle: `request_kill`/`request_timeout` set it,
//! `take_cancel` consumes it when it is delivered as an unwind, and
//! `mark_seen` records that a non-unwinding wait reported it to a caller that
//! failed its call instead. `killed` is sticky: a coroutine is killed once,
//! except at thread exit, when `request_exit_kill` leaves the kill pending
//! until the coroutine has finished.

use std::cell::Cell;

/// Where a context is in its life cycle (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Spawned, not yet run: a closure and a control block, no stack.
    New,
    /// Runnable: in the run queue (or a woken root about to return from its
    /// hub loop).
    Ready,
    /// Executing now: at most one context per hub.
    Running,
    /// Suspended at a blocking point, waiting for the wake of this park.
    Parked,
    /// Finished; the result is in the task's slot, its stack back in the pool.
    Done,
}

/// How a park ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// Somebody woke this wait (the condition may hold; re-check it).
    Notified,
    /// The park's own deadline passed.
    TimedOut,
    /// A `kill` or an enclosing `timeout` wants this coroutine to unwind.
    /// The cancellation stays pending until it is delivered.
    Cancelled,
}

/// Whether a cancellation may be delivered to the running context now, as an
/// unwind, judging by the thread alone: not while any context of this thread
/// is unwinding.
///
/// A second unwind out of a destructor that runs during an unwind aborts the
/// process, so a context that is unwinding must not get one. std counts the
/// panics in flight per thread, not per coroutine, so from the thread's
/// count alone moss cannot tell whether *this* context is the one unwinding
/// when another context of the thread is suspended mid-unwind. Right after
/// a park, [`TaskState::may_take_cancel`] can tell more.
#[inline]
pub(crate) fn may_unwind() -> bool {
    !std::thread::panicking()
}

/// A pending cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    Kill,
    /// The `timeout` scope with this number expired.
    Timeout(u64),
}

/// Whether a pending cancellation was reported to a non-unwinding wait
/// (which failed its call instead of unwinding), and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seen {
    No,
    /// Only while the thread was unwinding already (a destructor's wait
    /// during a panic): that unwind, not the cancellation, ends the context.
    Unwinding,
    /// In the context's normal flow: what follows (the failure returned, or
    /// a panic of code that unwrapped it) is the cancellation's doing.
    Running,
}

/// `cancel` encoding: no cancellation pending.
const NO_CANCEL: u64 = 0;
/// `cancel` encoding: a kill is pending (timeout scopes are numbered from 1).
const KILL: u64 = u64::MAX;

/// A context's scheduling and cancellation state; see the module docs.
///
/// # Invariants
/// Only the hub's thread touches it (it is `!Sync`: `Cell`s), and only
/// through the methods below.
pub(crate) struct TaskState {
    lifecycle: Cell<State>,
    /// How the last park ended (valid from `wake` until the next `park`).
    wakeup: Cell<Wakeup>,
    /// A kill was requested once; later kills are no-ops.
    killed: Cell<bool>,
    /// The thread is exiting: the kill stays pending after each delivery, so
    /// a coroutine that catches its `Cancelled` is unwound again at its next
    /// blocking point, and a wait it enters while unwinding fails early.
    exit_kill: Cell<bool>,
    /// A non-unwinding wait reported the pending cancellation to its caller
    /// (a monkey hook failed its call): a `timeout` then reports `Elapsed`
    /// even if its closure returns, and a kill makes `join` report
    /// `is_killed()`. Cleared when a cancellation is taken for delivery.
    cancel_seen: Cell<Seen>,
    /// The pending cancellation, encoded: `NO_CANCEL`, `KILL` or a timeout
    /// scope number.
    cancel: Cell<u64>,
    /// Identifies the current (or next) park.
    park_seq: Cell<u64>,
    /// The current park began while no context of the thread was unwinding,
    /// so this context was not unwinding, and cannot have begun to since
    /// (it has not run). Kept past `end_park` only when a cancellation ended
    /// the park, for the decision whether to deliver it; cleared by the next
    /// park, `abandon_park` or delivery. See [`TaskState::may_take_cancel`].
    calm_park: Cell<bool>,
    /// The current park began while the thread was unwinding (counted in
    /// the hub's `unwinding_parks`).
    unwinding_park: Cell<bool>,
    /// ... and no other context was in such a park then: this context is
    /// certainly the one unwinding. See [`TaskState::unwinding_alone`].
    unwinding_alone: Cell<bool>,
}

impl TaskState {
    /// A spawned coroutine.
    pub(crate) const fn new() -> TaskState {
        TaskState::with(State::New)
    }

    /// A thread's root: running from the start.
    pub(crate) const fn new_root() -> TaskState {
        TaskState::with(State::Running)
    }

    const fn with(s: State) -> TaskState {
        TaskState {
            lifecycle: Cell::new(s),
            wakeup: Cell::new(Wakeup::Notified),
            killed: Cell::new(false),
            exit_kill: Cell::new(false),
            cancel_seen: Cell::new(Seen::No),
            cancel: Cell::new(NO_CANCEL),
            park_seq: Cell::new(0),
            calm_park: Cell::new(false),
            unwinding_park: Cell::new(false),
            unwinding_alone: Cell::new(false),
        }
    }

    // ---- the life cycle ----

    #[inline]
    pub(crate) fn get(&self) -> State {
        self.lifecycle.get()
    }

    #[inline]
    pub(crate) fn is(&self, s: State) -> bool {
        self.lifecycle.get() == s
    }

    /// The sequence number of the current (or next) park, for wakers.
    #[inline]
    pub(crate) fn park_seq(&self) -> u64 {
        self.park_seq.get()
    }

    /// New/Ready → Running: the hub switches into the context.
    #[inline]
    pub(crate) fn resume(&self) {
        debug_assert!(
            matches!(self.get(), State::New | State::Ready),
            "resume from {:?}",
            self.get()
        );
        self.lifecycle.set(State::Running);
    }

    /// Running → Parked: the context suspends at a blocking point. Records
    /// (and returns) whether it is certainly not unwinding (the thread is
    /// not).
    #[inline]
    pub(crate) fn park(&self) -> bool {
        debug_assert!(self.is(State::Running), "park from {:?}", self.get());
        self.lifecycle.set(State::Parked);
        let calm = may_unwind();
        self.calm_park.set(calm);
        calm
    }

    /// Parked → Ready, if `seq` is the current park: a waker for this wait.
    /// False if that wait is already over (a stale waker).
    #[inline]
    pub(crate) fn wake(&self, seq: u64, why: Wakeup) -> bool {
        if self.park_seq.get() != seq || !self.is(State::Parked) {
            return false;
        }
        self.wakeup.set(why);
        self.lifecycle.set(State::Ready);
        true
    }

    /// Parked → Ready, whichever park it is in (a cancellation); false if
    /// the context is not parked.
    #[inline]
    pub(crate) fn wake_parked(&self, why: Wakeup) -> bool {
        if !self.is(State::Parked) {
            return false;
        }
        self.wakeup.set(why);
        self.lifecycle.set(State::Ready);
        true
    }

    /// How the current park was ended (read before `end_park`).
    #[inline]
    pub(crate) fn woken_by(&self) -> Wakeup {
        self.wakeup.get()
    }

    /// Back from a park that a cancellation ended, which the context does
    /// not take (it is unwinding: see `cancel.rs`): Running/Ready → Parked
    /// again, in the *same* park, so the wakers of this wait still work.
    #[inline]
    pub(crate) fn repark(&self) {
        debug_assert!(
            matches!(self.get(), State::Running | State::Ready),
            "repark from {:?}",
            self.get()
        );
        debug_assert_eq!(self.wakeup.get(), Wakeup::Cancelled);
        self.lifecycle.set(State::Parked);
    }

    /// Back from a park: Running (a resumed coroutine) or Ready (a woken root
    /// whose hub loop returned) → Running; ends this park (its wakers go
    /// stale) and returns how it ended.
    #[inline]
    pub(crate) fn end_park(&self) -> Wakeup {
        debug_assert!(
            matches!(self.get(), State::Running | State::Ready),
            "end_park from {:?}",
            self.get()
        );
        self.lifecycle.set(State::Running);
        self.park_seq.set(self.park_seq.get() + 1);
        let w = self.wakeup.get();
        if w != Wakeup::Cancelled {
            // From here on the context runs its own code (which may panic).
            self.calm_park.set(false);
        }
        w
    }

    /// Running → Running: a wait that ends before it suspends. Its wakers
    /// (a timer, a joiner, a queued unparker, handed out for this park) go
    /// stale, so they cannot end the context's next park.
    #[inline]
    pub(crate) fn abandon_park(&self) {
        debug_assert!(
            self.is(State::Running),
            "abandon_park from {:?}",
            self.get()
        );
        self.park_seq.set(self.park_seq.get() + 1);
        self.calm_park.set(false);
    }

    /// Running → Ready: a coroutine yields (the hub loop requeues it).
    #[inline]
    pub(crate) fn yield_(&self) {
        debug_assert!(self.is(State::Running), "yield from {:?}", self.get());
        self.lifecycle.set(State::Ready);
    }

    /// Running/New → Done: the body returned (or unwound), or a task that
    /// never ran is completed (killed before its start, no stack).
    #[inline]
    pub(crate) fn complete(&self) {
        debug_assert!(
            matches!(self.get(), State::Running | State::New),
            "complete from {:?}",
            self.get()
        );
        self.lifecycle.set(State::Done);
    }

    // ---- cancellation ----

    /// Records a kill. Returns false if one was requested before ("delivered
    /// once": nothing to do). A kill replaces a pending timeout.
    #[inline]
    pub(crate) fn request_kill(&self) -> bool {
        if self.killed.get() {
            return false;
        }
        self.killed.set(true);
        self.cancel.set(KILL);
        true
    }

    /// The thread is exiting: a kill that stays pending until the coroutine
    /// has finished (it is not consumed by its delivery). Returns false if
    /// one was pending already (nothing to wake).
    #[inline]
    pub(crate) fn request_exit_kill(&self) -> bool {
        self.killed.set(true);
        self.exit_kill.set(true);
        if self.cancel.get() == KILL {
            return false;
        }
        self.cancel.set(KILL);
        true
    }

    /// Records the expiry of the `timeout` scope `scope`. Returns false if
    /// what is pending already wins: a kill, or the timeout of `scope` or of
    /// an enclosing scope (scopes are numbered in the order they are entered,
    /// so an enclosing one has a smaller number: unwinding to it passes
    /// through the inner one too). An inner scope's pending timeout is
    /// replaced by an enclosing one's, so neither is lost.
    #[inline]
    pub(crate) fn request_timeout(&self, scope: u64) -> bool {
        debug_assert!(scope != NO_CANCEL && scope != KILL);
        let pending = self.cancel.get();
        // `KILL` encodes as the largest number, so it must be tested on its
        // own: the scope comparison would let any timeout replace it.
        if pending == KILL || (pending != NO_CANCEL && pending <= scope) {
            return false;
        }
        self.cancel.set(scope);
        true
    }

    /// The pending cancellation, if any.
    #[inline]
    pub(crate) fn pending(&self) -> Option<Cancel> {
        match self.cancel.get() {
            NO_CANCEL => None,
            KILL => Some(Cancel::Kill),
            scope => Some(Cancel::Timeout(scope)),
        }
    }

    /// Whether a cancellation is pending (the hot-path check).
    #[inline]
    pub(crate) fn cancel_pending(&self) -> bool {
        self.cancel.get() != NO_CANCEL
    }

    /// Whether the context, back from a park that a cancellation ended
    /// (before it runs any code of its own), may take that cancellation as
    /// an unwind: the thread is not unwinding, or the park began while it
    /// was not (then this context was not unwinding, whoever is now: a
    /// destructor of another coroutine that kills this one).
    #[inline]
    pub(crate) fn may_take_cancel(&self) -> bool {
        self.calm_park.get() || may_unwind()
    }

    /// Whether a cancellation waits in a park that holds it until no
    /// context of the thread unwinds: parked with one pending, in a park
    /// that began while some context was unwinding (see `cancel.rs`).
    #[inline]
    pub(crate) fn cancel_held(&self) -> bool {
        self.is(State::Parked) && self.cancel_pending() && !self.calm_park.get()
    }

    /// Records that the park that just began is one the thread was
    /// unwinding in, `alone` if no other context was parked so: then this
    /// context is certainly the one unwinding (nobody else could be, but
    /// for contexts that yielded mid-unwind, which moss does not count: the
    /// verdict only decides whether a `kill` waits, see `cancel.rs`).
    #[inline]
    pub(crate) fn begin_unwinding_park(&self, alone: bool) {
        self.unwinding_park.set(true);
        self.unwinding_alone.set(alone);
    }

    /// The park recorded by `begin_unwinding_park` is over; true if there
    /// was one.
    #[inline]
    pub(crate) fn end_unwinding_park(&self) -> bool {
        self.unwinding_alone.set(false);
        self.unwinding_park.replace(false)
    }

    /// Whether the current park began while this context was certainly
    /// the one unwinding (see `begin_unwinding_park`): a cancellation it
    /// holds waits for its own destructor's wait, which ends as any wait.
    #[inline]
    pub(crate) fn unwinding_alone(&self) -> bool {
        self.unwinding_alone.get()
    }

    /// Forgets what the last park knew (see [`TaskState::may_take_cancel`]):
    /// for a park whose caller may run code of its own before it decides
    /// what to do with a cancellation (a C hook that fails its call).
    #[inline]
    pub(crate) fn forget_calm_park(&self) {
        self.calm_park.set(false);
    }

    /// Takes the pending cancellation for delivery (as an unwind); clears
    /// `cancel_seen`.
    #[inline]
    pub(crate) fn take_cancel(&self) -> Option<Cancel> {
        self.calm_park.set(false);
        let c = self.pending();
        if !self.exit_kill.get() {
            self.cancel.set(NO_CANCEL);
        }
        self.cancel_seen.set(Seen::No);
        c
    }

    /// A non-unwinding wait reported the pending cancellation to its caller.
    #[inline]
    pub(crate) fn mark_seen(&self) {
        debug_assert!(self.cancel_pending(), "mark_seen without a cancellation");
        let now = if self.may_take_cancel() {
            Seen::Running
        } else {
            Seen::Unwinding
        };
        self.cancel_seen.set(self.cancel_seen.get().max(now));
    }

    /// Withdraws the reports of waits that saw the pending cancellation
    /// but ended as if they had not: back to `before`, what [`seen`]
    /// said before them. For an operation that completed before its
    /// cancellation took effect (a ring operation): its caller gets the
    /// result, so nothing that follows is the cancellation's doing, and a
    /// `timeout` that ends before the next blocking point must not turn
    /// that result into `Elapsed`.
    ///
    /// [`seen`]: TaskState::seen
    #[inline]
    pub(crate) fn unsee(&self, before: Seen) {
        self.cancel_seen.set(before);
    }

    /// Whether and how a pending cancellation was reported without being
    /// delivered.
    #[inline]
    pub(crate) fn seen(&self) -> Seen {
        self.cancel_seen.get()
    }

    /// The `timeout` scope `scope` ends: drops its cancellation if it is
    /// still pending (it fired but was never delivered) and returns whether
    /// (and how) a non-unwinding wait reported it.
    #[inline]
    pub(crate) fn end_timeout(&self, scope: u64) -> Seen {
        if self.cancel.get() != scope {
            return Seen::No;
        }
        self.cancel.set(NO_CANCEL);
        self.cancel_seen.replace(Seen::No)
    }

    /// A coroutine killed before it ever ran: marks it killed without a
    /// pending cancellation (there is nothing to unwind).
    #[inline]
    pub(crate) fn kill_unstarted(&self) {
        debug_assert!(self.is(State::New), "kill_unstarted from {:?}", self.get());
        self.killed.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_park_is_woken_once_and_stale_wakers_do_nothing() {
        let s = TaskState::new();
        s.resume();
        let seq = s.park_seq();
        s.park();
        assert!(s.wake(seq, Wakeup::TimedOut));
        assert!(!s.wake(seq, Wakeup::Notified), "already woken");
        s.resume();
        assert_eq!(s.end_park(), Wakeup::TimedOut);
        s.park();
        assert!(
            !s.wake(seq, Wakeup::Notified),
            "a waker of the previous park"
        );
        assert!(s.wake_parked(Wakeup::Cancelled));
    }

    #[test]
    fn a_repark_keeps_the_wakers_of_its_park() {
        let s = TaskState::new();
        s.resume();
        let seq = s.park_seq();
        s.park();
        assert!(s.wake_parked(Wakeup::Cancelled));
        s.resume();
        s.repark();
        assert!(s.wake(seq, Wakeup::Notified), "the same park");
        s.resume();
        assert_eq!(s.end_park(), Wakeup::Notified);
        assert_eq!(s.park_seq(), seq + 1);
    }

    #[test]
    fn a_kill_is_requested_once_and_beats_a_timeout() {
        let s = TaskState::new_root();
        assert!(s.request_timeout(3));
        assert!(!s.request_timeout(4));
        assert!(s.request_kill());
        assert!(!s.request_kill());
        assert_eq!(s.pending(), Some(Cancel::Kill));
        s.mark_seen();
        assert_eq!(s.seen(), Seen::Running);
        assert_eq!(s.take_cancel(), Some(Cancel::Kill));
        assert!(s.seen() == Seen::No && !s.cancel_pending() && s.killed.get());
        assert!(!s.request_kill(), "killed once");
    }

    #[test]
    fn a_pending_kill_is_not_replaced_by_a_timeout() {
        let s = TaskState::new_root();
        assert!(s.request_timeout(4));
        assert!(s.request_kill());
        for scope in [1, 4, 9] {
            assert!(!s.request_timeout(scope), "scope {scope} replaced the kill");
        }
        assert_eq!(s.pending(), Some(Cancel::Kill));
        assert_eq!(
            s.end_timeout(4),
            Seen::No,
            "the kill is not the scope's timeout"
        );
        assert_eq!(s.take_cancel(), Some(Cancel::Kill));
    }

    #[test]
    fn an_enclosing_timeout_replaces_an_inner_one() {
        let s = TaskState::new_root();
        assert!(s.request_timeout(5));
        assert!(!s.request_timeout(9), "an inner scope does not replace");
        assert!(s.request_timeout(2), "an enclosing scope does");
        assert_eq!(s.pending(), Some(Cancel::Timeout(2)));
        assert_eq!(
            s.end_timeout(5),
            Seen::No,
            "the inner scope ends: not its timeout"
        );
        assert_eq!(s.pending(), Some(Cancel::Timeout(2)));
    }

    #[test]
    fn an_exit_kill_stays_pending_after_its_delivery() {
        let s = TaskState::new_root();
        assert!(s.request_timeout(3));
        assert!(s.request_exit_kill(), "replaces the timeout");
        assert!(!s.request_exit_kill());
        assert_eq!(s.take_cancel(), Some(Cancel::Kill));
        assert_eq!(s.pending(), Some(Cancel::Kill), "still pending");
        assert!(!s.request_kill(), "killed already");
    }

    #[test]
    fn a_timeout_scope_clears_only_its_own_cancellation() {
        let s = TaskState::new_root();
        assert!(s.request_timeout(7));
        assert_eq!(s.end_timeout(6), Seen::No);
        assert_eq!(s.pending(), Some(Cancel::Timeout(7)));
        s.mark_seen();
        assert_eq!(s.end_timeout(7), Seen::Running);
        assert!(!s.cancel_pending());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "park from Parked")]
    fn an_illegal_transition_fails_in_debug_builds() {
        let s = TaskState::new_root();
        s.park();
        s.park();
    }
}
