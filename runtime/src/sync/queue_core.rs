//! The one queue engine behind `Queue`, `LifoQueue`, `PriorityQueue`,
//! `JoinableQueue` and the channels.
//!
//! State under one lock (`lock.rs`): a buffer (FIFO, LIFO or min-heap, the
//! only thing that differs between the queue kinds), a capacity, the blocked
//! getters and the blocked putters (each a [`WaitList`] of waiters on their
//! own stacks), the `spill` (see below), `wait_any` watchers, the
//! unfinished-task count of a joinable queue and the closed flags of a
//! channel.
//!
//! ```text
//!   put(v):  a getter waits?   → hand v to the oldest getter       (buffer empty)
//!            room in buffer?   → push v
//!            else              → queue a putter offering v, park
//!   get():   buffer non-empty? → pop; refill the freed place from the
//!                                spill, else from the oldest putter
//!            spill non-empty?  → take its first item (capacity 0)
//!            a putter waits?   → take its item directly (capacity 0)
//!            else              → queue a getter, park until handed an item
//! ```
//!
//! # Invariant
//!
//! Checked under the lock at the end of every operation in debug builds
//! (`State::check`):
//!
//! 1. `buf.len() <= cap`: `len()` never exceeds the capacity, and a
//!    rendezvous channel (`cap == 0`) never buffers anything.
//! 2. Putters wait only while the buffer is full, and so do spilled items:
//!    `putters` or `spill` non-empty ⇒ `buf.len() == cap`.
//! 3. Getters wait only while there is nothing to get: `getters` non-empty ⇒
//!    the buffer, the spill and the putters are empty.
//! 4. Once the receiver is gone (`closed_rx`), nothing is buffered or
//!    spilled.
//!
//! So waiters never sit next to a usable buffer, and items leave a FIFO
//! queue in exactly the order they were accepted: buffer first, then the
//! spill, then the putters' items.
//!
//! # Cancellation: give-back
//!
//! A getter killed (or hit by its `timeout`) after an item was handed to it
//! but before it ran *gives the item back*, restoring the state as if the
//! hand-off had never happened and the item had gone into the buffer when it
//! was put:
//!
//! * a getter that came later waits (the buffer is empty): it gets the item;
//! * else the item goes back into the buffer as its *oldest* item (the front
//!   of a FIFO, the bottom of a LIFO), first in line;
//! * if that leaves the buffer one over its capacity (puts filled it since
//!   the hand-off; or capacity 0), the *newest* buffered item (a
//!   priority queue: the largest) moves to the front of the spill. Without
//!   the hand-off, that item's put would still be waiting for room: the
//!   spill is the head of the putters' line, holding items whose put has
//!   already returned. A rendezvous channel therefore never buffers
//!   anything: a given-back value is taken by the next `recv` first, and a
//!   later `send` still waits until a `recv` takes its own value.
//!
//! The put that made the hand-off has completed either way; the item keeps
//! its place in line and counts as accepted (a joinable queue's task count
//! does not change). A putter whose item was taken has completed its put; if
//! it is killed just then it unwinds without losing anything. A timed-out
//! getter or putter that was served just before its deadline succeeds.
//!
//! The other primitives hand waiters a lock or a permit, and give them back
//! the same way: a mutex is passed to the next waiter or unlocked (nobody
//! else can own it meanwhile), a semaphore permit goes to the next waiter or
//! back to the count (a bounded semaphore counts permits in flight against
//! its maximum, so the count never exceeds it). Events, results and
//! `wait_any` wake every waiter and hand nothing over, so there is nothing
//! to give back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::lock::Lock;
use super::waitlist::{
    Outcome, Signal, WaitList, Waiter, Wake, Watchers, expired, fire_all, lock, park_waiter,
    unpark_all, wait_notified,
};
use crate::park::{self, Wakeup};

/// Where a queue keeps its items; the only difference between queue kinds.
pub(crate) trait Buffer<T> {
    fn new() -> Self;
    fn push(&mut self, v: T);
    fn pop(&mut self) -> Option<T>;
    /// Adds `v` as the item accepted before all others (a give-back).
    fn push_oldest(&mut self, v: T);
    /// Removes the item accepted last (for a priority queue, which does not
    /// know the order of acceptance: the one that leaves last).
    fn pop_newest(&mut self) -> Option<T>;
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
    fn push_oldest(&mut self, v: T) {
        self.0.push_front(v);
    }
    fn pop_newest(&mut self) -> Option<T> {
        self.0.pop_back()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out: the top of the stack is the back.
pub(crate) struct Lifo<T>(VecDeque<T>);

impl<T> Buffer<T> for Lifo<T> {
    fn new() -> Self {
        Lifo(VecDeque::new())
    }
    fn push(&mut self, v: T) {
        self.0.push_back(v);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_back()
    }
    fn push_oldest(&mut self, v: T) {
        self.0.push_front(v);
    }
    fn pop_newest(&mut self) -> Option<T> {
        self.0.pop_back()
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
    fn push_oldest(&mut self, v: T) {
        self.push(v);
    }
    fn pop_newest(&mut self) -> Option<T> {
        // The largest item. Rare (a give-back into a full queue), so O(n).
        // A panicking `Ord` (a bug in `T`) leaves the heap whole if it panics
        // while the largest is searched, but drops its items if it panics
        // in the rebuild: std's `BinaryHeap` gives no more than that.
        let (i, _) = self.0.iter().enumerate().min_by(|a, b| a.1.cmp(b.1))?;
        let mut items = std::mem::take(&mut self.0).into_vec();
        let largest = items.swap_remove(i);
        self.0 = BinaryHeap::from(items);
        Some(largest.0)
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
    /// Items already accepted that wait for room in the buffer ahead of the
    /// putters' items (see "give-back" in the module docs); only non-empty
    /// while the buffer is full.
    spill: VecDeque<T>,
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

impl<T, B: Buffer<T>> State<T, B> {
    /// Asserts the invariant of the module docs (debug builds only).
    #[inline]
    fn check(&self) {
        let full = self.buf.len() == self.cap;
        debug_assert!(
            self.buf.len() <= self.cap,
            "queue over capacity: {} > {}",
            self.buf.len(),
            self.cap
        );
        debug_assert!(
            self.spill.is_empty() || full,
            "spilled items next to room in the buffer"
        );
        debug_assert!(
            self.putters.none_queued() || full,
            "putters wait next to room in the buffer"
        );
        debug_assert!(
            self.getters.none_queued()
                || (self.buf.len() == 0 && self.spill.is_empty() && self.putters.none_queued()),
            "getters wait next to an item"
        );
        debug_assert!(
            !self.closed_rx || (self.buf.len() == 0 && self.spill.is_empty()),
            "items kept for a receiver that is gone"
        );
    }

    /// After a pop from the buffer: the item first in line for the freed
    /// place moves in (a spilled item, else the oldest putter's).
    fn refill(&mut self, joinable: bool) -> Option<Wake> {
        debug_assert!(self.buf.len() < self.cap);
        if let Some(v) = self.spill.pop_front() {
            self.buf.push(v); // accepted already
            return None;
        }
        let (v, wake) = self.putters.take()?;
        self.buf.push(v);
        if joinable {
            self.unfinished += 1;
        }
        Some(wake)
    }
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
                spill: VecDeque::new(),
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
                g.check();
                drop(g);
                wake.unpark();
                return Ok(());
            }
            Err(v) => v,
        };
        if g.buf.len() < g.cap {
            g.buf.push(v);
            self.accepted(&mut g);
            let watchers = g.watchers.take();
            g.check();
            drop(g);
            fire_all(watchers);
            return Ok(());
        }
        if expired(deadline) {
            return Err(PutError::Full(v));
        }
        let mut w = Waiter::new(Some(v));
        // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
        unsafe { g.putters.push(&w) };
        // A putter waiting on a rendezvous channel makes a get possible.
        let watchers = g.watchers.take();
        g.check();
        drop(g);
        fire_all(watchers);
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
                let wake = g.refill(self.joinable);
                g.check();
                drop(g);
                if let Some(w) = wake {
                    w.unpark();
                }
                return Ok(v);
            }
            // Capacity 0: the first in line is a spilled item, else a putter.
            if let Some(v) = g.spill.pop_front() {
                g.check();
                return Ok(v);
            }
            if let Some((v, wake)) = g.putters.take() {
                self.accepted(&mut g);
                g.check();
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
            g.check();
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

    /// An item handed to a getter that cannot take it (see "give-back" in
    /// the module docs): to the next getter, else back into the buffer as
    /// its oldest item, spilling the newest if that leaves no room.
    fn give_back(&self, v: T) {
        let mut g = lock(&self.state);
        if g.closed_rx {
            // Unreachable while the getter borrows the receiver; drop it
            // like the buffered items, outside the lock.
            drop(g);
            drop(v);
            return;
        }
        match g.getters.hand(v) {
            Ok(wake) => {
                g.check();
                drop(g);
                wake.unpark();
            }
            Err(v) => {
                g.buf.push_oldest(v);
                if g.buf.len() > g.cap {
                    let newest = g.buf.pop_newest().expect("over capacity, so not empty");
                    g.spill.push_front(newest);
                }
                let watchers = g.watchers.take();
                g.check();
                drop(g);
                fire_all(watchers);
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
        let mut g = lock(&self.state);
        g.buf.len() > 0 || !g.spill.is_empty() || !g.putters.is_empty() || g.closed_tx
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
    pub(crate) fn close(&self, tx: bool) -> Option<(B, VecDeque<T>)> {
        let (wakes, dropped, watchers) = {
            let mut g = lock(&self.state);
            let watchers = g.watchers.take();
            let (wakes, dropped) = if tx {
                g.closed_tx = true;
                (g.getters.wake_all(false), None)
            } else {
                g.closed_rx = true;
                let old = std::mem::replace(&mut g.buf, B::new());
                let spilled = std::mem::take(&mut g.spill);
                (g.putters.wake_all(false), Some((old, spilled)))
            };
            g.check();
            (wakes, dropped, watchers)
        };
        unpark_all(wakes);
        fire_all(watchers);
        dropped
    }

    pub(crate) fn watch(&self, s: &Arc<Signal>) {
        lock(&self.state).watchers.add(s);
    }

    pub(crate) fn unwatch(&self, s: &Arc<Signal>) {
        lock(&self.state).watchers.remove(s);
    }
}
