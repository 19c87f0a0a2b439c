//! The one queue engine behind `Queue`, `LifoQueue`, `PriorityQueue`,
//! `JoinableQueue` and the channels.
//!
//! State under one lock (`lock.rs`): a buffer (FIFO, LIFO or min-heap, the
//! only thing that differs between the queue kinds), a capacity, the blocked
//! getters and the blocked putters (each a [`WaitList`] of waiters on their
//! own stacks), `wait_any` watchers, the unfinished-task count of a joinable
//! queue and the closed flags of a channel.
//!
//! ```text
//!   put(v):  a getter waits?   → hand v to the oldest getter       (buffer empty)
//!            room in buffer?   → push v
//!            else              → queue a putter offering v, park
//!   get():   buffer non-empty? → pop; refill from the oldest putter
//!            a putter waits?   → take its item directly (capacity 0)
//!            else              → queue a getter, park until handed an item
//! ```
//!
//! Getters wait only while the buffer is empty, putters only while it is
//! full, so waiters never sit next to a usable buffer, and items leave a FIFO
//! queue in exactly the order they were accepted.
//!
//! Cancellation: a getter killed after an item was handed to it gives the
//! item to the next getter, or puts it back at the *front* of the buffer
//! (even if that exceeds the capacity by one for a moment), then unwinds. A
//! putter whose item was taken has completed its put; if it is killed just
//! then it unwinds without losing anything. A timed-out getter or putter that
//! was served just before its deadline succeeds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::lock::Lock;
use super::waitlist::{
    Outcome, Signal, WaitList, Waiter, Wake, Watchers, expired, lock, park_waiter, unpark_all,
    wait_notified,
};
use crate::park::{self, Wakeup};

/// Where a queue keeps its items; the only difference between queue kinds.
pub(crate) trait Buffer<T> {
    fn new() -> Self;
    fn push(&mut self, v: T);
    fn pop(&mut self) -> Option<T>;
    /// Puts back an item that was popped first (it was next in line).
    fn unpop(&mut self, v: T);
    fn len(&self) -> usize;
}

/// First in, first out.
pub(crate) struct Fifo<T>(VecDeque<T>);

impl<T> Buffer<T> for Fifo<T> {
    fn new() -> Self {
        Fifo(VecDeque::new())
    }
    fn push(&mut self, v: T) {
        self.0.push_back(v);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn unpop(&mut self, v: T) {
        self.0.push_front(v);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out.
pub(crate) struct Lifo<T>(Vec<T>);

impl<T> Buffer<T> for Lifo<T> {
    fn new() -> Self {
        Lifo(Vec::new())
    }
    fn push(&mut self, v: T) {
        self.0.push(v);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn unpop(&mut self, v: T) {
        self.0.push(v);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Smallest first.
pub(crate) struct Priority<T>(BinaryHeap<Reverse<T>>);

impl<T: Ord> Buffer<T> for Priority<T> {
    fn new() -> Self {
        Priority(BinaryHeap::new())
    }
    fn push(&mut self, v: T) {
        self.0.push(Reverse(v));
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|r| r.0)
    }
    fn unpop(&mut self, v: T) {
        self.0.push(Reverse(v));
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Why a put did not happen; the item comes back.
pub(crate) enum PutError<T> {
    /// Full until the deadline (or now, for a poll).
    Full(T),
    /// The receiving side is gone (channels only).
    Closed(T),
}

/// Why a get returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GetError {
    /// Empty until the deadline (or now, for a poll).
    Empty,
    /// Empty and every sender is gone (channels only).
    Closed,
}

pub(crate) struct State<T, B> {
    buf: B,
    cap: usize,
    getters: WaitList<T>,
    putters: WaitList<T>,
    watchers: Watchers,
    /// Items put and not yet `task_done` (joinable queues only).
    unfinished: usize,
    joiners: WaitList<()>,
    /// Every sender is gone: gets fail once the buffer is drained.
    closed_tx: bool,
    /// The receiver is gone: puts fail.
    closed_rx: bool,
}

pub(crate) struct QueueCore<T, B> {
    state: Lock<State<T, B>>,
    joinable: bool,
}

impl<T, B: Buffer<T>> QueueCore<T, B> {
    /// `cap == usize::MAX` is unbounded; 0 is a rendezvous (channels only).
    pub(crate) fn new(cap: usize, joinable: bool) -> Self {
        QueueCore {
            state: Lock::new(State {
                buf: B::new(),
                cap,
                getters: WaitList::new(),
                putters: WaitList::new(),
                watchers: Watchers::new(),
                unfinished: 0,
                joiners: WaitList::new(),
                closed_tx: false,
                closed_rx: false,
            }),
            joinable,
        }
    }

    fn accepted(&self, g: &mut State<T, B>) {
        if self.joinable {
            g.unfinished += 1;
        }
    }

    pub(crate) fn put(&self, v: T, deadline: Option<Instant>) -> Result<(), PutError<T>> {
        let mut g = lock(&self.state);
        if g.closed_rx {
            return Err(PutError::Closed(v));
        }
        let v = match g.getters.hand(v) {
            Ok(wake) => {
                self.accepted(&mut g);
                drop(g);
                wake.unpark();
                return Ok(());
            }
            Err(v) => v,
        };
        if g.buf.len() < g.cap {
            g.buf.push(v);
            self.accepted(&mut g);
            g.watchers.fire();
            return Ok(());
        }
        if expired(deadline) {
            return Err(PutError::Full(v));
        }
        let mut w = Waiter::new(Some(v));
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { g.putters.push(&w) };
        // A putter waiting on a rendezvous channel makes a get possible.
        g.watchers.fire();
        drop(g);
        let (outcome, why) =
            park_waiter(&w, deadline, "Queue::put", &self.state, |g| &mut g.putters);
        match (outcome, why) {
            // The put completed; a kill takes effect after it.
            (Outcome::Handed, Wakeup::Cancelled) => park::deliver_cancel(),
            (Outcome::Handed, _) => Ok(()),
            (_, Wakeup::Cancelled) => park::deliver_cancel(),
            (Outcome::Woken, _) => Err(PutError::Closed(w.take_slot().expect("not taken"))),
            (Outcome::Left, _) => Err(PutError::Full(w.take_slot().expect("not taken"))),
        }
    }

    pub(crate) fn get(&self, deadline: Option<Instant>) -> Result<T, GetError> {
        loop {
            let mut g = lock(&self.state);
            if let Some(v) = g.buf.pop() {
                let wake = match g.putters.take() {
                    Some((pv, wake)) => {
                        g.buf.push(pv);
                        self.accepted(&mut g);
                        Some(wake)
                    }
                    None => None,
                };
                drop(g);
                if let Some(w) = wake {
                    w.unpark();
                }
                return Ok(v);
            }
            if let Some((v, wake)) = g.putters.take() {
                self.accepted(&mut g);
                drop(g);
                wake.unpark();
                return Ok(v);
            }
            if g.closed_tx {
                return Err(GetError::Closed);
            }
            if expired(deadline) {
                return Err(GetError::Empty);
            }
            let mut w = Waiter::new(None);
            // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
            unsafe { g.getters.push(&w) };
            drop(g);
            let (outcome, why) =
                park_waiter(&w, deadline, "Queue::get", &self.state, |g| &mut g.getters);
            match (outcome, why) {
                (Outcome::Handed, Wakeup::Cancelled) => {
                    self.give_back(w.take_slot().expect("handed an item"));
                    park::deliver_cancel()
                }
                (Outcome::Handed, _) => return Ok(w.take_slot().expect("handed an item")),
                (_, Wakeup::Cancelled) => park::deliver_cancel(),
                (Outcome::Woken, _) => continue, // closed: re-check
                (Outcome::Left, _) => return Err(GetError::Empty),
            }
        }
    }

    /// An item handed to a getter that cannot take it: to the next getter,
    /// or back to the front of the line.
    fn give_back(&self, v: T) {
        let mut g = lock(&self.state);
        match g.getters.hand(v) {
            Ok(wake) => {
                drop(g);
                wake.unpark();
            }
            Err(v) => {
                g.buf.unpop(v);
                g.watchers.fire();
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.state).buf.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        lock(&self.state).cap
    }

    pub(crate) fn is_full(&self) -> bool {
        let g = lock(&self.state);
        g.buf.len() >= g.cap
    }

    /// Whether a get would not block now (an item, a putter, or closed).
    pub(crate) fn get_ready(&self) -> bool {
        let g = lock(&self.state);
        g.buf.len() > 0 || !g.putters.is_empty() || g.closed_tx
    }

    pub(crate) fn task_done(&self) -> bool {
        let wakes = {
            let mut g = lock(&self.state);
            if g.unfinished == 0 {
                return false;
            }
            g.unfinished -= 1;
            if g.unfinished > 0 {
                return true;
            }
            g.joiners.wake_all(true)
        };
        unpark_all(wakes);
        true
    }

    pub(crate) fn unfinished(&self) -> usize {
        lock(&self.state).unfinished
    }

    /// Waits until every accepted item is `task_done`; false on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let g = lock(&self.state);
        if g.unfinished == 0 {
            return true;
        }
        wait_notified(g, &self.state, deadline, "JoinableQueue::join", |g| {
            &mut g.joiners
        })
    }

    /// Closes one side (channels): wakes the waiters of the other side,
    /// which then see the closed flag. Returns what to drop outside the lock.
    pub(crate) fn close(&self, tx: bool) -> Option<B> {
        let (wakes, dropped): (Vec<Wake>, Option<B>) = {
            let mut g = lock(&self.state);
            g.watchers.fire();
            if tx {
                g.closed_tx = true;
                (g.getters.wake_all(false), None)
            } else {
                g.closed_rx = true;
                let old = std::mem::replace(&mut g.buf, B::new());
                (g.putters.wake_all(false), Some(old))
            }
        };
        unpark_all(wakes);
        dropped
    }

    pub(crate) fn watch(&self, s: &Arc<Signal>) {
        lock(&self.state).watchers.add(s);
    }

    pub(crate) fn unwatch(&self, s: &Arc<Signal>) {
        lock(&self.state).watchers.remove(s);
    }
}
