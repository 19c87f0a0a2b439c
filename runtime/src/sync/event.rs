//! `Event`: a flag that waiters block on until it is set (gevent's `Event`).
//!
//! The flag is an `AtomicBool`, so `is_set` and a `wait` on a set event take
//! no lock. Waiters queue in a [`WaitList`] under the event's lock; `set`
//! raises the flag and ends every queued wait under that lock, then wakes
//! the waiters (in the order they came) after releasing it. A waiter queued
//! before the flag was raised is woken even if the event is cleared again
//! before it runs, as in gevent.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::lock::Lock;
use super::waitlist::{WaitList, Watchers, deadline_in, fire_all, lock, unpark_all, wait_notified};

/// A flag that coroutines and threads wait on until some other one sets it.
///
/// `Send + Sync`: share it by reference or in an `Arc`, between coroutines
/// of one hub, coroutines of different threads and plain threads.
///
/// ```
/// use std::sync::Arc;
/// use moss::sync::Event;
/// let ready = Arc::new(Event::new());
/// let r = ready.clone();
/// let waiter = moss::spawn(move || { r.wait(); "go" });
/// ready.set();
/// assert_eq!(waiter.join().unwrap(), "go");
/// assert!(ready.is_set());
/// ```
pub struct Event {
    flag: AtomicBool,
    inner: Lock<Inner>,
}

struct Inner {
    waiters: WaitList<()>,
    watchers: Watchers,
}

impl Event {
    /// A cleared event.
    pub const fn new() -> Event {
        Event {
            flag: AtomicBool::new(false),
            inner: Lock::new(Inner {
                waiters: WaitList::new(),
                watchers: Watchers::new(),
            }),
        }
    }

    /// Sets the flag and wakes every waiter. Later `wait`s return at once
    /// until [`clear`](Self::clear).
    pub fn set(&self) {
        let (wakes, watchers) = {
            let mut g = lock(&self.inner);
            self.flag.store(true, Ordering::Release);
            (g.waiters.wake_all(true), g.watchers.take())
        };
        unpark_all(wakes);
        fire_all(watchers);
    }

    /// Clears the flag: later `wait`s block until the next [`set`](Self::set).
    pub fn clear(&self) {
        let _g = lock(&self.inner);
        self.flag.store(false, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Blocks until the flag is set (returns at once if it is).
    ///
    /// From a coroutine this suspends it and the hub runs others; from a
    /// thread's root or a plain thread, it runs that thread's hub (or just
    /// blocks the thread). A `kill` or `timeout` of the waiter unwinds it.
    pub fn wait(&self) {
        crate::coop::proceed();
        self.wait_until(None);
    }

    /// [`wait`](Self::wait) for at most `d`: true if the flag was set,
    /// false on timeout. `Duration::ZERO` polls.
    ///
    /// ```
    /// use std::time::Duration;
    /// let ev = moss::sync::Event::new();
    /// assert!(!ev.wait_timeout(Duration::from_millis(5)));
    /// ev.set();
    /// assert!(ev.wait_timeout(Duration::ZERO));
    /// ```
    pub fn wait_timeout(&self, d: Duration) -> bool {
        crate::coop::proceed();
        self.wait_until(deadline_in(d))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        let g = lock(&self.inner);
        if self.is_set() {
            return true;
        }
        wait_notified(g, &self.inner, deadline, "Event::wait", |g| &mut g.waiters)
    }

    pub(crate) fn watch(&self, s: &std::sync::Arc<super::waitlist::Signal>) {
        lock(&self.inner).watchers.add(s);
    }

    pub(crate) fn unwatch(&self, s: &std::sync::Arc<super::waitlist::Signal>) {
        lock(&self.inner).watchers.remove(s);
    }
}

impl Default for Event {
    fn default() -> Event {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
