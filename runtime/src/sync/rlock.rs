//! `RLock<T>`: a re-entrant lock (Python's `threading.RLock`), owned by one
//! coroutine, or one thread's root, at a time.
//!
//! It is the [`Mutex`](super::Mutex) machinery (`RawMutex`: FIFO hand-off,
//! cancellation-safe waits) plus an owner and a depth:
//!
//! ```text
//!   lock:    owner == me?  → depth += 1                    (no atomic RMW)
//!            else          → raw lock (may wait), owner = me, depth = 1
//!   unlock:  depth -= 1; at 0: owner = none, raw unlock (hands it on)
//! ```
//!
//! The owner is the caller's coroutine id (a thread's root has one too),
//! unique in the process and never reused, so a coroutine and the root of
//! its thread, or two coroutines of one thread, exclude each other like two
//! threads. Only the owner ever writes its own id into `owner`, so a
//! `Relaxed` load that sees the caller's id proves the caller owns the lock
//! (the argument of std's `ReentrantLock`); `depth` is only touched by the
//! owner.
//!
//! Like std's `ReentrantLock`, the guard gives shared access only (`&T`):
//! re-entry means several guards of one owner exist at once. Put a `Cell` or
//! `RefCell` inside for mutation. Guards are `!Send`: a lock owned by a
//! coroutine is released by that coroutine's thread.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::Timeout;
use super::mutex::RawMutex;
use super::waitlist::deadline_in;

/// No owner. Coroutine ids start at 1.
const NONE: u64 = 0;

/// The caller's identity as an owner: its coroutine id (a thread's root has
/// one too); unique in the process, never reused, never 0.
#[inline]
pub(super) fn context_id() -> u64 {
    // `crate::current()` would also clone the coroutine's name, and create
    // a hub (which needs fds) on a plain thread.
    let id = crate::hub::current_id().as_u64();
    debug_assert_ne!(id, NONE);
    id
}

/// A re-entrant lock: the coroutine (or plain thread) that holds it may lock
/// it again without deadlocking, and releases it when its last guard is
/// dropped (Python's `threading.RLock`, std's unstable `ReentrantLock`).
///
/// `Send + Sync` for `T: Send`. Waiters from any coroutine or thread queue in
/// FIFO order; a `kill` or `timeout` of a waiter unwinds it without the lock.
/// The guard gives `&T`: use a `Cell` or `RefCell` inside to mutate.
///
/// ```
/// use std::cell::RefCell;
/// use moss::sync::RLock;
/// let log = RLock::new(RefCell::new(Vec::new()));
/// fn outer(log: &RLock<RefCell<Vec<&'static str>>>) {
///     let g = log.lock();
///     g.borrow_mut().push("outer");
///     inner(log); // locks again: no deadlock
/// }
/// fn inner(log: &RLock<RefCell<Vec<&'static str>>>) {
///     log.lock().borrow_mut().push("inner");
/// }
/// outer(&log);
/// assert_eq!(*log.lock().borrow(), ["outer", "inner"]);
/// assert!(!log.is_locked());
/// ```
pub struct RLock<T: ?Sized> {
    raw: RawMutex,
    owner: AtomicU64,
    /// How many guards the owner holds; only the owner touches it.
    depth: UnsafeCell<usize>,
    value: T,
}

// The raw lock admits one owner at a time and guards are `!Send`, so every
// `&T` they give out lives on the owner's thread while it owns the lock.
// SAFETY: so sharing the lock only moves `T` between threads (`T: Send`), as
// for std's `ReentrantLock`; `depth` is only accessed by the owner.
unsafe impl<T: ?Sized + Send> Sync for RLock<T> {}
// SAFETY: owning the lock is owning the `T`.
unsafe impl<T: ?Sized + Send> Send for RLock<T> {}

impl<T> RLock<T> {
    /// An unlocked lock holding `v`.
    pub const fn new(v: T) -> RLock<T> {
        RLock {
            raw: RawMutex::new(),
            owner: AtomicU64::new(NONE),
            depth: UnsafeCell::new(0),
            value: v,
        }
    }

    /// The value, consuming the lock.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: ?Sized> RLock<T> {
    /// Acquires the lock, or enters it again if the caller holds it; waits
    /// as long as it takes otherwise. A `kill` or `timeout` of the waiter
    /// unwinds it (without the lock).
    #[inline]
    pub fn lock(&self) -> RLockGuard<'_, T> {
        crate::coop::proceed();
        let me = context_id();
        if !self.reenter(me) {
            self.raw.lock("RLock::lock");
            self.acquired(me);
        }
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Acquires or re-enters the lock if that needs no waiting.
    pub fn try_lock(&self) -> Option<RLockGuard<'_, T>> {
        let me = context_id();
        if !self.reenter(me) {
            if !self.raw.try_lock() {
                return None;
            }
            self.acquired(me);
        }
        Some(RLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// [`lock`](Self::lock), giving up after `d` (`Duration::ZERO` is
    /// [`try_lock`](Self::try_lock)). Re-entry never waits.
    pub fn lock_timeout(&self, d: Duration) -> Result<RLockGuard<'_, T>, Timeout> {
        crate::coop::proceed();
        let me = context_id();
        if !self.reenter(me) {
            self.raw.lock_until(deadline_in(d), "RLock::lock")?;
            self.acquired(me);
        }
        Ok(RLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// Whether anyone holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// Whether the caller (this coroutine, or this thread's root) holds it.
    pub fn is_owned(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == context_id()
    }

    /// The value, through the exclusive borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// One level deeper if the caller owns the lock.
    #[inline]
    fn reenter(&self, me: u64) -> bool {
        if self.owner.load(Ordering::Relaxed) != me {
            return false;
        }
        // SAFETY: we own the lock (see the module docs): only we touch depth.
        let depth = unsafe { &mut *self.depth.get() };
        *depth = depth
            .checked_add(1)
            .expect("moss: RLock re-entered more than usize::MAX times");
        true
    }

    /// The raw lock was just taken by `me`.
    #[inline]
    fn acquired(&self, me: u64) {
        // SAFETY: we own the raw lock; the previous owner reset depth to 0
        // before releasing it, and the raw lock orders that before us.
        unsafe { *self.depth.get() = 1 };
        self.owner.store(me, Ordering::Relaxed);
    }
}

impl<T: Default> Default for RLock<T> {
    fn default() -> RLock<T> {
        RLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RLock");
        match self.try_lock() {
            Some(g) => d.field("value", &&*g),
            None => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Shared access to an [`RLock`]'s value; the lock is released when the
/// owner's last guard is dropped.
///
/// `!Send`: the lock belongs to the coroutine (or thread) that took it, so
/// its guard cannot move to another thread:
///
/// ```compile_fail,E0277
/// let l = moss::sync::RLock::new(0);
/// let g = l.lock();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(g));
/// });
/// ```
pub struct RLockGuard<'a, T: ?Sized> {
    lock: &'a RLock<T>,
    /// The owner is the coroutine that locked: the guard stays on its thread.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard only shares `&T` with other threads.
unsafe impl<T: ?Sized + Sync> Sync for RLockGuard<'_, T> {}

impl<T: ?Sized> Deref for RLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.lock.value
    }
}

impl<T: ?Sized> Drop for RLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let l = self.lock;
        // SAFETY: the guard proves the caller's context owns the lock, on
        // this thread (the guard is `!Send`): only it touches depth.
        let depth = unsafe { &mut *l.depth.get() };
        *depth -= 1;
        if *depth == 0 {
            l.owner.store(NONE, Ordering::Relaxed);
            // SAFETY: we own the raw lock; this is the last guard.
            unsafe { l.raw.unlock() };
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
