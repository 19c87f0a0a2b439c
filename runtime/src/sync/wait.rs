//! Waiting for the first of several things: [`wait_any`], [`iwait`] and
//! [`select`] (gevent's `wait` / `iwait`, and a `select` over receivers).
//!
//! Anything [`Waitable`] can take part: [`Event`], [`AsyncResult`], the
//! queues, a channel [`Receiver`] and a coroutine's [`JoinHandle`].
//!
//! One round of a wait: create a one-shot signal holding an unparker of the
//! caller's next park; register it with every source (a thread-safe source
//! keeps it in its watcher list and fires it when it may have become ready;
//! a `JoinHandle` gets the caller as a joiner); *then* check every source, so
//! a readiness change between the check and the park cannot be missed; park;
//! unregister everywhere; check again. Readiness is re-checked after every
//! wake-up, so a spurious or stale wake-up only costs another round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::async_result::AsyncResult;
use super::channel::Receiver;
use super::error::{RecvError, Timeout};
use super::event::Event;
use super::queue::{JoinableQueue, LifoQueue, PriorityQueue, Queue};
use super::waitlist::{Signal, deadline_in};
use crate::JoinHandle;
use crate::hub::Hub;
use crate::park::{self, Wakeup};

mod sealed {
    pub trait Sealed {}
}

/// A registration of one `wait_any` round with a source. Opaque.
pub struct Watch {
    signal: Arc<Signal>,
}

/// Something [`wait_any`], [`iwait`] can wait on. Implemented by moss's own
/// types only (sealed).
pub trait Waitable: sealed::Sealed {
    /// Whether waiting on it now would return at once: the event is set, the
    /// result is ready, there is an item (or the channel is closed), the
    /// coroutine has finished.
    fn is_ready(&self) -> bool;

    /// Registers `w` to be fired when this may have become ready.
    #[doc(hidden)]
    fn watch(&self, w: &Watch);

    /// Undoes [`watch`](Self::watch).
    #[doc(hidden)]
    fn unwatch(&self, w: &Watch);
}

impl sealed::Sealed for Event {}
impl Waitable for Event {
    fn is_ready(&self) -> bool {
        self.is_set()
    }
    fn watch(&self, w: &Watch) {
        Event::watch(self, &w.signal);
    }
    fn unwatch(&self, w: &Watch) {
        Event::unwatch(self, &w.signal);
    }
}

impl<T> sealed::Sealed for AsyncResult<T> {}
impl<T> Waitable for AsyncResult<T> {
    fn is_ready(&self) -> bool {
        self.ready()
    }
    fn watch(&self, w: &Watch) {
        AsyncResult::watch(self, &w.signal);
    }
    fn unwatch(&self, w: &Watch) {
        AsyncResult::unwatch(self, &w.signal);
    }
}

impl<T> sealed::Sealed for Receiver<T> {}
impl<T> Waitable for Receiver<T> {
    fn is_ready(&self) -> bool {
        Receiver::is_ready(self)
    }
    fn watch(&self, w: &Watch) {
        self.core().watch(&w.signal);
    }
    fn unwatch(&self, w: &Watch) {
        self.core().unwatch(&w.signal);
    }
}

macro_rules! waitable_queue {
    ($name:ident $(: $bound:path)?) => {
        impl<T $(: $bound)?> sealed::Sealed for $name<T> {}
        impl<T $(: $bound)?> Waitable for $name<T> {
            fn is_ready(&self) -> bool {
                self.core_get_ready()
            }
            fn watch(&self, w: &Watch) {
                self.core().watch(&w.signal);
            }
            fn unwatch(&self, w: &Watch) {
                self.core().unwatch(&w.signal);
            }
        }
    };
}
waitable_queue!(Queue);
waitable_queue!(LifoQueue);
waitable_queue!(PriorityQueue: Ord);
waitable_queue!(JoinableQueue);

impl<T> sealed::Sealed for JoinHandle<T> {}
impl<T> Waitable for JoinHandle<T> {
    fn is_ready(&self) -> bool {
        self.is_finished()
    }
    fn watch(&self, _: &Watch) {
        // The hub wakes joiners when the coroutine finishes; the token is the
        // caller's next park, like the signal's unparker.
        let hub = Hub::current();
        self.header().add_joiner(hub.current_header().token());
    }
    fn unwatch(&self, _: &Watch) {
        // A joiner entry is a stale token after the park: harmless, and
        // dropped when the coroutine finishes.
    }
}

/// Waits until one of `objects` is ready and returns its index (the lowest
/// ready one). `None` for an empty slice. A `kill` or `timeout` of the
/// caller unwinds it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moss::sync::{wait_any, Event};
/// let (a, b) = (Arc::new(Event::new()), Arc::new(Event::new()));
/// let b2 = b.clone();
/// moss::spawn(move || { moss::sleep(Duration::from_millis(5)); b2.set() });
/// assert_eq!(wait_any(&[&*a, &*b]), Some(1));
/// ```
pub fn wait_any(objects: &[&dyn Waitable]) -> Option<usize> {
    match wait_any_until(objects, None) {
        Ok(i) => i,
        Err(Timeout) => unreachable!("no deadline"),
    }
}

/// [`wait_any`] for at most `d` (`Duration::ZERO` polls).
pub fn wait_any_timeout(objects: &[&dyn Waitable], d: Duration) -> Result<Option<usize>, Timeout> {
    wait_any_until(objects, deadline_in(d))
}

fn first_ready(objects: &[&dyn Waitable]) -> Option<usize> {
    objects.iter().position(|o| o.is_ready())
}

fn wait_any_until(
    objects: &[&dyn Waitable],
    deadline: Option<Instant>,
) -> Result<Option<usize>, Timeout> {
    if objects.is_empty() {
        return Ok(None);
    }
    loop {
        if let Some(i) = first_ready(objects) {
            return Ok(Some(i));
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Timeout);
        }
        let w = Watch {
            signal: Signal::new(),
        };
        for o in objects {
            o.watch(&w);
        }
        let ready = first_ready(objects);
        let why = if ready.is_none() {
            park::park_until(deadline, "wait_any")
        } else {
            Wakeup::Notified
        };
        for o in objects {
            o.unwatch(&w);
        }
        match why {
            Wakeup::Cancelled => park::deliver_cancel(),
            Wakeup::TimedOut => return first_ready(objects).map(Some).ok_or(Timeout),
            Wakeup::Notified => {}
        }
    }
}

/// Yields the indices of `objects` as they become ready, each once (gevent's
/// `iwait`); ends when all have been yielded.
///
/// ```
/// use std::time::Duration;
/// let hs: Vec<_> = [90u64, 10, 50]
///     .into_iter()
///     .map(|ms| moss::spawn(move || moss::sleep(Duration::from_millis(ms))))
///     .collect();
/// let objs: Vec<&dyn moss::sync::Waitable> = hs.iter().map(|h| h as _).collect();
/// let order: Vec<usize> = moss::sync::iwait(&objs).collect();
/// assert_eq!(order, [1, 2, 0]);
/// ```
pub fn iwait<'a>(objects: &'a [&'a dyn Waitable]) -> IWait<'a> {
    IWait {
        objects,
        pending: (0..objects.len()).collect(),
    }
}

/// The iterator of [`iwait`].
pub struct IWait<'a> {
    objects: &'a [&'a dyn Waitable],
    /// Indices not yielded yet.
    pending: Vec<usize>,
}

impl Iterator for IWait<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let rest: Vec<&dyn Waitable> = self.pending.iter().map(|&i| self.objects[i]).collect();
        let k = wait_any(&rest)?;
        Some(self.pending.remove(k))
    }
}

/// What [`select`] received: the receiver's index, and its value or
/// `Err(RecvError)` if that receiver's senders are all gone.
pub type Selected<T> = (usize, Result<T, RecvError>);

/// Receives from whichever of `receivers` has a value first: its index and
/// the value, or `Err(RecvError)` for a receiver whose senders are all gone
/// (drop it from the slice to keep selecting over the others). Lower indices
/// win ties. `None` for an empty slice.
///
/// ```
/// use moss::sync::{channel, select};
/// let (tx1, rx1) = channel::<&str>();
/// let (tx2, rx2) = channel();
/// moss::spawn(move || tx2.send("from 2").unwrap());
/// assert_eq!(select(&[&rx1, &rx2]), Some((1, Ok("from 2"))));
/// drop(tx1);
/// assert_eq!(select(&[&rx1]), Some((0, Err(moss::sync::RecvError))));
/// ```
pub fn select<T>(receivers: &[&Receiver<T>]) -> Option<Selected<T>> {
    match select_until(receivers, None) {
        Ok(r) => r,
        Err(Timeout) => unreachable!("no deadline"),
    }
}

/// [`select`] for at most `d`.
pub fn select_timeout<T>(
    receivers: &[&Receiver<T>],
    d: Duration,
) -> Result<Option<Selected<T>>, Timeout> {
    select_until(receivers, deadline_in(d))
}

fn select_until<T>(
    receivers: &[&Receiver<T>],
    deadline: Option<Instant>,
) -> Result<Option<Selected<T>>, Timeout> {
    let objects: Vec<&dyn Waitable> = receivers.iter().map(|r| *r as &dyn Waitable).collect();
    loop {
        let Some(i) = wait_any_until(&objects, deadline)? else {
            return Ok(None);
        };
        match receivers[i].try_recv() {
            Ok(v) => return Ok(Some((i, Ok(v)))),
            Err(super::TryRecvError::Disconnected) => return Ok(Some((i, Err(RecvError)))),
            // Taken by another thread sharing the receiver: wait again.
            Err(super::TryRecvError::Empty) => {}
        }
    }
}
