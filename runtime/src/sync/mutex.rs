//! `Mutex<T>`: mutual exclusion for coroutines and threads, with FIFO
//! hand-off and no poisoning.
//!
//! The lock word is one `AtomicU8` with two bits:
//!
//! ```text
//!   LOCKED   someone owns the lock
//!   QUEUED   the wait list may be non-empty: unlock must take the slow path
//!
//!   lock:    CAS 0 → LOCKED                                    (fast path)
//!            else, under the list's lock: take the lock if it is free,
//!            or set QUEUED and queue a waiter, then park
//!   unlock:  CAS LOCKED → 0                                    (fast path)
//!            else, under the list's lock: hand the lock to the first
//!            waiter (the word stays LOCKED, QUEUED while others wait), or
//!            store 0 if nobody waits
//! ```
//!
//! `QUEUED` is only set and cleared under the list's lock, and only while
//! `LOCKED` is set, so `unlock`'s fast path can never miss a waiter. An
//! uncontended lock/unlock pair is two compare-and-swaps: no syscall, no
//! allocation. Under contention the lock is *handed* to the oldest waiter,
//! so waiters acquire it in the order they came and a newcomer never
//! overtakes them; a waiter that is cancelled after the hand-off passes the
//! lock on before it unwinds.
//!
//! # No poisoning
//!
//! A guard dropped during a panic unlocks normally: the next owner sees the
//! data as the panicking code left it, as with `parking_lot`. moss cancels
//! coroutines by unwinding (`kill`, `timeout`), so poisoning would turn every
//! cancelled critical section into an error for everyone else.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::error::Timeout;
use super::lock::Lock;
use super::waitlist::{Outcome, WaitList, Waiter, deadline_in, expired, lock, park_waiter};
use crate::park::{self, Wakeup};

const LOCKED: u8 = 1;
const QUEUED: u8 = 2;

/// A mutual-exclusion lock whose `lock` suspends the calling coroutine (or
/// blocks a plain thread) instead of blocking the hub.
///
/// `Send + Sync` for `T: Send`. Not reentrant: locking it again from the
/// owner deadlocks. Not poisoned by panics (see the module docs).
///
/// ```
/// use std::sync::Arc;
/// use moss::sync::Mutex;
/// let total = Arc::new(Mutex::new(0));
/// let hs: Vec<_> = (0..10)
///     .map(|i| {
///         let total = total.clone();
///         moss::spawn(move || {
///             let mut t = total.lock();
///             moss::yield_now(); // others run, but wait for the lock
///             *t += i;
///         })
///     })
///     .collect();
/// moss::join_all(hs);
/// assert_eq!(*total.lock(), 45);
/// ```
pub struct Mutex<T: ?Sized> {
    raw: RawMutex,
    value: UnsafeCell<T>,
}

// SAFETY: the lock word gives one owner at a time exclusive access to
// `value`, from whatever thread it runs on; so sharing the mutex across
// threads only moves `T` between threads, which `T: Send` allows.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: owning the mutex is owning the `T`.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `v`.
    pub const fn new(v: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            value: UnsafeCell::new(v),
        }
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Acquires the lock, waiting as long as it takes. Waiters get it in the
    /// order they asked. A `kill` or `timeout` of the waiter unwinds it
    /// (without the lock).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        crate::coop::proceed();
        self.raw.lock("Mutex::lock");
        MutexGuard {
            mutex: self,
            _marker: PhantomData,
        }
    }

    /// Acquires the lock if it is free now (and nobody waits for it).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if !self.raw.try_lock() {
            return None;
        }
        Some(MutexGuard {
            mutex: self,
            _marker: PhantomData,
        })
    }

    /// Acquires the lock, giving up after `d` (`Duration::ZERO` is
    /// [`try_lock`](Self::try_lock)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use moss::sync::{Mutex, Timeout};
    /// let m = Mutex::new(());
    /// let held = m.lock();
    /// assert_eq!(m.lock_timeout(Duration::from_millis(5)).err(), Some(Timeout));
    /// drop(held);
    /// assert!(m.lock_timeout(Duration::from_millis(5)).is_ok());
    /// ```
    pub fn lock_timeout(&self, d: Duration) -> Result<MutexGuard<'_, T>, Timeout> {
        crate::coop::proceed();
        self.raw.lock_until(deadline_in(d), "Mutex::lock")?;
        Ok(MutexGuard {
            mutex: self,
            _marker: PhantomData,
        })
    }

    /// Whether some owner holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// The value, through the exclusive borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// The lock word and wait list of a [`Mutex`], without the value: also the
/// lock under [`RLock`](super::RLock) and what a
/// [`Condvar`](super::Condvar) releases and re-takes.
pub(crate) struct RawMutex {
    state: AtomicU8,
    waiters: Lock<WaitList<()>>,
}

impl RawMutex {
    pub(crate) const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU8::new(0),
            waiters: Lock::new(WaitList::new()),
        }
    }

    /// Acquires the lock, waiting as long as it takes (a `kill` or `timeout`
    /// unwinds the caller without it).
    /// `what` names the wait in `moss::dump`.
    #[inline]
    pub(crate) fn lock(&self, what: &'static str) {
        if !self.try_lock() && self.lock_slow(None, what).is_err() {
            unreachable!("no deadline");
        }
    }

    /// Acquires the lock if it is free now (and nobody waits for it).
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Acquires the lock unless `deadline` passes first.
    pub(crate) fn lock_until(
        &self,
        deadline: Option<Instant>,
        what: &'static str,
    ) -> Result<(), Timeout> {
        if self.try_lock() {
            return Ok(());
        }
        self.lock_slow(deadline, what)
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>, what: &'static str) -> Result<(), Timeout> {
        let mut g = lock(&self.waiters);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED == 0 {
                match self.state.compare_exchange(
                    s,
                    s | LOCKED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(()),
                    Err(now) => s = now,
                }
            } else if s & QUEUED != 0 {
                break;
            } else {
                match self.state.compare_exchange(
                    s,
                    s | QUEUED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => s = now,
                }
            }
        }
        // QUEUED may stay set with nobody queued; the next unlock fixes it.
        if expired(deadline) {
            return Err(Timeout);
        }
        let w = Waiter::new(None);
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { g.push(&w) };
        drop(g);
        let (outcome, why) = park_waiter(&w, deadline, what, &self.waiters, |g| g);
        match (outcome, why) {
            (Outcome::Handed, Wakeup::Cancelled) => {
                // SAFETY: it was handed to us: we own it.
                unsafe { self.unlock() }; // pass it on
                park::deliver_cancel()
            }
            (Outcome::Handed, _) => Ok(()),
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            _ => Err(Timeout),
        }
    }

    /// Releases the lock: hands it to the oldest waiter, if any.
    ///
    /// # Safety
    /// The caller owns the lock (it acquired it and has not released it).
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut g = lock(&self.waiters);
        match g.hand(()) {
            Ok(wake) => {
                if g.is_empty() {
                    self.state.store(LOCKED, Ordering::Relaxed);
                }
                drop(g);
                wake.unpark();
            }
            Err(()) => self.state.store(0, Ordering::Release),
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("value", &&*g),
            None => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Exclusive access to a [`Mutex`]'s value; unlocks when dropped.
///
/// Unlike std's guard it may be sent to another thread (for `T: Send`) and
/// held across blocking calls: the lock is not tied to a thread, and a
/// coroutine holding it while it waits only delays the other waiters.
///
/// ```
/// let m = moss::sync::Mutex::new(vec![1]);
/// std::thread::scope(|s| {
///     let mut g = m.lock();
///     s.spawn(move || g.push(2)); // the guard moves; the lock is released there
/// });
/// assert_eq!(*m.lock(), [1, 2]);
/// ```
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    /// Send iff `T: Send`, Sync iff `T: Sync`, like `&mut T`.
    _marker: PhantomData<&'a mut T>,
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we own the lock, so nobody else accesses
        // the value until it is dropped.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this borrow unique.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard proves we own the lock; this is its one release.
        unsafe { self.mutex.raw.unlock() };
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// Takes the guard apart without unlocking: the caller now owns the
    /// lock and must release it (a [`Condvar`](super::Condvar) wait).
    pub(crate) fn into_mutex(self) -> &'a Mutex<T> {
        let m = self.mutex;
        std::mem::forget(self);
        m
    }

    /// The guard of a lock the caller owns.
    ///
    /// # Safety
    /// The caller owns `mutex`'s lock and gives that ownership to the guard.
    pub(crate) unsafe fn from_owned(mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
        MutexGuard {
            mutex,
            _marker: PhantomData,
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    pub(crate) fn raw(&self) -> &RawMutex {
        &self.raw
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
