//! `ProcessPool::apply_async` callbacks, and what becomes of one whose
//! thread exits before it ran.
//!
//! A callback runs in a coroutine on the caller's hub, so it need not be
//! `Send`. The pool counts it as outstanding until it has run, and `join`
//! waits for that. If the caller's thread exits first, that coroutine never
//! runs again (its hub is gone, or unwinds it), and nothing may wait for it.
//! So each callback has a [`Slot`] with one owner of its fate:
//!
//! ```text
//!   Pending ──the coroutine starts the callback──▶ Running ──it returns──▶ Done
//!      │                                              │
//!      │ thread exit: the thread's list of pending    │ its coroutine is unwound
//!      │ slots is dropped, or the coroutine is        │ or dropped mid-callback
//!      ▼ dropped/unwound before it started            ▼
//!   Abandoned: the callback is dropped unrun     Done: the result is an error
//!   (it may not be Send: it cannot move to       ("the callback's thread exited")
//!   another thread); the AsyncResult is set
//!   from the task's reply by whoever sees the
//!   reply first: the abandoning thread, or
//!   the pool's manager once the reply arrives
//! ```
//!
//! Every path ends in exactly one `finished(1)` for the callback, so `join`
//! and `terminate` never wait for a dead hub, and the `AsyncResult` always
//! becomes ready.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use slab::Slab;

use super::process_pool::Shared;

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;

/// Sets the callback's `AsyncResult` from the task's reply, once the reply
/// is there (it does not wait), without the callback.
pub(crate) type Finish = Box<dyn FnOnce() + Send>;

/// One callback's fate (see the module docs).
pub(crate) struct Slot {
    state: AtomicU8,
    shared: Arc<Shared>,
    /// Whether the task's reply has arrived.
    reply_ready: Box<dyn Fn() -> bool + Send + Sync>,
    finish: Mutex<Option<Finish>>,
    /// The slot's key in its thread's list.
    key: usize,
}

thread_local! {
    /// This thread's pending slots; dropping the list (thread exit)
    /// abandons them.
    static PENDING_SLOTS: RefCell<ThreadSlots> = const { RefCell::new(ThreadSlots(Slab::new())) };
}

struct ThreadSlots(Slab<Arc<Slot>>);

impl Drop for ThreadSlots {
    fn drop(&mut self) {
        for s in self.0.drain() {
            s.abandon();
        }
    }
}

impl Slot {
    /// A pending callback of the calling thread. `reply_ready` tells whether
    /// the task has answered; `finish` sets the `AsyncResult` from that
    /// answer if the callback is abandoned.
    pub(crate) fn register(
        shared: Arc<Shared>,
        reply_ready: impl Fn() -> bool + Send + Sync + 'static,
        finish: Finish,
    ) -> Arc<Slot> {
        let mut parts = Some((Box::new(reply_ready), finish));
        let mut make = |key| {
            let (reply_ready, finish) = parts.take().expect("made once");
            Arc::new(Slot {
                state: AtomicU8::new(PENDING),
                shared: shared.clone(),
                reply_ready,
                finish: Mutex::new(Some(finish)),
                key,
            })
        };
        let registered = PENDING_SLOTS.try_with(|l| {
            let mut l = l.borrow_mut();
            let e = l.0.vacant_entry();
            let s = make(e.key());
            e.insert(s.clone());
            s
        });
        // During thread-local destruction there is no list to join: the
        // slot is abandoned once its guard goes.
        registered.unwrap_or_else(|_| make(usize::MAX))
    }

    /// Pending → Running: the coroutine may call the callback. False if the
    /// slot was abandoned meanwhile (then the callback must not run).
    pub(crate) fn begin(&self) -> bool {
        self.state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Running → Done: the callback returned (and the coroutine set the
    /// result).
    pub(crate) fn done(&self) {
        if self
            .state
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.leave_list();
            self.shared.finished(1);
        }
    }

    /// Ends the slot if nobody else did: a pending callback is abandoned
    /// (its result set from the reply, now or by the manager), a running one
    /// is finished with `interrupted` run by the caller (it sets the
    /// result). Idempotent.
    pub(crate) fn end_early(self: &Arc<Slot>, interrupted: impl FnOnce()) {
        if self
            .state
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            interrupted();
            self.leave_list();
            self.shared.finished(1);
            return;
        }
        self.abandon();
    }

    fn abandon(self: &Arc<Slot>) {
        if self
            .state
            .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.leave_list();
        // Whoever sees the reply first finishes: us now, or the manager.
        if !self.try_finish() {
            self.shared.add_orphan(self.clone());
        }
    }

    /// Sets the result if the reply is there; true if the slot is finished.
    pub(crate) fn try_finish(&self) -> bool {
        if !(self.reply_ready)() {
            return false;
        }
        let f = self.finish.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            f();
            self.shared.finished(1);
        }
        true
    }

    fn leave_list(&self) {
        let _ = PENDING_SLOTS.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut()
                && l.0.get(self.key).is_some_and(|s| std::ptr::eq(&**s, self))
            {
                l.0.remove(self.key);
            }
        });
    }
}

/// Held by the callback's coroutine: if it is dropped or unwound before the
/// callback finished (its thread exits), the slot ends early.
pub(crate) struct Guard<F: FnOnce()> {
    pub(crate) slot: Arc<Slot>,
    /// Sets the result when the callback itself was interrupted.
    pub(crate) interrupted: Option<F>,
}

impl<F: FnOnce()> Drop for Guard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.interrupted.take() {
            self.slot.end_early(f);
        }
    }
}
