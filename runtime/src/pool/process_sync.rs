//! `multiprocessing.Semaphore` and `multiprocessing.Event`:
//! [`ProcessSemaphore`] and [`ProcessEvent`].
//!
//! Both are a few atomics in a page of shared memory and a [`Doorbell`]
//! (see `doorbell.rs` for how waiters in other processes are woken), created
//! before the children are forked. A coroutine waiting on either parks (its
//! hub keeps running); a `kill` or `timeout` unwinds it having taken
//! nothing.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::doorbell::Doorbell;
use crate::sync::Timeout;
use crate::sys::shm::{Shared, SharedState};

#[repr(C)]
struct Permits {
    count: AtomicUsize,
    waiters: AtomicU32,
}

// SAFETY: only atomics; all zero is "no permit, nobody waits".
unsafe impl SharedState for Permits {}

/// A counting semaphore shared by a parent and the children it forks after
/// creating it: `multiprocessing.Semaphore`. `Send + Sync`.
///
/// As in Python, a permit has no owner: any process may release, releases
/// beyond the initial count add permits, and the permits held by a process
/// that dies are not given back (use
/// [`acquire_timeout`](Self::acquire_timeout) where that must not wedge
/// the others).
///
/// ```
/// use std::sync::Arc;
/// use moss::pool::{Process, ProcessSemaphore};
///
/// let sem = Arc::new(ProcessSemaphore::new(0).unwrap());
/// let s = sem.clone();
/// let child = Process::new(move || s.release()).start().unwrap();
/// sem.acquire(); // woken by the child's release
/// assert_eq!(child.join().unwrap(), 0);
/// assert!(!sem.try_acquire());
/// ```
pub struct ProcessSemaphore {
    state: Shared<Permits>,
    bell: Doorbell,
}

impl ProcessSemaphore {
    /// A semaphore with `n` permits.
    pub fn new(n: usize) -> io::Result<ProcessSemaphore> {
        let s = ProcessSemaphore {
            state: Shared::new()?,
            bell: Doorbell::new()?,
        };
        s.state.get().count.store(n, Ordering::SeqCst);
        Ok(s)
    }

    fn take(&self) -> bool {
        self.state
            .get()
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .is_ok()
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> bool {
        if self.take() {
            return true;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return false;
        }
        let st = self.state.get();
        let got = self.bell.wait_for(&st.waiters, deadline, |_| {
            if !self.take() {
                return None;
            }
            // The drain before this attempt may have taken the ring of
            // another release: pass it on (see `doorbell.rs`).
            if st.count.load(Ordering::SeqCst) > 0 && st.waiters.load(Ordering::SeqCst) > 1 {
                self.bell.ring();
            }
            Some(())
        });
        got.is_some()
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.acquire_until(None);
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> bool {
        self.take()
    }

    /// Takes a permit, waiting at most `d`.
    pub fn acquire_timeout(&self, d: Duration) -> Result<(), Timeout> {
        if self.acquire_until(Instant::now().checked_add(d)) {
            Ok(())
        } else {
            Err(Timeout)
        }
    }

    /// Adds a permit and wakes a waiter (of any process).
    ///
    /// # Panics
    /// If the count would pass `usize::MAX`.
    pub fn release(&self) {
        let st = self.state.get();
        let added = st
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_add(1));
        assert!(
            added.is_ok(),
            "moss: ProcessSemaphore::release: the count would overflow"
        );
        self.bell.ring_if_waited(&st.waiters);
    }

    /// Permits free now (a snapshot: Python's `get_value()`).
    pub fn available_permits(&self) -> usize {
        self.state.get().count.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ProcessSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSemaphore")
            .field("permits", &self.available_permits())
            .finish()
    }
}

#[repr(C)]
struct Flag {
    set: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: only atomics; all zero is "not set, nobody waits".
unsafe impl SharedState for Flag {}

/// A flag that processes wait for: `multiprocessing.Event`, created before
/// the children are forked. `Send + Sync`.
///
/// [`set`](Self::set) wakes every waiter of every process. A waiter returns
/// once it sees the flag set: a `set` undone by a [`clear`](Self::clear)
/// before a waiter of another process looked may be missed by it (it keeps
/// waiting for the next `set`).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moss::pool::{Process, ProcessEvent};
///
/// let go = Arc::new(ProcessEvent::new().unwrap());
/// let g = go.clone();
/// let child = Process::new(move || assert!(g.wait_timeout(Duration::from_secs(30))))
///     .start()
///     .unwrap();
/// go.set();
/// assert_eq!(child.join().unwrap(), 0);
/// ```
pub struct ProcessEvent {
    state: Shared<Flag>,
    bell: Doorbell,
}

impl ProcessEvent {
    /// A new event, not set.
    pub fn new() -> io::Result<ProcessEvent> {
        Ok(ProcessEvent {
            state: Shared::new()?,
            bell: Doorbell::new()?,
        })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let st = self.state.get();
        st.set.store(1, Ordering::SeqCst);
        self.bell.ring_if_waited(&st.waiters);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.state.get().set.store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.state.get().set.load(Ordering::SeqCst) != 0
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return false;
        }
        let st = self.state.get();
        let seen = self.bell.wait_for(&st.waiters, deadline, |_| {
            if !self.is_set() {
                return None;
            }
            // Others may not have seen the ring this caller drained.
            if st.waiters.load(Ordering::SeqCst) > 1 {
                self.bell.ring();
            }
            Some(())
        });
        seen.is_some()
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `d` for the flag; returns whether it is set.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(d))
    }
}

impl fmt::Debug for ProcessEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessEvent")
            .field("set", &self.is_set())
            .finish()
    }
}
