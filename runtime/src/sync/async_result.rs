//! `AsyncResult<T>`: a value (or a panic) delivered once, waited for by any
//! number of coroutines and threads (gevent's `AsyncResult`).
//!
//! It is a handle: clones share one result, so a producer (a pool worker,
//! another thread) keeps one clone to `set` and hands the other out. The
//! state is a small enum under a lock, with an `AtomicBool` mirror of
//! "ready" so `ready()` and a `get` of a ready result skip nothing but one
//! lock. Waiters queue in a [`WaitList`] and are all woken by `set`.
//!
//! A stored panic is re-raised by `get`: the first `get` resumes the original
//! payload (so `JoinError::into_panic` and `downcast` work on it), later ones
//! a `String` with the same message.
//!
//! Async code awaits it (`result.await`, through `IntoFuture`): the future
//! registers its task's waker as a watcher, like a `wait_any` round does, and
//! `set` fires it after releasing the lock.

use std::any::Any;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::error::Timeout;
use super::lock::Lock;
use super::waitlist::{
    Signal, WaitList, Watchers, deadline_in, fire_all, lock, unpark_all, wait_notified,
};

/// A result that arrives later, possibly from another thread.
///
/// `Send + Sync` for `T: Send`; `Clone` shares the same result.
///
/// ```
/// use moss::sync::AsyncResult;
/// let r = AsyncResult::new();
/// let setter = r.clone();
/// let t = std::thread::spawn(move || setter.set(6 * 7));
/// assert_eq!(r.get(), 42); // the root runs its hub until the value is there
/// t.join().unwrap();
/// ```
pub struct AsyncResult<T> {
    inner: Arc<Shared<T>>,
}

struct Shared<T> {
    ready: AtomicBool,
    state: Lock<State<T>>,
}

struct State<T> {
    value: Value<T>,
    waiters: WaitList<()>,
    watchers: Watchers,
}

enum Value<T> {
    Pending,
    Ok(T),
    Panic {
        payload: Option<Box<dyn Any + Send>>,
        message: String,
    },
}

impl<T> AsyncResult<T> {
    /// A result that is not ready yet.
    pub fn new() -> AsyncResult<T> {
        AsyncResult {
            inner: Arc::new(Shared {
                ready: AtomicBool::new(false),
                state: Lock::new(State {
                    value: Value::Pending,
                    waiters: WaitList::new(),
                    watchers: Watchers::new(),
                }),
            }),
        }
    }

    /// Stores `v` and wakes every waiter. Setting again replaces the value
    /// (as in gevent).
    pub fn set(&self, v: T) {
        self.store(Value::Ok(v));
    }

    /// Stores a panic payload (from `catch_unwind`) that `get` re-raises in
    /// every caller; wakes every waiter.
    ///
    /// ```
    /// use moss::sync::AsyncResult;
    /// let r = AsyncResult::<u32>::new();
    /// r.set_panic(std::panic::catch_unwind(|| panic!("worker failed")).unwrap_err());
    /// let caught = std::panic::catch_unwind(|| r.get()).unwrap_err();
    /// assert_eq!(caught.downcast_ref::<&str>(), Some(&"worker failed"));
    /// assert!(r.ready() && !r.successful());
    /// ```
    pub fn set_panic(&self, payload: Box<dyn Any + Send>) {
        let message = panic_message(&*payload);
        self.store(Value::Panic {
            payload: Some(payload),
            message,
        });
    }

    fn store(&self, v: Value<T>) {
        let (old, wakes, watchers) = {
            let mut g = lock(&self.inner.state);
            let old = std::mem::replace(&mut g.value, v);
            self.inner.ready.store(true, Ordering::Release);
            (old, g.waiters.wake_all(true), g.watchers.take())
        };
        unpark_all(wakes);
        // Outside the lock: an awaiting task's waker is user code.
        fire_all(watchers);
        drop(old); // user code (Drop) runs outside the lock
    }

    /// Whether a value or a panic is stored.
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Whether a value (not a panic) is stored.
    pub fn successful(&self) -> bool {
        matches!(lock(&self.inner.state).value, Value::Ok(_))
    }

    /// Blocks until the result is ready (value or panic), without taking it.
    /// A `kill` or `timeout` of the waiter unwinds it.
    pub fn wait(&self) {
        crate::coop::proceed();
        self.wait_until(None);
    }

    /// [`wait`](Self::wait) for at most `d`: true if ready. `Duration::ZERO` polls.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        crate::coop::proceed();
        self.wait_until(deadline_in(d))
    }

    /// Waits for the result and takes the value out, leaving the result
    /// pending again (for `T` that is not `Clone`; one taker wins, others
    /// keep waiting for the next `set`). Re-raises a stored panic.
    ///
    /// ```
    /// let r = moss::sync::AsyncResult::new();
    /// r.set(vec![1, 2, 3]);
    /// assert_eq!(r.take(), vec![1, 2, 3]);
    /// assert!(!r.ready());
    /// ```
    pub fn take(&self) -> T {
        match self.take_until(None) {
            Ok(v) => v,
            Err(Timeout) => unreachable!("no deadline"),
        }
    }

    /// [`take`](Self::take) for at most `d`.
    pub fn take_timeout(&self, d: Duration) -> Result<T, Timeout> {
        self.take_until(deadline_in(d))
    }

    fn take_until(&self, deadline: Option<Instant>) -> Result<T, Timeout> {
        loop {
            if !self.wait_until(deadline) {
                return Err(Timeout);
            }
            let mut g = lock(&self.inner.state);
            match std::mem::replace(&mut g.value, Value::Pending) {
                Value::Ok(v) => {
                    self.inner.ready.store(false, Ordering::Release);
                    return Ok(v);
                }
                Value::Pending => {} // another taker was first
                Value::Panic { payload, message } => {
                    let p = reraise(payload, &message);
                    g.value = Value::Panic {
                        payload: None,
                        message,
                    };
                    drop(g);
                    resume_unwind(p);
                }
            }
        }
    }

    /// Blocks until the result is ready and returns `true`; with `d`, gives up
    /// after it. Returns false on timeout.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.ready() {
            return true;
        }
        let g = lock(&self.inner.state);
        if self.ready() {
            return true;
        }
        wait_notified(g, &self.inner.state, deadline, "AsyncResult::get", |g| {
            &mut g.waiters
        })
    }

    pub(crate) fn watch(&self, s: &Arc<Signal>) {
        lock(&self.inner.state).watchers.add(s);
    }

    pub(crate) fn unwatch(&self, s: &Arc<Signal>) {
        lock(&self.inner.state).watchers.remove(s);
    }
}

impl<T: Clone> AsyncResult<T> {
    /// Waits until the result is ready and returns a clone of the value.
    /// Re-raises a panic stored with [`set_panic`](Self::set_panic) (with
    /// `std::panic::resume_unwind`). A `kill` or `timeout` of the waiter
    /// unwinds it.
    pub fn get(&self) -> T {
        crate::coop::proceed();
        match self.get_until(None) {
            Ok(v) => v,
            Err(Timeout) => unreachable!("no deadline"),
        }
    }

    /// [`get`](Self::get) for at most `d`. `Duration::ZERO` polls.
    ///
    /// ```
    /// use std::time::Duration;
    /// use moss::sync::{AsyncResult, Timeout};
    /// let r = AsyncResult::new();
    /// assert_eq!(r.get_timeout(Duration::from_millis(5)), Err(Timeout));
    /// r.set("done");
    /// assert_eq!(r.get_timeout(Duration::ZERO), Ok("done"));
    /// ```
    pub fn get_timeout(&self, d: Duration) -> Result<T, Timeout> {
        crate::coop::proceed();
        self.get_until(deadline_in(d))
    }

    /// The value if it is ready (`None` if pending or a panic), without waiting.
    pub fn try_get(&self) -> Option<T> {
        match &lock(&self.inner.state).value {
            Value::Ok(v) => Some(v.clone()),
            _ => None,
        }
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T, Timeout> {
        loop {
            if !self.wait_until(deadline) {
                return Err(Timeout);
            }
            let mut g = lock(&self.inner.state);
            match &mut g.value {
                Value::Ok(v) => return Ok(v.clone()),
                Value::Pending => {} // taken in between: wait for the next set
                Value::Panic { payload, message } => {
                    let p = reraise(payload.take(), message);
                    drop(g);
                    resume_unwind(p);
                }
            }
        }
    }
}

/// Async code awaits a result (a task on a tokio runtime, say, waiting for
/// what coroutines produce): `result.await` gives a clone of the value, as
/// [`get`](AsyncResult::get) does, or resumes a stored panic in the awaiting
/// task.
///
/// ```
/// use moss::sync::AsyncResult;
/// let r = AsyncResult::new();
/// let awaited = r.clone();
/// // Async code on another thread (any executor) awaits the result...
/// let task = std::thread::spawn(|| futures::executor::block_on(async move { awaited.await }));
/// // ...that a coroutine produces.
/// moss::spawn(move || {
///     moss::sleep(std::time::Duration::from_millis(5));
///     r.set("from a coroutine");
/// })
/// .join()
/// .unwrap();
/// assert_eq!(task.join().unwrap(), "from a coroutine");
/// ```
impl<T: Clone> IntoFuture for AsyncResult<T> {
    type Output = T;
    type IntoFuture = AsyncResultFuture<T>;

    fn into_future(self) -> AsyncResultFuture<T> {
        AsyncResultFuture {
            result: self,
            watch: None,
        }
    }
}

/// An [`AsyncResult`] being awaited (see its `IntoFuture` impl). Dropping it
/// before the value is there withdraws its waker.
#[must_use = "futures do nothing unless awaited"]
pub struct AsyncResultFuture<T> {
    result: AsyncResult<T>,
    /// The waker registered by the last pending poll.
    watch: Option<Arc<Signal>>,
}

impl<T: Clone> Future for AsyncResultFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let mut g = lock(&this.result.inner.state);
        match &mut g.value {
            Value::Pending => {}
            // A store fired (and dropped) every registered waker.
            Value::Ok(v) => {
                let v = v.clone();
                drop(g);
                this.watch = None;
                return Poll::Ready(v);
            }
            Value::Panic { payload, message } => {
                let p = reraise(payload.take(), message);
                drop(g);
                this.watch = None;
                resume_unwind(p);
            }
        }
        // Registered under the lock that `store` takes: no set slips past.
        if !this.watch.as_ref().is_some_and(|s| s.will_wake(cx.waker())) {
            if let Some(old) = this.watch.take() {
                g.watchers.remove(&old);
            }
            let s = Signal::waking(cx.waker().clone());
            g.watchers.add(&s);
            this.watch = Some(s);
        }
        Poll::Pending
    }
}

impl<T> Drop for AsyncResultFuture<T> {
    fn drop(&mut self) {
        if let Some(s) = self.watch.take() {
            self.result.unwatch(&s);
        }
    }
}

impl<T> fmt::Debug for AsyncResultFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResultFuture")
            .field("result", &self.result)
            .finish()
    }
}

fn reraise(payload: Option<Box<dyn Any + Send>>, message: &str) -> Box<dyn Any + Send> {
    payload.unwrap_or_else(|| Box::new(message.to_owned()))
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    crate::panic_message(p)
        .unwrap_or("panic with a non-string payload")
        .to_owned()
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> AsyncResult<T> {
        AsyncResult {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for AsyncResult<T> {
    fn default() -> AsyncResult<T> {
        AsyncResult::new()
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &lock(&self.inner.state).value {
            Value::Pending => "pending",
            Value::Ok(_) => "ok",
            Value::Panic { .. } => "panic",
        };
        f.debug_struct("AsyncResult")
            .field("state", &state)
            .finish()
    }
}
