//! `block_on`: a coroutine waits for a future, polling it on its own stack.
//!
//! The future is polled right where `block_on` is called. Between polls the
//! caller parks like any other blocking moss call (a coroutine switches to
//! its hub, a thread's root runs the hub loop, a plain thread blocks in
//! `epoll_wait`), and the future's [`Waker`] ends that park through the
//! caller's [`Unparker`]: from the same hub that is a push on the run queue
//! (no syscall), from another thread a push on the hub's cross-thread queue.
//!
//! # The waker: one `Signal` per `block_on`, one word of state
//!
//! An unparker ends one particular wait, but a waker is cloned during one
//! poll and may be woken during any later park of the same `block_on`, or
//! while the future is being polled, or long after `block_on` returned. So
//! the waker points at a `Signal` (reference counted: a waker kept by the
//! future keeps it alive) whose state says what a wake must do:
//!
//! ```text
//!                 poll returned Pending:
//!          ┌───── publish the next wait S (CAS) ─────▶ PARKED(S)
//!          │                                             │
//!        IDLE ◀── reset before each poll ──┐             │ wake: swap to NOTIFIED,
//!          │                               │             │ then unpark wait S
//!          └── wake during the poll ──▶ NOTIFIED ◀───────┘
//!              (swap; nobody is parked)
//! ```
//!
//! * A wake swaps the state to `NOTIFIED`; only the waker that took
//!   `PARKED(S)` out of it unparks, and it unparks wait `S` exactly.
//! * A wake that lands while the future is being polled leaves `NOTIFIED`
//!   behind, so the publishing CAS fails: the wake is not lost, and instead
//!   of parking the caller yields once (the other coroutines run, as they
//!   would if the future had been rescheduled by an executor) and polls
//!   again. A future that keeps waking itself therefore shares the hub
//!   fairly instead of spinning on it.
//! * A published wait is always really parked on (a deliverable
//!   cancellation is delivered before publishing; an untimed cancellable
//!   park returns only once the context was suspended, and one that cannot
//!   be delivered yet leaves it waiting), and it is over once `park`
//!   returns. So
//!   a waker kept after `block_on` returned, or woken late, can only unpark a
//!   wait that is already over: a no-op.
//! * Ordering: every transition is a read-modify-write of the one atomic
//!   (acquire/release), so a waker that published the future's progress
//!   before waking is seen by the next poll, whichever side came first.
//!
//! The `Signal` holds the caller's unparker (which keeps its hub counted as
//! wakeable from outside) only while somebody else holds the waker: a future
//! that returned `Pending` without keeping it can only be ended by a
//! cancellation, and a root waiting on it alone reports "would block forever"
//! instead of hanging. Signals are reused per thread when no waker outlived
//! their `block_on`, so the common case allocates nothing.
//!
//! # Cancellation and panics
//!
//! A `kill` or `timeout` unwinds the caller from its park; the future is a
//! local of `block_on`, so it is dropped first, during that unwind (a
//! destructor that blocks blocks normally). A panic inside `poll` unwinds the
//! same way and surfaces as a panic of the calling coroutine. `block_on`
//! cannot fail, so in a destructor that runs during an unwind it keeps
//! waiting through a further cancellation (which stays pending).

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::park::{self, Unparker};

/// Nobody is parked: a wake only records itself.
const IDLE: u64 = u64::MAX;
/// Woken since the last poll started.
const NOTIFIED: u64 = u64::MAX - 1;
// Any other value: the caller is parked (or about to be) on that wait number.

/// What a `block_on` waker points at. See the module docs.
///
/// # Invariants
/// `target` is written only by the `block_on` that leases the signal, and
/// only (a) while the state is not `PARKED` (then no waker reads it: a waker
/// reads it only after swapping a `PARKED(S)` out of the state, and the
/// owner's release of `PARKED(S)` orders its earlier write before that read)
/// and the target is `None`, or (b) while the owner holds the only reference
/// (no waker exists at all). Once set during a lease it stays set until (b).
struct Signal {
    state: AtomicU64,
    /// The waiting context, set before its first wait is published.
    target: UnsafeCell<Option<Unparker>>,
}

// SAFETY: `state` is atomic; `target` is an `Unparker` (Send + Sync) behind
// the write discipline of the invariants, so wakers on any thread only ever
// read it while nobody writes it.
unsafe impl Sync for Signal {}
// SAFETY: as above; the `Unparker` it holds is `Send`.
unsafe impl Send for Signal {}

impl Signal {
    fn new() -> Signal {
        Signal {
            state: AtomicU64::new(IDLE),
            target: UnsafeCell::new(None),
        }
    }

    #[inline]
    fn wake(&self) {
        let prev = self.state.swap(NOTIFIED, Ordering::AcqRel);
        if prev < NOTIFIED {
            // SAFETY: we took `PARKED(prev)` out of the state, so the owner
            // set the target before publishing it and writes it no more
            // while we (holding a reference) can read it (invariant (a)).
            if let Some(u) = unsafe { &*self.target.get() } {
                u.unpark_wait(prev);
            }
        }
    }

    /// Sets the target if it is not set (owner only, before publishing a
    /// wait: invariant (a)).
    #[inline]
    fn aim(&self) {
        // SAFETY: a shared read; only the owner (the caller) ever writes.
        if unsafe { (*self.target.get()).is_none() } {
            // SAFETY: unset, so no waker reads it (a waker of an earlier
            // wait of this lease would have found it set, and it stays set),
            // and the state is not `PARKED` (the owner publishes waits).
            unsafe { *self.target.get() = Some(park::unparker()) };
        }
    }
}

thread_local! {
    /// A signal no waker points at any more, kept for this thread's next
    /// `block_on`.
    static SPARE: Cell<Option<Arc<Signal>>> = const { Cell::new(None) };
}

/// Hands the signal back when `block_on` ends (returning or unwinding).
struct Lease(Option<Arc<Signal>>);

impl Lease {
    #[inline]
    fn take() -> Lease {
        // During thread-local destruction there is no spare: allocate.
        let spare = SPARE.try_with(Cell::take).ok().flatten();
        Lease(Some(spare.unwrap_or_else(|| Arc::new(Signal::new()))))
    }

    #[inline]
    fn signal(&mut self) -> &mut Arc<Signal> {
        self.0.as_mut().expect("leased until dropped")
    }
}

impl Drop for Lease {
    #[inline]
    fn drop(&mut self) {
        let Some(sig) = self.0.take() else { return };
        if Arc::strong_count(&sig) != 1 {
            // Wakers outlive this call: make their wakes plain no-ops.
            sig.state.store(IDLE, Ordering::Release);
            return;
        }
        // No waker is left, and no `Weak` is ever made: the signal is ours
        // alone. Pairs with the release of the last waker's count.
        fence(Ordering::Acquire);
        // SAFETY: unique (invariant (b)): nobody else reads the target.
        if unsafe { (*sig.target.get()).is_some() } || sig.state.load(Ordering::Relaxed) != IDLE {
            return reset_and_keep(sig);
        }
        let _ = SPARE.try_with(|c| c.set(Some(sig)));
    }
}

/// Resets a used signal no waker points at and keeps it for the next
/// `block_on` of this thread.
#[cold]
fn reset_and_keep(sig: Arc<Signal>) {
    sig.state.store(IDLE, Ordering::Relaxed);
    // SAFETY: the caller checked that `sig` is the only reference
    // (invariant (b)). Dropping the unparker runs no user code.
    unsafe { *sig.target.get() = None };
    let _ = SPARE.try_with(|c| c.set(Some(sig)));
}

/// Runs the future `f` to completion on the calling coroutine's stack and
/// returns its output; the caller parks whenever the future is pending, so
/// its hub keeps running the other coroutines.
///
/// Works for any runtime-agnostic future (channels, locks, timers and I/O of
/// crates that do not need a particular executor). Futures that need a tokio
/// reactor or timer go through `compat::tokio` (cargo feature `tokio`).
///
/// * In a coroutine: it parks until the future's waker fires. A wake from a
///   coroutine of the same hub costs no syscall; any thread may wake it.
/// * On a thread's root: it runs the hub until then; on a thread that never
///   spawned anything, it simply blocks the thread.
/// * A `kill` or `timeout` of the caller drops the future at once and
///   unwinds as usual; a panic inside the future is a panic of the caller.
/// * Like any blocking call, it does not belong in async code: called on an
///   executor's thread (inside a tokio task, say) it blocks that thread.
///
/// ```
/// use futures::channel::oneshot;
/// let (tx, rx) = oneshot::channel();
/// let h = moss::spawn(move || moss::block_on(rx).unwrap() * 2);
/// moss::spawn(move || tx.send(21).unwrap());
/// assert_eq!(h.join().unwrap(), 42);
/// ```
///
/// # Panics
/// If the future panics, or if it is pending in a greenlet started from a
/// coroutine (which cannot suspend that coroutine; wait in the coroutine
/// itself).
pub fn block_on<F: Future>(f: F) -> F::Output {
    // Declared before the future, so dropped after it: a waker the future
    // drops with itself no longer counts when the lease is handed back.
    let mut lease = Lease::take();
    let mut f = pin!(f);
    let data = Arc::as_ptr(lease.signal()).cast::<()>();
    // `data` points at a live `Signal` owned by `lease`, which outlives every
    // use of this waker: it lives in this frame and is only lent out as
    // `&Waker` through `cx`; its clones take their own count (see the vtable).
    // SAFETY: `data` with `VTABLE` is a valid raw waker while `lease` lives
    // (above); never dropped (ManuallyDrop), this waker gives back no count
    // it never took.
    let waker = ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) });
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        let sig = lease.signal();
        wait_for_wake(sig);
        sig.state.swap(IDLE, Ordering::Acquire);
    }
}

/// Parks until the signal is woken (or yields once if it already was).
#[inline(never)]
fn wait_for_wake(sig: &Arc<Signal>) {
    if park::hub_exists() && !park::can_park() {
        panic!(
            "moss::block_on: a greenlet started from a coroutine cannot wait for a pending \
             future; wait in the coroutine itself, or use greenlets from the thread's root"
        );
    }
    // Before a wait is published (see the module docs). A cancellation that
    // cannot be delivered yet (the caller already unwinds: a destructor)
    // leaves the park below waiting on: `block_on` cannot fail.
    park::check_cancel();
    let wait = park::next_wait();
    if Arc::strong_count(sig) == 1 {
        // The future kept no waker: only a wake during the poll (by
        // reference) or a cancellation can end this wait.
        fence(Ordering::Acquire);
        if sig.state.load(Ordering::Relaxed) == NOTIFIED {
            crate::yield_now();
            return;
        }
        // SAFETY: unique (invariant (b)). Without the unparker the hub can
        // tell that no other thread can wake this wait.
        unsafe { *sig.target.get() = None };
        park::park_cancellable(None, "block_on (the future kept no waker)");
        return;
    }
    sig.aim();
    match sig
        .state
        .compare_exchange(IDLE, wait, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => {
            park::park_cancellable(None, "block_on");
        }
        // Woken while it was being polled: poll again after the others ran.
        Err(_) => crate::yield_now(),
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

// Every waker of this vtable has as data a pointer obtained from an
// `Arc<Signal>` (`Arc::as_ptr`), and owns one strong count of it, except
// `block_on`'s own, which borrows the count of its lease and is never dropped.

unsafe fn clone(p: *const ()) -> RawWaker {
    // SAFETY: `p` is a live `Arc<Signal>` pointer (the waker being cloned
    // holds or borrows a count); the new waker owns the count added here.
    unsafe { Arc::increment_strong_count(p.cast::<Signal>()) };
    RawWaker::new(p, &VTABLE)
}

unsafe fn wake(p: *const ()) {
    // SAFETY: only an owning waker is consumed by `wake` (`block_on`'s
    // borrowed one is never passed by value), so its count is ours to take.
    let s = unsafe { Arc::from_raw(p.cast::<Signal>()) };
    s.wake();
}

unsafe fn wake_by_ref(p: *const ()) {
    // SAFETY: the waker woken by reference keeps the signal alive.
    unsafe { &*p.cast::<Signal>() }.wake();
}

unsafe fn drop_waker(p: *const ()) {
    // SAFETY: as in `wake`: an owning waker gives back its own count.
    unsafe { Arc::decrement_strong_count(p.cast::<Signal>()) };
}
