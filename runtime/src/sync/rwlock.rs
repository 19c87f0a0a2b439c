//! `RwLock<T>`: many readers or one writer (std's `RwLock`), for coroutines
//! and threads, with writer preference.
//!
//! The lock word is one `AtomicUsize`:
//!
//! ```text
//!   bit 0     WRITER    a writer holds the lock
//!   bit 1     WAITING   a wait list may be non-empty: releases take the slow path
//!   bits 2..  readers   how many readers hold the lock
//!
//!   read:          WRITER, WAITING clear → CAS readers + 1            (fast path)
//!   write:         CAS 0 → WRITER                                     (fast path)
//!   read unlock:   WAITING clear → CAS readers - 1                    (fast path)
//!   write unlock:  CAS WRITER → 0                                     (fast path)
//!   otherwise, under the wait lists' lock (`lock.rs`): take the lock if
//!   the policy allows it, or set WAITING, queue and park
//! ```
//!
//! `WAITING` is set before anyone queues and cleared only when both lists
//! are empty, both under the lists' lock; while it is set no fast path can
//! change the word, so the slow paths see it stable.
//!
//! # Policy: writer preference
//!
//! A reader that arrives while a writer holds the lock *or waits for it*
//! waits too, so a stream of readers can never starve a writer. When the
//! lock is released (the last reader leaves, or a writer unlocks), it is
//! *handed* to the oldest waiting writer if there is one; only when no
//! writer waits are all waiting readers let in at once. Writers are served
//! in FIFO order. The price, as with std's `RwLock` on Linux: a steady
//! stream of writers can starve readers.
//!
//! # Cancellation
//!
//! A waiter killed or timed out while queued removes itself; a writer that
//! leaves the queue may let the readers waiting behind it in. A waiter that
//! was handed the lock and then killed releases it again before it unwinds
//! (to the next in line); one that timed out just after the hand-off keeps
//! it.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::error::Timeout;
use super::lock::Lock;
use super::waitlist::{
    Outcome, WaitList, Waiter, Wake, deadline_in, expired, lock, park_waiter, unpark_all,
};
use crate::park::{self, Wakeup};

const WRITER: usize = 1;
const WAITING: usize = 2;
const ONE_READER: usize = 4;
/// Beyond this many readers a new one takes the slow path, which panics.
const MAX_READERS_WORD: usize = usize::MAX - 2 * ONE_READER;

struct Queues {
    readers: WaitList<()>,
    writers: WaitList<()>,
}

impl Queues {
    fn waiting_bit(&mut self) -> usize {
        if self.readers.is_empty() && self.writers.is_empty() {
            0
        } else {
            WAITING
        }
    }
}

/// A readers-writer lock whose waits suspend the calling coroutine (or
/// block a plain thread) instead of blocking the hub.
///
/// Any number of [`read`](Self::read) guards, or one
/// [`write`](Self::write) guard, at a time. Writers are preferred: once a
/// writer waits, new readers wait behind it (see the module docs for the
/// exact policy). Not poisoned by panics; a `kill` or `timeout` of a waiter
/// unwinds it without the lock. `Send + Sync` for `T: Send + Sync`.
///
/// ```
/// use std::sync::Arc;
/// use moss::sync::RwLock;
/// let config = Arc::new(RwLock::new(String::from("v1")));
/// let c = config.clone();
/// let reader = moss::spawn(move || c.read().clone());
/// *config.write() = String::from("v2");
/// assert_eq!(reader.join().unwrap(), "v2"); // the reader ran after the write
/// let (a, b) = (config.read(), config.read()); // readers share the lock
/// assert_eq!((a.as_str(), b.as_str()), ("v2", "v2"));
/// assert!(config.try_write().is_none());
/// ```
pub struct RwLock<T: ?Sized> {
    state: AtomicUsize,
    queues: Lock<Queues>,
    value: UnsafeCell<T>,
}

// SAFETY: the lock word admits any number of readers (who get `&T`: hence
// `T: Sync`) or one writer (who gets `&mut T` on its own thread: hence
// `T: Send`), as for std's `RwLock`.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}
// SAFETY: owning the lock is owning the `T`.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}

impl<T> RwLock<T> {
    /// An unlocked lock holding `v`.
    pub const fn new(v: T) -> RwLock<T> {
        RwLock {
            state: AtomicUsize::new(0),
            queues: Lock::new(Queues {
                readers: WaitList::new(),
                writers: WaitList::new(),
            }),
            value: UnsafeCell::new(v),
        }
    }

    /// The value, consuming the lock.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Shared access, waiting while a writer holds the lock or waits for
    /// it. A `kill` or `timeout` of the waiter unwinds it.
    #[inline]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        crate::coop::proceed();
        if !self.try_read_fast() && self.read_slow(None).is_err() {
            unreachable!("no deadline");
        }
        RwLockReadGuard {
            lock: self,
            _marker: PhantomData,
        }
    }

    /// Shared access if that needs no waiting (no writer holds the lock or
    /// waits for it).
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        self.read_until(Some(Instant::now())).ok()
    }

    /// [`read`](Self::read), giving up after `d`.
    pub fn read_timeout(&self, d: Duration) -> Result<RwLockReadGuard<'_, T>, Timeout> {
        crate::coop::proceed();
        self.read_until(deadline_in(d))
    }

    /// Exclusive access, waiting while anyone holds the lock (and behind
    /// the writers that came first). A `kill` or `timeout` of the waiter
    /// unwinds it.
    #[inline]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        crate::coop::proceed();
        if !self.try_write_fast() && self.write_slow(None).is_err() {
            unreachable!("no deadline");
        }
        RwLockWriteGuard {
            lock: self,
            _marker: PhantomData,
        }
    }

    /// Exclusive access if the lock is free now.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        self.write_until(Some(Instant::now())).ok()
    }

    /// [`write`](Self::write), giving up after `d`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use moss::sync::{RwLock, Timeout};
    /// let l = RwLock::new(0);
    /// let r = l.read();
    /// assert_eq!(l.write_timeout(Duration::from_millis(5)).err(), Some(Timeout));
    /// drop(r);
    /// *l.write_timeout(Duration::from_millis(5)).unwrap() += 1;
    /// assert_eq!(*l.read(), 1);
    /// ```
    pub fn write_timeout(&self, d: Duration) -> Result<RwLockWriteGuard<'_, T>, Timeout> {
        crate::coop::proceed();
        self.write_until(deadline_in(d))
    }

    /// Whether a writer holds the lock now.
    pub fn is_write_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & WRITER != 0
    }

    /// How many readers hold the lock now.
    pub fn reader_count(&self) -> usize {
        self.state.load(Ordering::Relaxed) / ONE_READER
    }

    /// The value, through the exclusive borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    fn read_until(&self, deadline: Option<Instant>) -> Result<RwLockReadGuard<'_, T>, Timeout> {
        if !self.try_read_fast() {
            self.read_slow(deadline)?;
        }
        Ok(RwLockReadGuard {
            lock: self,
            _marker: PhantomData,
        })
    }

    fn write_until(&self, deadline: Option<Instant>) -> Result<RwLockWriteGuard<'_, T>, Timeout> {
        if !self.try_write_fast() {
            self.write_slow(deadline)?;
        }
        Ok(RwLockWriteGuard {
            lock: self,
            _marker: PhantomData,
        })
    }

    #[inline]
    fn try_read_fast(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        while s & (WRITER | WAITING) == 0 && s < MAX_READERS_WORD {
            match self.state.compare_exchange_weak(
                s,
                s + ONE_READER,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    #[inline]
    fn try_write_fast(&self) -> bool {
        self.state
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cold]
    fn read_slow(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        let mut q = lock(&self.queues);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & WRITER == 0 && q.writers.is_empty() {
                assert!(s < MAX_READERS_WORD, "moss: too many readers hold a RwLock");
                let new = ((s & !WAITING) + ONE_READER) | q.waiting_bit();
                match self
                    .state
                    .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(()),
                    Err(now) => s = now,
                }
            } else if expired(deadline) {
                return Err(Timeout);
            } else if let Err(now) = self.set_waiting(s) {
                s = now;
            } else {
                break;
            }
        }
        let w = Waiter::new(None);
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { q.readers.push(&w) };
        drop(q);
        let (outcome, why) = park_waiter(&w, deadline, "RwLock::read", &self.queues, |q| {
            &mut q.readers
        });
        match (outcome, why) {
            (Outcome::Handed, Wakeup::Cancelled) => {
                // SAFETY: the read lock was handed to us.
                unsafe { self.read_unlock() }; // pass it on
                park::deliver_cancel()
            }
            (Outcome::Handed, _) => Ok(()),
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            _ => Err(Timeout),
        }
    }

    #[cold]
    fn write_slow(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        let mut q = lock(&self.queues);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & WRITER == 0 && s < ONE_READER {
                let new = WRITER | q.waiting_bit();
                match self
                    .state
                    .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(()),
                    Err(now) => s = now,
                }
            } else if expired(deadline) {
                return Err(Timeout);
            } else if let Err(now) = self.set_waiting(s) {
                s = now;
            } else {
                break;
            }
        }
        let w = Waiter::new(None);
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { q.writers.push(&w) };
        drop(q);
        let (outcome, why) = park_waiter(&w, deadline, "RwLock::write", &self.queues, |q| {
            &mut q.writers
        });
        if outcome == Outcome::Left {
            // Readers may have waited only because of us.
            let wakes = self.settle(&mut lock(&self.queues));
            unpark_all(wakes);
        }
        match (outcome, why) {
            (Outcome::Handed, Wakeup::Cancelled) => {
                // SAFETY: the write lock was handed to us.
                unsafe { self.write_unlock() }; // pass it on
                park::deliver_cancel()
            }
            (Outcome::Handed, _) => Ok(()),
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            _ => Err(Timeout),
        }
    }

    /// Sets WAITING in the word `s` (under the lists' lock); `Ok` if it is set.
    fn set_waiting(&self, s: usize) -> Result<(), usize> {
        if s & WAITING != 0 {
            return Ok(());
        }
        self.state
            .compare_exchange(s, s | WAITING, Ordering::Relaxed, Ordering::Relaxed)
            .map(drop)
    }

    /// Releases a read lock.
    ///
    /// # Safety
    /// The caller holds a read lock and gives it up.
    #[inline]
    unsafe fn read_unlock(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        while s & WAITING == 0 {
            debug_assert!(s >= ONE_READER);
            match self.state.compare_exchange_weak(
                s,
                s - ONE_READER,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
        self.read_unlock_slow();
    }

    #[cold]
    fn read_unlock_slow(&self) {
        let mut q = lock(&self.queues);
        self.state.fetch_sub(ONE_READER, Ordering::Release);
        let wakes = self.settle(&mut q);
        drop(q);
        unpark_all(wakes);
    }

    /// Releases the write lock.
    ///
    /// # Safety
    /// The caller holds the write lock and gives it up.
    #[inline]
    unsafe fn write_unlock(&self) {
        if self
            .state
            .compare_exchange(WRITER, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.write_unlock_slow();
        }
    }

    #[cold]
    fn write_unlock_slow(&self) {
        let mut q = lock(&self.queues);
        self.state.fetch_and(!WRITER, Ordering::Release);
        let wakes = self.settle(&mut q);
        drop(q);
        unpark_all(wakes);
    }

    /// Under the lists' lock: hands the lock to whoever the policy says
    /// should have it now, and makes WAITING match the lists. Returns the
    /// wake-ups to deliver after unlocking.
    fn settle(&self, q: &mut Queues) -> Vec<Wake> {
        if q.waiting_bit() == 0 {
            self.state.fetch_and(!WAITING, Ordering::Release);
            return Vec::new();
        }
        // Someone waits, so WAITING is set and only we change the word.
        let s = self.state.load(Ordering::Acquire);
        debug_assert!(s & WAITING != 0, "waiters queued without WAITING");
        if s & WRITER != 0 {
            return Vec::new();
        }
        if !q.writers.is_empty() {
            if s >= ONE_READER {
                return Vec::new(); // the last reader hands it over
            }
            let Ok(wake) = q.writers.hand(()) else {
                unreachable!("a writer waits")
            };
            self.state
                .store(WRITER | q.waiting_bit(), Ordering::Release);
            return vec![wake];
        }
        // No writer waits: every waiting reader goes in.
        let wakes = q.readers.wake_all(true);
        let readers = (s & !WAITING) + wakes.len() * ONE_READER;
        self.state.store(readers, Ordering::Release);
        wakes
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Some(g) => d.field("value", &&*g),
            None => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Shared access to an [`RwLock`]'s value; releases the read lock when
/// dropped.
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _marker: PhantomData<&'a T>,
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held: no writer exists until it is dropped.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds one read lock; this is its release.
        unsafe { self.lock.read_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Exclusive access to an [`RwLock`]'s value; releases the write lock when
/// dropped.
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _marker: PhantomData<&'a mut T>,
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: nobody else accesses the value.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds the write lock; this is its release.
        unsafe { self.lock.write_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
