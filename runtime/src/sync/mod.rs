//! Synchronisation primitives for coroutines *and* threads, in gevent's
//! shapes: [`Event`], [`AsyncResult`], [`Mutex`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Queue`] and its variants ([`LifoQueue`],
//! [`PriorityQueue`], [`JoinableQueue`]), channels ([`channel`],
//! [`bounded`]), and waiting for the first of several things ([`wait_any`],
//! [`iwait`], [`select`]); and Python's `threading` ones in std's shapes:
//! [`RLock`], [`Condvar`] (Python's `Condition`), [`Barrier`], [`RwLock`]
//! and [`OnceCell`] (std's `OnceLock`).
//!
//! # One design for every primitive
//!
//! Every type here is `Send + Sync` (for `T: Send`) and works the same
//! between coroutines of one hub, coroutines of different threads, and plain
//! threads. Each keeps its state under a small internal lock together with
//! a FIFO wait list. A call that cannot proceed queues a waiter and parks:
//! a coroutine parks by switching to its hub, a thread's root (or a plain
//! thread) by running its hub loop, which blocks in `epoll_wait` when it has
//! nothing else to do. A wake-up of a coroutine of the same hub is a push on
//! its run queue; a wake-up of another thread goes through that hub's
//! cross-thread queue (and its eventfd only if it sleeps).
//! The uncontended path of every operation is an uncontended lock (a
//! compare-and-swap and a store): no syscall, no allocation.
//!
//! # Hand-off, FIFO and cancellation
//!
//! Whoever makes progress possible *hands* it to the first waiter under the
//! lock: a `put` gives its item straight to the oldest blocked `get`, a
//! `release` gives the permit (an unlock gives the lock) to the oldest
//! blocked acquirer. So waiters are served strictly in the order they came
//! and a late-comer cannot overtake them.
//!
//! A waiter whose deadline passes or that is killed (or hit by an enclosing
//! `moss::timeout`) — also after the hand-off but before it got to run —
//! re-locks and either removes itself (nothing was handed to it) or finds
//! that it was handed something just before. Then a timed
//! out call succeeds after all (the hand-off wins), and a cancelled one
//! passes what it got on — the item goes back to the next waiter or to the
//! head of the queue's line (never past its capacity: as if it had never
//! been handed over), the permit or lock to the next acquirer, a condition
//! variable's notification to the next waiter, the right to initialize a
//! [`OnceCell`] to the next caller — before it unwinds. Nothing is lost.
//!
//! # `moss::sync` or `std::sync`?
//!
//! Use these types for anything a coroutine waits on. Without
//! `moss::monkey::patch_all`, a coroutine that blocks in a
//! `std::sync::Mutex`, `Condvar` or `mpsc::Receiver::recv` blocks its whole
//! thread: no other coroutine of that hub runs until it returns, and if
//! what it waits for is another coroutine of the same thread, it waits
//! forever. After `patch_all`, std's locks and channels park the coroutine
//! instead (on Linux x86_64), but a std channel still never wakes a
//! receiver fed by a coroutine of its own thread, and std's channels wake
//! parked coroutines only after a delay of a few milliseconds. The types
//! here have neither limit, add timeouts, and behave the same with or
//! without patching. A `std::sync::Mutex` that is never held across a
//! blocking call is fine in coroutines either way.
//!
//! # Errors, not panics
//!
//! `_timeout`, `try_` and `_nowait` forms return the error values of this
//! module ([`Timeout`], [`Full`], [`Empty`], [`SendError`], ...), each a
//! `std::error::Error` with a clear message.

mod async_result;
mod barrier;
mod channel;
mod condvar;
mod error;
mod event;
pub(crate) mod lock;
mod mutex;
mod once_cell;
mod queue;
mod queue_core;
mod rlock;
mod rwlock;
mod semaphore;
mod wait;
mod waitlist;

pub use async_result::{AsyncResult, AsyncResultFuture};
pub use barrier::{Barrier, BarrierWaitResult};
pub use channel::{IntoIter, Iter, Receiver, Sender, bounded, channel};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use error::{
    Empty, Full, RecvError, RecvTimeoutError, ReleaseError, SendError, TaskDoneError, Timeout,
    TryRecvError, TrySendError,
};
pub use event::Event;
pub use mutex::{Mutex, MutexGuard};
pub use once_cell::OnceCell;
pub use queue::{JoinableQueue, LifoQueue, PriorityQueue, Queue};
pub use rlock::{RLock, RLockGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
pub use wait::{IWait, Waitable, Watch, iwait, select, select_timeout, wait_any, wait_any_timeout};
