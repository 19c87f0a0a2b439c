//! `Semaphore` and `BoundedSemaphore`: a count of permits, with FIFO
//! hand-off to waiters.
//!
//! The count and the wait list share one lock. A `release`
//! with waiters gives the permit straight to the oldest one (the count stays
//! 0), so there are waiters only while the count is 0, and a newcomer never
//! takes a permit that someone older waits for. A waiter cancelled after it
//! was handed a permit releases it again before it unwinds; one that timed
//! out just after the hand-off keeps it and succeeds.
//!
//! A bounded semaphore counts the permits *in flight* (handed to a waiter
//! that has not returned from `acquire` yet) against its maximum, as Python
//! counts them until the waiter runs: `release` fails when
//! `permits + in_flight` is at the maximum, so a cancelled waiter's
//! give-back always fits (the invariant `permits + in_flight <= max` holds
//! at every step and is asserted in debug builds).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::error::{ReleaseError, Timeout};
use super::lock::Lock;
use super::waitlist::{Outcome, WaitList, Waiter, deadline_in, expired, lock, park_waiter};
use crate::park::{self, Wakeup};

struct State {
    permits: usize,
    waiters: WaitList<()>,
}

/// The shared machinery; `max` is `Some` for a bounded semaphore.
struct Core {
    state: Lock<State>,
    max: Option<usize>,
    /// Bounded semaphores only: permits handed to waiters that have not
    /// returned from `acquire` yet. Raised under the lock by the hand-off,
    /// lowered without it by the waiter once it runs (`Release`, read with
    /// `Acquire` under the lock), so a reader may see a waiter that just
    /// claimed its permit as still in flight, never the reverse.
    in_flight: AtomicUsize,
}

impl Core {
    const fn new(n: usize, max: Option<usize>) -> Core {
        Core {
            state: Lock::new(State {
                permits: n,
                waiters: WaitList::new(),
            }),
            max,
            in_flight: AtomicUsize::new(0),
        }
    }

    fn try_acquire(&self) -> bool {
        let mut g = lock(&self.state);
        if g.permits > 0 {
            g.permits -= 1;
            true
        } else {
            false
        }
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        let mut g = lock(&self.state);
        if g.permits > 0 {
            g.permits -= 1;
            return Ok(());
        }
        if expired(deadline) {
            return Err(Timeout);
        }
        let w = Waiter::new(None);
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { g.waiters.push(&w) };
        drop(g);
        let (outcome, why) = park_waiter(&w, deadline, "Semaphore::acquire", &self.state, |g| {
            &mut g.waiters
        });
        if outcome == Outcome::Handed && self.max.is_some() {
            self.in_flight.fetch_sub(1, Ordering::Release); // ours now
        }
        match (outcome, why) {
            (Outcome::Handed, Wakeup::Cancelled) => {
                self.release_unchecked(); // pass the permit on
                park::deliver_cancel()
            }
            (Outcome::Handed, _) => Ok(()),
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            _ => Err(Timeout),
        }
    }

    fn release(&self) -> Result<(), ReleaseError> {
        let mut g = lock(&self.state);
        if let Some(max) = self.max {
            let in_flight = self.in_flight.load(Ordering::Acquire);
            debug_assert!(g.permits.saturating_add(in_flight) <= max);
            if g.permits.saturating_add(in_flight) >= max {
                return Err(ReleaseError { max });
            }
        }
        match g.waiters.hand(()) {
            Ok(wake) => {
                if self.max.is_some() {
                    self.in_flight.fetch_add(1, Ordering::Relaxed);
                }
                drop(g);
                wake.unpark();
            }
            // A count already at `usize::MAX` (`Semaphore::new(usize::MAX)`
            // as "no limit") stays there instead of wrapping to 0.
            Err(()) => g.permits = g.permits.saturating_add(1),
        }
        Ok(())
    }

    fn release_unchecked(&self) {
        // A permit handed to a waiter was counted in flight until the waiter
        // claimed it, so giving it back can never exceed the maximum.
        if self.release().is_err() {
            debug_assert!(false, "a handed permit overflowed the semaphore");
        }
    }

    fn available(&self) -> usize {
        lock(&self.state).permits
    }
}

/// A counting semaphore (gevent's `Semaphore`): `acquire` takes a permit,
/// waiting while there is none; `release` gives one back (or a new one:
/// releasing more than was acquired raises the count).
///
/// `Send + Sync`; waiters are served in FIFO order.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::sync::Arc;
/// use moss::sync::Semaphore;
/// let sem = Arc::new(Semaphore::new(2));
/// let (now, max) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
/// let hs: Vec<_> = (0..6).map(|_| {
///     let (sem, now, max) = (sem.clone(), now.clone(), max.clone());
///     moss::spawn(move || {
///         sem.acquire();
///         now.set(now.get() + 1);
///         max.set(max.get().max(now.get()));
///         moss::sleep(std::time::Duration::from_millis(5));
///         now.set(now.get() - 1);
///         sem.release();
///     })
/// }).collect();
/// moss::join_all(hs);
/// assert_eq!(max.get(), 2);
/// ```
pub struct Semaphore {
    core: Core,
}

impl Semaphore {
    /// A semaphore with `n` permits.
    pub const fn new(n: usize) -> Semaphore {
        Semaphore {
            core: Core::new(n, None),
        }
    }

    /// Takes a permit, waiting as long as it takes. A `kill` or `timeout` of
    /// the waiter unwinds it (without a permit).
    pub fn acquire(&self) {
        crate::coop::proceed();
        if let Err(Timeout) = self.core.acquire_until(None) {
            unreachable!("no deadline");
        }
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> bool {
        self.core.try_acquire()
    }

    /// Takes a permit, giving up after `d` (`Duration::ZERO` polls).
    pub fn acquire_timeout(&self, d: Duration) -> Result<(), Timeout> {
        crate::coop::proceed();
        self.core.acquire_until(deadline_in(d))
    }

    /// Gives a permit back, to the oldest waiter if there is one. The count
    /// saturates at `usize::MAX`.
    pub fn release(&self) {
        if self.core.release().is_err() {
            unreachable!("an unbounded semaphore has no maximum");
        }
    }

    /// The permits available now (0 while anyone waits).
    pub fn available_permits(&self) -> usize {
        self.core.available()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("permits", &self.available_permits())
            .finish()
    }
}

/// A [`Semaphore`] that refuses to be released past its initial count: such
/// a `release` is a bug in the caller and returns [`ReleaseError`].
///
/// ```
/// use moss::sync::BoundedSemaphore;
/// let sem = BoundedSemaphore::new(1);
/// sem.acquire();
/// assert!(sem.release().is_ok());
/// let err = sem.release().unwrap_err();
/// assert_eq!(err.max, 1);
/// assert!(err.to_string().contains("released more times than acquired"));
/// ```
pub struct BoundedSemaphore {
    core: Core,
}

impl BoundedSemaphore {
    /// A semaphore with `n` permits, never more.
    pub const fn new(n: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            core: Core::new(n, Some(n)),
        }
    }

    /// Takes a permit, waiting as long as it takes. A `kill` or `timeout` of
    /// the waiter unwinds it (without a permit).
    pub fn acquire(&self) {
        crate::coop::proceed();
        if let Err(Timeout) = self.core.acquire_until(None) {
            unreachable!("no deadline");
        }
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> bool {
        self.core.try_acquire()
    }

    /// Takes a permit, giving up after `d` (`Duration::ZERO` polls).
    pub fn acquire_timeout(&self, d: Duration) -> Result<(), Timeout> {
        crate::coop::proceed();
        self.core.acquire_until(deadline_in(d))
    }

    /// Gives a permit back, to the oldest waiter if there is one; an error if
    /// every permit is already back or on its way to a waiter (handed to one
    /// that has not returned from `acquire` yet).
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.core.release()
    }

    /// The permits available now (0 while anyone waits).
    pub fn available_permits(&self) -> usize {
        self.core.available()
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("permits", &self.available_permits())
            .field("max", &self.core.max)
            .finish()
    }
}
