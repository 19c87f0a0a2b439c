//! The internal lock that guards each primitive's state and wait list.
//!
//! Critical sections here are a handful of instructions (push or pop a
//! waiter, move an item) and never block or park, so a test-and-set lock
//! beats `std::sync::Mutex`: its unlock is a plain `Release` store instead of
//! an atomic swap, which saves one read-modify-write per critical section —
//! measurable on the same-hub hand-off path (see `benches/sync.rs`).
//!
//! Contention: spin briefly (another core is inside a short section), then
//! yield the thread to the OS (the holder may have been preempted; on a
//! loaded machine spinning would only burn its time slice). Never poisoned:
//! a panic inside a section (only user `Ord` or `Drop` code can panic there)
//! releases the lock during the unwind, and every section leaves the state
//! consistent before calling such code.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A test-and-set lock around `T`.
pub(crate) struct Lock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `value`, so sharing
// it only moves `T` between threads: `T: Send` suffices.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: owning the lock is owning the `T`.
unsafe impl<T: Send> Send for Lock<T> {}

// Every critical section leaves the guarded state consistent before it can
// unwind (see the module docs), so observing it after a panic is fine; this
// keeps the primitives usable across `catch_unwind`, like std's.
impl<T> std::panic::RefUnwindSafe for Lock<T> {}
impl<T> std::panic::UnwindSafe for Lock<T> {}

impl<T> Lock<T> {
    pub(crate) const fn new(v: T) -> Lock<T> {
        Lock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(v),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> LockGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        LockGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if spins < 100 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Access to a [`Lock`]'s value; unlocks when dropped.
pub(crate) struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by us.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held by us and `&mut self` makes this unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
