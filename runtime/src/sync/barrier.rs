//! `Barrier`: `n` parties wait until all have arrived (std's `Barrier`,
//! Python's `threading.Barrier`), coroutines and threads alike.
//!
//! The parties that arrived and wait are exactly the barrier's queued
//! waiters, so the count needs no field of its own:
//!
//! ```text
//!   wait:  waiters + 1 == n?  → wake every waiter (handed: released); I lead
//!          else               → queue, park until released
//! ```
//!
//! A waiter that is killed, or whose `wait_timeout` expires, before the
//! barrier trips removes itself from the list under the lock: its arrival is
//! withdrawn and the barrier still waits for `n` parties (Python would break
//! the barrier for everyone instead). One released just before its
//! cancellation has passed: the others are on their way, and it unwinds (or,
//! timed out, returns normally). After tripping the barrier is ready for the
//! next round.

use std::fmt;
use std::time::{Duration, Instant};

use super::error::Timeout;
use super::lock::Lock;
use super::waitlist::{
    Outcome, WaitList, Waiter, deadline_in, expired, lock, park_waiter, unpark_all,
};
use crate::park::{self, Wakeup};

/// Makes `n` coroutines or threads wait for each other: each
/// [`wait`](Self::wait) blocks until the `n`-th arrives, then all go on,
/// and exactly one of them is told it is the leader.
///
/// `Send + Sync`; reusable for any number of rounds. `Barrier::new(0)` and
/// `new(1)` never wait.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::sync::Arc;
/// use moss::sync::Barrier;
/// let b = Arc::new(Barrier::new(3));
/// let leaders = Rc::new(Cell::new(0));
/// let hs: Vec<_> = (0..3).map(|_| {
///     let (b, leaders) = (b.clone(), leaders.clone());
///     moss::spawn(move || if b.wait().is_leader() { leaders.set(leaders.get() + 1) })
/// }).collect();
/// moss::join_all(hs);
/// assert_eq!(leaders.get(), 1);
/// ```
pub struct Barrier {
    n: usize,
    waiters: Lock<WaitList<()>>,
}

/// What [`Barrier::wait`] returns: whether this party is the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for exactly one party of each round (the one that arrived last).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl Barrier {
    /// A barrier for `n` parties.
    pub const fn new(n: usize) -> Barrier {
        Barrier {
            n,
            waiters: Lock::new(WaitList::new()),
        }
    }

    /// Waits until `n` parties (this one included) are waiting, then
    /// releases them all. A `kill` or `timeout` of a waiter before that
    /// withdraws its arrival and unwinds it.
    pub fn wait(&self) -> BarrierWaitResult {
        match self.wait_until(None) {
            Ok(r) => r,
            Err(Timeout) => unreachable!("no deadline"),
        }
    }

    /// [`wait`](Self::wait) for at most `d`; on timeout this party's arrival
    /// is withdrawn (the others keep waiting for `n`) and [`Timeout`] is
    /// returned. `Duration::ZERO` succeeds only for the last party.
    ///
    /// ```
    /// use std::time::Duration;
    /// use moss::sync::{Barrier, Timeout};
    /// let b = Barrier::new(2);
    /// assert_eq!(b.wait_timeout(Duration::from_millis(5)), Err(Timeout));
    /// ```
    pub fn wait_timeout(&self, d: Duration) -> Result<BarrierWaitResult, Timeout> {
        self.wait_until(deadline_in(d))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<BarrierWaitResult, Timeout> {
        let mut g = lock(&self.waiters);
        if g.len() + 1 >= self.n {
            let wakes = g.wake_all(true);
            drop(g);
            unpark_all(wakes);
            return Ok(BarrierWaitResult(true));
        }
        if expired(deadline) {
            return Err(Timeout);
        }
        let w = Waiter::new(None);
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { g.push(&w) };
        drop(g);
        let (outcome, why) = park_waiter(&w, deadline, "Barrier::wait", &self.waiters, |g| g);
        match (outcome, why) {
            // Released, then killed: the round is complete without us.
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            (Outcome::Handed, _) => Ok(BarrierWaitResult(false)),
            _ => Err(Timeout),
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.n)
            .field("waiting", &lock(&self.waiters).len())
            .finish()
    }
}
