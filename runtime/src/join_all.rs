//! [`JoinAll`]: gevent's `joinall` with its options (a timeout, stopping at
//! the first error, or after a number of coroutines finished), beside the
//! plain [`join_all`](crate::join_all).
//!
//! Waiting for *any* of many coroutines to finish costs O(1) per finished
//! coroutine: each pending handle gets a link (see [`JoinHandle::link`])
//! that records its index and wakes the waiter. A link runs before its
//! coroutine is done (before the coroutine's later callbacks, which may
//! block), so a recorded index is counted once the coroutine really is
//! finished; until then the waiter is one of its joiners.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::coroutine::JoinHandle;
use crate::hub::Hub;
use crate::task::{JoinError, Token, Wakeup};

/// Joins many coroutines with gevent's `joinall` options; built with
/// [`JoinAll::new`], run with [`join`](JoinAll::join).
///
/// | gevent                               | moss                       |
/// |--------------------------------------|----------------------------|
/// | `joinall(gs)`                        | `moss::join_all(hs)` or `JoinAll::new(hs).join()` |
/// | `joinall(gs, timeout=t)`             | `.timeout(t)`              |
/// | `joinall(gs, raise_error=True)`      | `.stop_on_error()`         |
/// | `joinall(gs, count=n)`               | `.count(n)`                |
///
/// The result lists every handle in input order: [`Joined::Finished`]
/// with its result, or [`Joined::Pending`] giving the handle back (the
/// coroutine keeps running; join, kill or drop it).
///
/// ```
/// use std::time::Duration;
/// use moss::{JoinAll, Joined};
/// let hs = vec![
///     moss::spawn(|| { moss::sleep(Duration::from_millis(1)); 1 }),
///     moss::spawn(|| { moss::sleep(Duration::from_secs(3600)); 2 }),
/// ];
/// let out = JoinAll::new(hs).timeout(Duration::from_millis(200)).join();
/// assert!(matches!(out[0], Joined::Finished(Ok(1))));
/// let Joined::Pending(slow) = &out[1] else { panic!() };
/// slow.kill();
/// ```
pub struct JoinAll<T> {
    handles: Vec<JoinHandle<T>>,
    timeout: Option<Duration>,
    stop_on_error: bool,
    count: Option<usize>,
}

/// One coroutine in the result of [`JoinAll::join`].
pub enum Joined<T> {
    /// It finished: what [`JoinHandle::join`] returns.
    Finished(Result<T, JoinError>),
    /// It had not finished when `join` returned: the handle, to join, kill
    /// or drop (detach) later.
    Pending(JoinHandle<T>),
}

impl<T> Joined<T> {
    /// Whether the coroutine had finished.
    pub fn is_finished(&self) -> bool {
        matches!(self, Joined::Finished(_))
    }

    /// The result of a finished coroutine; `None` for a pending one (whose
    /// handle is dropped: the coroutine is detached and keeps running).
    pub fn into_result(self) -> Option<Result<T, JoinError>> {
        match self {
            Joined::Finished(r) => Some(r),
            Joined::Pending(_) => None,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Joined<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Joined::Finished(r) => f.debug_tuple("Finished").field(r).finish(),
            Joined::Pending(h) => f.debug_tuple("Pending").field(h).finish(),
        }
    }
}

impl<T: 'static> JoinAll<T> {
    /// Joins `hs` (in input order in the result); without options it waits
    /// for all of them, as [`join_all`](crate::join_all) does.
    pub fn new(hs: impl IntoIterator<Item = JoinHandle<T>>) -> JoinAll<T> {
        JoinAll {
            handles: hs.into_iter().collect(),
            timeout: None,
            stop_on_error: false,
            count: None,
        }
    }

    /// Returns after `d` at the latest, with the unfinished coroutines as
    /// [`Joined::Pending`]. `Duration::ZERO` collects what has finished
    /// without waiting.
    pub fn timeout(mut self, d: Duration) -> JoinAll<T> {
        self.timeout = Some(d);
        self
    }

    /// Returns as soon as one coroutine has failed (panicked or was
    /// killed), in the order they finish (gevent's `raise_error=True`; the
    /// error is in the result, nothing is raised).
    pub fn stop_on_error(mut self) -> JoinAll<T> {
        self.stop_on_error = true;
        self
    }

    /// Returns as soon as `n` coroutines have finished (gevent's `count`);
    /// the result holds every coroutine finished by then, which may be
    /// more.
    pub fn count(mut self, n: usize) -> JoinAll<T> {
        self.count = Some(n);
        self
    }

    /// Waits as configured. A `kill` or `timeout` of the caller unwinds
    /// it; the coroutines it waited for keep running (detached).
    pub fn join(self) -> Vec<Joined<T>> {
        let deadline = self.timeout.and_then(|d| Instant::now().checked_add(d));
        let handles = self.handles;
        let want = self.count.unwrap_or(handles.len()).min(handles.len());
        let hub = Hub::current();
        let news = Rc::new(Notes::default());
        let mut finished = 0;
        let mut failed = false;
        // Indices recorded by a link whose coroutine is not done yet.
        let mut finishing = Vec::new();
        for (i, h) in handles.iter().enumerate() {
            if h.is_finished() {
                finished += 1;
                failed |= !h.is_successful();
            } else {
                let n = news.clone();
                h.link(move |_| n.record(i));
            }
        }
        loop {
            finishing.append(&mut news.indices.borrow_mut());
            finishing.retain(|&i| {
                let h: &JoinHandle<T> = &handles[i];
                if !h.is_finished() {
                    return true;
                }
                finished += 1;
                failed |= !h.is_successful();
                false
            });
            if finished >= want || (self.stop_on_error && failed) {
                break;
            }
            let me = hub.current_header().token();
            news.waiter.set(Some(me));
            for &i in &finishing {
                handles[i].header().add_joiner(me);
            }
            // `Cancelled` only when it can be delivered (see `park_until`).
            let w = crate::park::park_until_on(hub, deadline, "join_all");
            news.waiter.set(None);
            match w {
                Wakeup::Notified => {}
                Wakeup::TimedOut => break,
                Wakeup::Cancelled => crate::cancel::deliver(hub),
            }
        }
        handles
            .into_iter()
            .map(|h| {
                if h.is_finished() {
                    Joined::Finished(h.join())
                } else {
                    Joined::Pending(h)
                }
            })
            .collect()
    }
}

/// What the links of one [`JoinAll::join`] tell it.
#[derive(Default)]
struct Notes {
    /// Indices of coroutines whose body has ended.
    indices: RefCell<Vec<usize>>,
    /// The waiter's park, while it waits.
    waiter: Cell<Option<Token>>,
}

impl Notes {
    fn record(&self, i: usize) {
        self.indices.borrow_mut().push(i);
        if let Some(t) = self.waiter.get() {
            Hub::current().wake(t, Wakeup::Notified);
        }
    }
}

impl<T> fmt::Debug for JoinAll<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinAll")
            .field("handles", &self.handles.len())
            .field("timeout", &self.timeout)
            .field("stop_on_error", &self.stop_on_error)
            .field("count", &self.count)
            .finish()
    }
}
