//! The part of a hub other threads may touch: its cross-thread wake-up queue.
//!
//! ```text
//!   other thread                          the hub's thread
//!   ────────────                          ────────────────
//!   Unparker::unpark ─▶ push(token):      poll_once:
//!     lock, append, unlock                  sleeping = true; items? → timeout 0
//!     has_items = true                      epoll_wait(...)
//!     sleeping? → write the eventfd         sleeping = false
//!                                           has_items? → take the list, wake each
//! ```
//!
//! The eventfd (a mio `Waker` in the hub's epoll set) is written only when
//! the hub is (about to be) asleep in `epoll_wait`, so a busy hub costs a
//! waker no syscall. Both flags are `SeqCst`: either the pusher sees
//! `sleeping` and writes the eventfd, or the hub sees `has_items` before it
//! sleeps.
//!
//! The queue's lock is moss's own spin lock, never a std `Mutex`: `push`
//! runs inside other runtime-internal critical sections (a primitive
//! waking a waiter on another thread under its own lock), and under the
//! monkey patches a contended std `Mutex` would park the calling coroutine
//! through the futex hook while it holds that outer lock; another
//! coroutine of its thread would then spin on the outer lock for ever.
//!
//! A `Remote` is shared through an `Arc` by the hub and every `Unparker` of
//! its contexts; the hub counts those references to know whether another
//! thread could still wake it ("would block forever" is reported only when
//! none can, or when no other thread exists).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sync::lock::Lock;
use crate::task::Token;

pub(crate) struct Remote {
    pub(crate) hub_id: u64,
    queue: Lock<Vec<Token>>,
    has_items: AtomicBool,
    /// The hub is in (or about to enter) a blocking `epoll_wait`.
    sleeping: AtomicBool,
    waker: Arc<mio::Waker>,
    /// The fork generation the hub was made in: in a forked child, the
    /// parent's hubs (whose eventfds the child shares) are never woken.
    generation: u64,
}

impl Remote {
    pub(super) fn new(hub_id: u64, waker: Arc<mio::Waker>) -> Remote {
        Remote {
            hub_id,
            queue: Lock::new(Vec::new()),
            has_items: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            waker,
            generation: crate::sys::atfork::generation(),
        }
    }

    /// Queues a wake-up of `token` for the hub (from any thread). In a
    /// forked child, a wake-up for a hub of the parent (an unparker copied
    /// in some wait list) is dropped: its contexts never run in the child,
    /// its queue's lock may have been held by a thread the child lacks, and
    /// its eventfd is the parent's.
    pub(crate) fn push(&self, token: Token) {
        if !self.in_this_process() {
            return;
        }
        self.queue.lock().push(token);
        self.has_items.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // A failed wake leaves the hub to its timeout; nothing to report.
            let _ = self.waker.wake();
        }
    }

    /// Whether the hub was made by this process (false in a forked child
    /// for a hub of its parent).
    #[inline]
    pub(crate) fn in_this_process(&self) -> bool {
        self.generation == crate::sys::atfork::generation()
    }

    /// Whether wake-ups are queued.
    pub(super) fn has_items(&self) -> bool {
        self.has_items.load(Ordering::SeqCst)
    }

    /// The hub is about to sleep in `epoll_wait`: from now on pushers write
    /// the eventfd. Returns false if items are already queued (then the hub
    /// must not sleep).
    pub(super) fn begin_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        !self.has_items()
    }

    /// The hub is back from `epoll_wait`.
    pub(super) fn end_sleep(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Takes every queued wake-up (on the hub's thread).
    pub(super) fn drain(&self) -> Vec<Token> {
        if !self.has_items() {
            return Vec::new();
        }
        self.take_all()
    }

    /// `drain` with items queued: out of line, keeping the hub loop's
    /// common path (nothing queued) small.
    #[inline(never)]
    fn take_all(&self) -> Vec<Token> {
        self.has_items.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.queue.lock())
    }
}
