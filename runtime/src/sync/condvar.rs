//! `Condvar`: wait for a condition on data guarded by a [`Mutex`] (std's
//! `Condvar`, Python's `threading.Condition`), for coroutines and threads.
//!
//! A wait queues a waiter on the condvar's own [`WaitList`] *before* it
//! releases the mutex, then parks; a notify hands a notification to the
//! oldest waiter (`notify_one`) or to all of them (`notify_all`) under the
//! list's lock. So a notify that follows the waiter's release of the mutex
//! always finds it: no lost wake-up. A woken waiter re-locks the mutex
//! (queuing behind other lockers in FIFO order) before it returns.
//!
//! Cancellation, as everywhere in `moss::sync`:
//!
//! * a waiter whose deadline passes, or that is killed, while still queued
//!   removes itself: it took no notification;
//! * a waiter that was notified and then killed before it returned (before
//!   it ran, or while it re-locks the mutex) passes the notification on to
//!   the next waiter: a `notify_one` is never swallowed by a dying waiter.
//!   Notified and timed out, it reports the notification;
//! * a cancelled wait unwinds *without* the mutex: the guard was given to
//!   `wait`, so no code of the caller's frames can still use it, and a kill
//!   does not have to wait for the mutex before the coroutine can die.

use std::fmt;
use std::time::{Duration, Instant};

use super::lock::Lock;
use super::mutex::{Mutex, MutexGuard};
use super::waitlist::{
    Outcome, WaitList, Waiter, deadline_in, expired, lock, park_waiter, unpark_all,
};
use crate::park::{self, Wakeup};

/// A condition variable over [`MutexGuard`]s: [`wait`](Self::wait) releases
/// the mutex and sleeps until [`notify_one`](Self::notify_one) or
/// [`notify_all`](Self::notify_all), then re-locks it.
///
/// Like std's, a wait may wake without the condition holding (another waiter
/// got there first): check it in a loop, or use
/// [`wait_while`](Self::wait_while). Unlike std's, waiters are woken in the
/// order they came, and nothing is poisoned. `Send + Sync`; use it with one
/// mutex at a time.
///
/// ```
/// use std::sync::Arc;
/// use moss::sync::{Condvar, Mutex};
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let p2 = pair.clone();
/// let t = std::thread::spawn(move || {
///     *p2.0.lock() = true;
///     p2.1.notify_one();
/// });
/// let (ready, cv) = &*pair;
/// let g = cv.wait_while(ready.lock(), |ready| !*ready);
/// assert!(*g);
/// # drop(g);
/// t.join().unwrap();
/// ```
pub struct Condvar {
    waiters: Lock<WaitList<()>>,
}

/// Whether a timed wait of a [`Condvar`] returned because its time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the time ran out (not by a notify).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A condvar nobody waits on.
    pub const fn new() -> Condvar {
        Condvar {
            waiters: Lock::new(WaitList::new()),
        }
    }

    /// Releases the guard's mutex, waits for a notification, re-locks the
    /// mutex and returns its guard. Wakes spuriously only after a
    /// notification another waiter used first; loop on the condition. A
    /// `kill` or `timeout` of the waiter unwinds it without the mutex.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_until(guard, None).0
    }

    /// Waits while `condition` holds for the guarded value: returns the
    /// guard once it returns false (checked first, and after every wake-up,
    /// with the mutex held). Python's `Condition.wait_for` with the
    /// predicate negated.
    pub fn wait_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> MutexGuard<'a, T>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// [`wait`](Self::wait) for at most `d`; the result tells whether the
    /// time ran out. The mutex is re-locked either way (that wait is not
    /// limited by `d`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use moss::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(0), Condvar::new());
    /// let (g, r) = cv.wait_timeout(m.lock(), Duration::from_millis(5));
    /// assert!(r.timed_out());
    /// assert_eq!(*g, 0);
    /// ```
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        d: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_until(guard, deadline_in(d))
    }

    /// [`wait_while`](Self::wait_while) for at most `d` in total: returns
    /// the guard and whether the time ran out with the condition still
    /// holding.
    pub fn wait_timeout_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        d: Duration,
        mut condition: F,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult)
    where
        F: FnMut(&mut T) -> bool,
    {
        let deadline = deadline_in(d);
        loop {
            if !condition(&mut *guard) {
                return (guard, WaitTimeoutResult(false));
            }
            if expired(deadline) {
                return (guard, WaitTimeoutResult(true));
            }
            guard = self.wait_until(guard, deadline).0;
        }
    }

    /// Wakes the oldest waiter, if any. The mutex need not be held, but
    /// changing the condition under it and notifying after is what makes
    /// the change visible to the woken waiter.
    pub fn notify_one(&self) {
        let wake = lock(&self.waiters).hand(());
        if let Ok(w) = wake {
            w.unpark();
        }
    }

    /// Wakes every waiter (they re-lock the mutex one after the other).
    pub fn notify_all(&self) {
        let wakes = lock(&self.waiters).wake_all(true);
        unpark_all(wakes);
    }

    fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let mutex: &'a Mutex<T> = guard.into_mutex(); // we own its lock now
        let w = Waiter::new(None);
        let mut g = lock(&self.waiters);
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once:
        // releasing the mutex in between neither parks nor unwinds.
        unsafe { g.push(&w) };
        drop(g);
        // SAFETY: `into_mutex` gave us the guard's ownership of the lock.
        unsafe { mutex.raw().unlock() };
        let (outcome, why) = park_waiter(&w, deadline, "Condvar::wait", &self.waiters, |g| g);
        match (outcome, why) {
            (Outcome::Handed, Wakeup::Cancelled) => {
                self.notify_one(); // the notification goes to the next waiter
                park::deliver_cancel()
            }
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            _ => {}
        }
        let notified = outcome == Outcome::Handed;
        // Killed while re-locking after a notification: pass it on as well.
        let pass_on = PassOn(self, notified);
        mutex.raw().lock("Condvar::wait (re-locking)");
        std::mem::forget(pass_on);
        // SAFETY: we just took the lock and give it to the guard.
        let guard = unsafe { MutexGuard::from_owned(mutex) };
        (guard, WaitTimeoutResult(!notified))
    }
}

/// Passes a notification on to the next waiter if dropped (by an unwind)
/// while armed.
struct PassOn<'a>(&'a Condvar, bool);

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.notify_one();
        }
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
