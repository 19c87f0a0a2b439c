//! A lock shared by processes: `multiprocessing.Lock`, and the lock word
//! the other cross-process types build on ([`LockWord`]).
//!
//! # Design
//!
//! The lock is one `u64` in shared memory: 0 when free, else the
//! [identity](crate::sys::process::identity) of the process holding it (its
//! pid and start time, so a recycled pid is not mistaken for the holder).
//! Locking is a compare-and-swap from 0; unlocking swaps back to 0 and rings
//! the [`Doorbell`] if anyone waits (the protocol is in `doorbell.rs`). The
//! lock belongs to a *process*: any coroutine or thread of the holding
//! process may unlock it (by dropping the guard), and it is not re-entrant
//! (a second `lock` in the holding process waits, as Python's `Lock` does).
//!
//! # A holder that dies
//!
//! A process killed (or exiting) while it holds the lock cannot unlock it.
//! Every waiter checks the holder each time a wait slice (200 ms) ends, and
//! at its own deadline: if the holder has ended, the waiter takes the lock
//! over (one compare-and-swap from the dead identity, so exactly one waiter
//! wins) and its guard reports [`ProcessLockGuard::owner_died`]. What the
//! dead holder was doing to the data the lock protects is unknown: check or
//! rebuild it, as after `EOWNERDEAD` of a robust pthread mutex. `try_lock`
//! does not check the holder (it never waits). Python's `multiprocessing.Lock`
//! stays locked forever in this case.
//!
//! # fork
//!
//! A child forked while the parent holds the lock sees it held (by the
//! parent) until the parent unlocks it. A guard a child inherits (captured
//! by its closure) does nothing when dropped there: only the process that
//! locked can unlock.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::doorbell::Doorbell;
use crate::sync::Timeout;
use crate::sys::process::{identity_gone, own_identity};
use crate::sys::shm::{Shared, SharedState};

/// A lock word in shared memory (see the module docs).
///
/// # Invariants
/// `owner` is 0 or the identity of the process that locked it; it changes
/// only by compare-and-swap (0 → own identity to lock, own identity → 0 to
/// unlock, a dead identity → own identity to take over). `waiters` counts
/// the callers inside [`Doorbell::wait_for`] for this word.
#[repr(C)]
#[derive(Default)]
pub(crate) struct LockWord {
    owner: AtomicU64,
    waiters: AtomicU32,
}

// SAFETY: only atomics; all zero is "free, nobody waits".
unsafe impl SharedState for LockWord {}

impl LockWord {
    /// Locks if free.
    pub(crate) fn try_lock(&self) -> bool {
        self.owner
            .compare_exchange(0, own_identity(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Locks, waiting until `deadline` at the latest (`None` if it passed
    /// first). `Some(true)`: the lock was taken over from a holder that died.
    /// A `kill` or `timeout` of the caller unwinds it, without the lock.
    pub(crate) fn lock_until(&self, bell: &Doorbell, deadline: Option<Instant>) -> Option<bool> {
        if self.try_lock() {
            return Some(false);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return None;
        }
        bell.wait_for(&self.waiters, deadline, |slice_ended| {
            if self.try_lock() {
                return Some(false);
            }
            (slice_ended && self.take_over()).then_some(true)
        })
    }

    /// Takes the lock from a holder that has ended: one compare-and-swap
    /// from the dead identity, so exactly one caller wins.
    pub(crate) fn take_over(&self) -> bool {
        let holder = self.owner.load(Ordering::SeqCst);
        holder != 0
            && holder != own_identity()
            && identity_gone(holder)
            && self
                .owner
                .compare_exchange(holder, own_identity(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Unlocks if this process holds the lock (false otherwise: a copy of
    /// a guard in a forked child), and rings for the waiters.
    pub(crate) fn unlock(&self, bell: &Doorbell) -> bool {
        let mine = self
            .owner
            .compare_exchange(own_identity(), 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if mine {
            bell.ring_if_waited(&self.waiters);
        }
        mine
    }

    /// The count of callers waiting for this word (see `doorbell.rs`).
    pub(crate) fn waiters(&self) -> &AtomicU32 {
        &self.waiters
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.owner.load(Ordering::SeqCst) != 0
    }

    /// Whether the lock is held by a process that has ended.
    pub(crate) fn holder_gone(&self) -> bool {
        let holder = self.owner.load(Ordering::SeqCst);
        holder != 0 && holder != own_identity() && identity_gone(holder)
    }
}

/// A lock shared by a parent and the children it forks after creating it:
/// `multiprocessing.Lock`. `Send + Sync`; share it with an `Arc` captured by
/// the child's closure.
///
/// A coroutine waiting for it parks (its hub runs the others); a thread's
/// root runs its hub; a thread without coroutines blocks. A holder process
/// that dies does not leave the lock locked forever: see
/// [`ProcessLockGuard::owner_died`].
///
/// ```
/// use std::sync::Arc;
/// use moss::pool::{Process, ProcessLock, SharedValue};
///
/// let lock = Arc::new(ProcessLock::new().unwrap());
/// let total = Arc::new(SharedValue::new(0u64).unwrap());
/// let children: Vec<_> = (0..2)
///     .map(|_| {
///         let (lock, total) = (lock.clone(), total.clone());
///         Process::new(move || {
///             for _ in 0..100 {
///                 let _g = lock.lock();
///                 let v = total.get(); // read, then write: only safe under the lock
///                 total.set(v + 1);
///             }
///         })
///         .start()
///         .unwrap()
///     })
///     .collect();
/// for c in children {
///     assert_eq!(c.join().unwrap(), 0);
/// }
/// assert_eq!(total.get(), 200);
/// ```
pub struct ProcessLock {
    word: Shared<LockWord>,
    bell: Doorbell,
}

impl ProcessLock {
    /// A new, unlocked lock (a page of shared memory and a pipe).
    pub fn new() -> io::Result<ProcessLock> {
        Ok(ProcessLock {
            word: Shared::new()?,
            bell: Doorbell::new()?,
        })
    }

    /// Locks, waiting as long as it takes (Python's `acquire()`); the guard
    /// unlocks when dropped. A `kill` or `timeout` of the caller unwinds it
    /// without the lock.
    pub fn lock(&self) -> ProcessLockGuard<'_> {
        match self.word.get().lock_until(&self.bell, None) {
            Some(owner_died) => self.guard(owner_died),
            None => unreachable!("no deadline"),
        }
    }

    /// Locks if the lock is free now (Python's `acquire(block=False)`).
    pub fn try_lock(&self) -> Option<ProcessLockGuard<'_>> {
        self.word.get().try_lock().then(|| self.guard(false))
    }

    /// Locks, waiting at most `d` (Python's `acquire(timeout=d)`).
    /// `Duration::ZERO` is [`try_lock`](Self::try_lock).
    pub fn lock_timeout(&self, d: Duration) -> Result<ProcessLockGuard<'_>, Timeout> {
        let deadline = Instant::now().checked_add(d);
        match self.word.get().lock_until(&self.bell, deadline) {
            Some(owner_died) => Ok(self.guard(owner_died)),
            None => Err(Timeout),
        }
    }

    /// Whether some process holds the lock now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.word.get().is_locked()
    }

    fn guard(&self, owner_died: bool) -> ProcessLockGuard<'_> {
        ProcessLockGuard {
            lock: self,
            owner_died,
        }
    }
}

impl fmt::Debug for ProcessLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

/// Holds a [`ProcessLock`]; unlocks it when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct ProcessLockGuard<'a> {
    lock: &'a ProcessLock,
    owner_died: bool,
}

impl ProcessLockGuard<'_> {
    /// Whether this guard took the lock over from a process that died (was
    /// killed, crashed or exited) while holding it. The data the lock
    /// protects may be half-updated: check it before trusting it.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for ProcessLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.word.get().unlock(&self.lock.bell);
    }
}

impl fmt::Debug for ProcessLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessLockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}
