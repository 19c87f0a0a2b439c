//! The FIFO wait list every `moss::sync` primitive is built on.
//!
//! A blocking call that cannot proceed puts a [`Waiter`] *on its own stack*
//! into a [`WaitList`] that lives inside the primitive's lock (`lock.rs`),
//! releases the lock and parks (see [`crate::park`]). Whoever makes progress
//! possible pops the first waiter under the same lock, *hands* it what it
//! waited for (an item, a permit, the lock) and wakes it after unlocking.
//! Nothing is allocated per wait: the list is a `VecDeque` of pointers to
//! waiters, and a waiter stays where it is until it has left the list.
//!
//! A waiter's life, one `AtomicU8`:
//!
//! ```text
//!   IDLE ──push──▶ WAITING ──hand / take (notifier, under the lock)──▶ HANDED
//!                     │    ──wake_all(woken) (notifier, under the lock)──▶ WOKEN
//!                     └────remove (the waiter itself, under the lock)──▶ LEFT
//! ```
//!
//! Every transition out of `WAITING` happens under the owner's lock, so a
//! waiter that timed out or was cancelled re-locks and finds either that it
//! is still queued (it removes itself: nothing was given to it) or that a
//! notifier got there first (then it *has* the item or permit and must use it
//! or pass it on — see the callers). Nothing handed out is ever lost.
//!
//! The notifier's last access to a waiter is the `Release` store of its final
//! state; it takes the waiter's [`Unparker`] out before that store. A waiter
//! that sees a final state with an `Acquire` load (without the lock) may
//! return and free its stack frame at once.
//!
//! # Invariants
//! * A `WaitList` lives inside the [`Lock`] whose guard [`park_waiter`] is
//!   given, and is only touched through that guard (`&mut WaitList` therefore
//!   proves the lock is held).
//! * Every pointer in a list refers to a live `Waiter` in state `WAITING`
//!   that does not move: its owner is inside [`park_waiter`] (which returns
//!   only once the waiter has left the list) and never unwinds in between.
//!   As a last line of defence, dropping a `WAITING` waiter aborts.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::lock::{Lock, LockGuard};
use crate::hub::Hub;

use crate::park::{self, Unparker, Wakeup};

const IDLE: u8 = 0;
const WAITING: u8 = 1;
const HANDED: u8 = 2;
const WOKEN: u8 = 3;
const LEFT: u8 = 4;

/// Locks a primitive's state.
#[inline]
pub(crate) fn lock<G>(m: &Lock<G>) -> LockGuard<'_, G> {
    m.lock()
}

/// The deadline `d` from now; `None` (never) when it is past the end of time.
pub(crate) fn deadline_in(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Whether `deadline` has passed (a poll, `Duration::ZERO`, has passed).
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| d <= Instant::now())
}

/// One blocked call, on the caller's stack. `T` is what is handed over:
/// the item a getter receives or a putter offers, `()` for permits.
pub(crate) struct Waiter<T> {
    state: AtomicU8,
    /// Written by the owner while not queued or under the lock; taken by the
    /// notifier under the lock.
    unparker: UnsafeCell<Option<Unparker>>,
    /// Same discipline as `unparker`; read by the owner after a final state.
    slot: UnsafeCell<Option<T>>,
}

impl<T> Waiter<T> {
    /// A waiter that offers `slot` (a putter's item) or expects one (`None`).
    pub(crate) fn new(slot: Option<T>) -> Waiter<T> {
        Waiter {
            state: AtomicU8::new(IDLE),
            unparker: UnsafeCell::new(None),
            slot: UnsafeCell::new(slot),
        }
    }

    /// Takes what was handed to this waiter (or what it offered, if nobody
    /// took it). Only after [`park_waiter`] returned.
    pub(crate) fn take_slot(&mut self) -> Option<T> {
        debug_assert_ne!(*self.state.get_mut(), WAITING);
        self.slot.get_mut().take()
    }

    /// Ends the wait of a queued waiter: hands over, then wakes.
    ///
    /// # Safety
    /// `p` was just popped from a list whose lock the caller holds.
    #[inline]
    unsafe fn finish(p: NonNull<Waiter<T>>, state: u8) -> Wake {
        // SAFETY: per the list invariants the waiter is alive and its owner
        // does not touch the cell while it is queued and we hold the lock.
        let u = unsafe { (*(*p.as_ptr()).unparker.get()).take() };
        // SAFETY: still alive: the owner frees it only after seeing this store.
        unsafe { (*p.as_ptr()).state.store(state, Ordering::Release) };
        // `p` may dangle from here on.
        Wake(u.expect("a queued waiter has an unparker"))
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == WAITING {
            // A list still points here: continuing would be a use after free.
            eprintln!("moss: a sync waiter was dropped while still queued; aborting");
            std::process::abort();
        }
    }
}

/// A wake-up to deliver once the primitive's lock is released.
#[must_use = "the waiter sleeps until it is unparked"]
pub(crate) struct Wake(Unparker);

impl Wake {
    #[inline]
    pub(crate) fn unpark(self) {
        self.0.unpark();
    }
}

/// Wakes every wake-up of a list, in order.
pub(crate) fn unpark_all(wakes: Vec<Wake>) {
    for w in wakes {
        w.unpark();
    }
}

/// A FIFO of waiters; see the module docs for the invariants.
///
/// In a forked child, the waiters a list held at the fork are the parent's
/// (their contexts never run in the child): the first hand-off there drops
/// them from the list, so nothing is handed to a waiter that cannot take it
/// (an item lost, a lock held forever).
pub(crate) struct WaitList<T> {
    q: VecDeque<NonNull<Waiter<T>>>,
    /// The fork generation whose foreign waiters were last dropped.
    generation: u64,
}

// SAFETY: the pointers are only dereferenced under the lock that owns the
// list (see the invariants), and what crosses threads through them is the
// waiter's `T` (hence `T: Send`), its `Unparker` (Send) and its atomic state.
unsafe impl<T: Send> Send for WaitList<T> {}

impl<T> WaitList<T> {
    pub(crate) const fn new() -> WaitList<T> {
        WaitList {
            q: VecDeque::new(),
            generation: 0,
        }
    }

    /// Drops the waiters of another process (see the type's docs); one load
    /// and compare when there are none.
    #[inline]
    fn forget_foreign(&mut self) {
        let g = crate::sys::atfork::generation();
        if self.generation != g {
            self.drop_foreign(g);
        }
    }

    #[cold]
    #[inline(never)]
    fn drop_foreign(&mut self, generation: u64) {
        self.q.retain(|p| {
            // SAFETY: queued, so alive (a foreign one in this process's
            // copy of its parent's memory); we hold the lock (`&mut self`).
            let w = unsafe { p.as_ref() };
            // SAFETY: as above: nobody else touches a queued waiter's cell.
            let ours = unsafe { &*w.unparker.get() }
                .as_ref()
                .is_some_and(Unparker::in_this_process);
            if !ours {
                w.state.store(LEFT, Ordering::Relaxed);
            }
            ours
        });
        self.generation = generation;
    }

    /// Whether no waiter at all is queued, a forked child's foreign ones
    /// included (for invariant checks that only read).
    pub(crate) fn none_queued(&self) -> bool {
        self.q.is_empty()
    }

    /// Whether no waiter (of this process) is queued.
    pub(crate) fn is_empty(&mut self) -> bool {
        if !self.q.is_empty() {
            self.forget_foreign();
        }
        self.q.is_empty()
    }

    /// How many waiters are queued.
    pub(crate) fn len(&mut self) -> usize {
        if !self.q.is_empty() {
            self.forget_foreign();
        }
        self.q.len()
    }

    /// Queues `w` at the back, for the calling context's next park.
    ///
    /// # Safety
    /// `w` must not move or be dropped until [`park_waiter`] has returned for
    /// it, and the caller must call `park_waiter` right after releasing the
    /// lock (with this list's owner and accessor), without unwinding between.
    #[inline]
    pub(crate) unsafe fn push(&mut self, w: &Waiter<T>) {
        debug_assert_eq!(w.state.load(Ordering::Relaxed), IDLE);
        // SAFETY: `w` is not queued anywhere yet, so nobody else accesses it.
        unsafe { *w.unparker.get() = Some(park::unparker()) };
        w.state.store(WAITING, Ordering::Relaxed);
        self.q.push_back(NonNull::from(w));
    }

    /// Hands `item` to the first waiter, or gives it back if there is none.
    #[inline]
    pub(crate) fn hand(&mut self, item: T) -> Result<Wake, T> {
        if !self.q.is_empty() {
            self.forget_foreign();
        }
        let Some(p) = self.q.pop_front() else {
            return Err(item);
        };
        // SAFETY: queued, so alive; we hold the lock (`&mut self`), and the
        // owner reads the slot only after `finish`'s store.
        unsafe { *(*p.as_ptr()).slot.get() = Some(item) };
        // SAFETY: just popped under the lock.
        Ok(unsafe { Waiter::finish(p, HANDED) })
    }

    /// Takes the item the first waiter offers (a blocked putter).
    #[inline]
    pub(crate) fn take(&mut self) -> Option<(T, Wake)> {
        if !self.q.is_empty() {
            self.forget_foreign();
        }
        let p = self.q.pop_front()?;
        // SAFETY: as in `hand`.
        let item = unsafe { (*(*p.as_ptr()).slot.get()).take() };
        // SAFETY: just popped under the lock.
        let wake = unsafe { Waiter::finish(p, HANDED) };
        Some((item.expect("a queued putter offers an item"), wake))
    }

    /// Ends every wait: `HANDED` (with nothing in the slot: an event, a
    /// permit without payload) or `WOKEN` (re-check the condition, e.g. the
    /// other side closed).
    pub(crate) fn wake_all(&mut self, handed: bool) -> Vec<Wake> {
        let state = if handed { HANDED } else { WOKEN };
        if !self.q.is_empty() {
            self.forget_foreign();
        }
        self.q
            .drain(..)
            // SAFETY: each was queued, and we hold the lock.
            .map(|p| unsafe { Waiter::finish(p, state) })
            .collect()
    }

    /// Removes a waiter that gives up; false if it is not queued here.
    fn remove(&mut self, w: &Waiter<T>) -> bool {
        let p = NonNull::from(w);
        // Mostly the newest or the oldest waiter gives up: search from the back.
        match self.q.iter().rposition(|q| *q == p) {
            Some(i) => {
                self.q.remove(i);
                w.state.store(LEFT, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// How a queued wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It was handed what it waited for (in its slot, or taken from it).
    Handed,
    /// Woken without a hand-over: re-check the condition.
    Woken,
    /// It left the list by itself (deadline or cancellation).
    Left,
}

/// Parks the owner of the queued waiter `w` until it is handed something or
/// woken, its deadline passes or it is cancelled; the waiter is off the list
/// when this returns. Also returns why the last park ended: with
/// `Wakeup::Cancelled` (also reported when a cancellation arrived after the
/// hand-off but before the waiter ran) the caller must pass on anything it
/// was handed, then call [`park::deliver_cancel`]. `Cancelled` comes only
/// when the caller may unwind; while it is unwinding already, a cancellation
/// ends a timed wait as its deadline would (`TimedOut`) and leaves an untimed
/// one waiting.
#[inline]
pub(crate) fn park_waiter<T, G>(
    w: &Waiter<T>,
    deadline: Option<Instant>,
    what: &'static str,
    owner: &Lock<G>,
    list: impl Fn(&mut G) -> &mut WaitList<T>,
) -> (Outcome, Wakeup) {
    let hub = Hub::current();
    loop {
        // `Cancelled` only when it can be delivered (see `park_until`).
        let mut why = park::park_until_on(hub, deadline, what);
        if why != Wakeup::Cancelled && hub.current_header().state.cancel_pending() {
            why = cancelled_after_wake(hub, why);
        }
        if let Some(o) = outcome(w.state.load(Ordering::Acquire)) {
            return (o, why);
        }
        let mut g = lock(owner);
        if let Some(o) = outcome(w.state.load(Ordering::Acquire)) {
            return (o, why);
        }
        if why == Wakeup::Notified {
            // Spurious: the next park needs an unparker of its own.
            // SAFETY: we hold the lock, so no notifier reads the cell now.
            unsafe { *w.unparker.get() = Some(park::unparker()) };
            continue;
        }
        let removed = list(&mut g).remove(w);
        debug_assert!(removed, "a WAITING waiter is in its list");
        return (Outcome::Left, why);
    }
}

/// Woken by a hand-off, then cancelled before it ran: the cancellation
/// takes effect at this blocking point if it may (so what was handed is
/// passed on); otherwise the wake-up `why` stands.
#[cold]
#[inline(never)]
fn cancelled_after_wake(hub: &Hub, why: Wakeup) -> Wakeup {
    if hub.current_header().state.may_take_cancel() {
        Wakeup::Cancelled
    } else {
        why
    }
}

/// Waits on the list `list` selects until a notifier ends the wait (a
/// `wake_all` or a `hand` without payload: the condition now holds), the
/// deadline passes, or the caller is cancelled (which unwinds it). `g` holds
/// `owner`'s lock: the caller checked under it that the condition does not
/// hold. Returns false if the deadline passed first (or had already).
pub(crate) fn wait_notified<G>(
    mut g: LockGuard<'_, G>,
    owner: &Lock<G>,
    deadline: Option<Instant>,
    what: &'static str,
    list: impl Fn(&mut G) -> &mut WaitList<()>,
) -> bool {
    if expired(deadline) {
        return false;
    }
    let w = Waiter::new(None);
    // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
    unsafe { list(&mut g).push(&w) };
    drop(g);
    let (outcome, why) = park_waiter(&w, deadline, what, owner, list);
    if why == Wakeup::Cancelled {
        park::deliver_cancel();
    }
    outcome != Outcome::Left
}

fn outcome(state: u8) -> Option<Outcome> {
    match state {
        HANDED => Some(Outcome::Handed),
        WOKEN => Some(Outcome::Woken),
        _ => None,
    }
}

/// A one-shot wake-up shared by the sources a `wait_any` watches, or
/// registered by a future awaiting one source (`AsyncResult`'s).
pub(crate) struct Signal {
    fired: AtomicBool,
    target: Target,
}

enum Target {
    /// The next park of a `wait_any` caller.
    Unpark(Unparker),
    /// The task awaiting a future.
    Wake(Waker),
}

impl Signal {
    /// A signal that wakes the calling context's next park.
    pub(crate) fn new() -> Arc<Signal> {
        Arc::new(Signal {
            fired: AtomicBool::new(false),
            target: Target::Unpark(park::unparker()),
        })
    }

    /// A signal that wakes the task of `w`.
    pub(crate) fn waking(w: Waker) -> Arc<Signal> {
        Arc::new(Signal {
            fired: AtomicBool::new(false),
            target: Target::Wake(w),
        })
    }

    pub(crate) fn fire(&self) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            match &self.target {
                Target::Unpark(u) => u.unpark(),
                Target::Wake(w) => w.wake_by_ref(),
            }
        }
    }

    /// Whether this signal still waits to wake the task of `w`.
    pub(crate) fn will_wake(&self, w: &Waker) -> bool {
        !self.fired.load(Ordering::Acquire)
            && matches!(&self.target, Target::Wake(x) if x.will_wake(w))
    }
}

/// The `wait_any` signals registered with a source; fired (and dropped) when
/// the source becomes ready.
pub(crate) struct Watchers {
    list: Vec<Arc<Signal>>,
}

impl Watchers {
    pub(crate) const fn new() -> Watchers {
        Watchers { list: Vec::new() }
    }

    pub(crate) fn add(&mut self, s: &Arc<Signal>) {
        self.list.push(s.clone());
    }

    pub(crate) fn remove(&mut self, s: &Arc<Signal>) {
        self.list.retain(|x| !Arc::ptr_eq(x, s));
    }

    /// Takes every watcher out, to fire with [`fire_all`] after the owner's
    /// lock is released. No allocation.
    ///
    /// Never fired under the owner's lock: a task's waker is foreign code,
    /// and an unparker of a context on another thread takes that hub's
    /// queue lock; neither may run inside a runtime-internal critical
    /// section (see `lock.rs`).
    #[inline]
    pub(crate) fn take(&mut self) -> Vec<Arc<Signal>> {
        std::mem::take(&mut self.list)
    }
}

/// Fires the watchers [`Watchers::take`] took out (cheap when there is
/// none).
#[inline]
pub(crate) fn fire_all(watchers: Vec<Arc<Signal>>) {
    if !watchers.is_empty() {
        fire_each(watchers);
    }
}

#[cold]
fn fire_each(watchers: Vec<Arc<Signal>>) {
    for s in watchers {
        s.fire();
    }
}
