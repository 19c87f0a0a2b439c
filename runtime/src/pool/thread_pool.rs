//! A pool of OS threads for blocking or CPU-bound closures, waited on
//! without blocking the hub (gevent's `ThreadPool`, Python's
//! `multiprocessing.pool.ThreadPool`).
//!
//! # Design
//!
//! Jobs go into one queue under a mutex; up to `n` worker threads, started on
//! demand, take them in order (a condvar wakes an idle worker). A task's
//! result travels back through a one-shot slot: the worker stores it and
//! wakes the waiter through its [`Unparker`](crate::park::Unparker), which
//! for a waiter on another thread means that hub's cross-thread queue (and
//! its eventfd, only if the hub sleeps in `epoll_wait`). So a coroutine
//! waiting in [`apply`](ThreadPool::apply) is parked and its hub keeps
//! running other coroutines; a root or plain thread blocks in its hub.
//!
//! Panics are caught on the worker (which survives) and come back as
//! [`PoolError::Panicked`]. [`apply_async`](ThreadPool::apply_async) runs its
//! callback in a coroutine spawned on the *caller's* hub: it runs when that
//! hub runs (whenever the caller blocks on a moss call).
//!
//! A waiter that is killed stops waiting; its task still runs to completion
//! on the worker and the result is dropped.
//!
//! # fork
//!
//! A pool used in a parent also works in a forked child (a
//! [`Process`](super::Process) body, say): the parent's worker threads do
//! not exist there, so the child's first use gives the pool a fresh, empty
//! queue and starts the child's own workers. Tasks queued in the parent stay
//! the parent's; a closed pool stays closed.
//!
//! ```
//! use moss::pool::ThreadPool;
//! let pool = ThreadPool::new(4);
//! let hs: Vec<_> = (0..8u64)
//!     .map(|i| {
//!         let pool = pool.clone();
//!         // Each coroutine waits for its task; the hub runs the others.
//!         moss::spawn(move || pool.apply(move || i * i).unwrap())
//!     })
//!     .collect();
//! let squares: Vec<u64> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
//! assert_eq!(squares, vec![0, 1, 4, 9, 16, 25, 36, 49]);
//! assert_eq!(pool.map(|s: &str| s.len(), vec!["a", "bb", "ccc"]).unwrap(), vec![1, 2, 3]);
//! pool.close();
//! pool.join();
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::PoolError;
use crate::park::{self, Unparker};
use crate::sync::AsyncResult;
use crate::sys::atfork::generation as fork_generation;
use crate::thread::Oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of at most `n` OS threads. Cheap to clone (a handle); `Send +
/// Sync`. Dropping the last handle closes the pool: queued tasks still run,
/// then the threads exit.
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Closes the pool when the last user handle goes (workers hold `Shared`
/// only, so they do not keep the pool open).
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Shared {
    size: usize,
    /// The queue and worker bookkeeping of the current process generation.
    ///
    /// # Invariants
    /// Points at a `Core` from `Box::into_raw`. In a process it only ever
    /// changes in a forked child, away from a core inherited from the parent
    /// (see [`Shared::core`]); replaced cores are leaked, never freed, so a
    /// `&Core` handed out stays valid. The current one is freed on drop.
    core: AtomicPtr<Core>,
}

/// One process generation's pool: the workers it started and their queue.
struct Core {
    generation: u64,
    /// `state.closed`, readable without the lock (by a forked child).
    closed_hint: AtomicBool,
    state: Mutex<State>,
    work: Condvar,
}

impl Core {
    fn new() -> Core {
        Core {
            generation: fork_generation(),
            closed_hint: AtomicBool::new(false),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                live: 0,
                idle: 0,
                outstanding: 0,
                joiners: Vec::new(),
            }),
            work: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct State {
    queue: VecDeque<Job>,
    closed: bool,
    /// Workers started and not exited.
    live: usize,
    /// Workers waiting for a job.
    idle: usize,
    /// Tasks queued or running, plus callbacks not yet run.
    outstanding: usize,
    /// `join` waiters, woken when `outstanding` (or `live` after close) drops to 0.
    joiners: Vec<Unparker>,
}

impl ThreadPool {
    /// A pool of at most `n` threads, started as work arrives; `n = 0` means
    /// one per CPU ([`std::thread::available_parallelism`], or 1 if
    /// unknown), as for [`ProcessPool::new`](super::ProcessPool::new) and
    /// Python's `ThreadPool()`.
    ///
    /// ```
    /// let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// assert_eq!(moss::pool::ThreadPool::new(0).size(), cpus);
    /// ```
    pub fn new(n: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            size: super::size_or_cpus(n),
            core: AtomicPtr::new(Box::into_raw(Box::new(Core::new()))),
        });
        ThreadPool {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The maximum number of threads.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// Runs `f` on a pool thread and waits for its result: the calling
    /// coroutine parks while its hub runs others (a root or plain thread
    /// blocks). A panic in `f` is returned as [`PoolError::Panicked`].
    pub fn apply<F, T>(&self, f: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.submit(f, 1)?;
        slot.wait(None, "thread pool task");
        match slot.take().expect("only this caller takes the result") {
            Ok(v) => Ok(v),
            Err(p) => Err(PoolError::from_panic(&*p)),
        }
    }

    /// Runs `f` on a pool thread without waiting. When it is done,
    /// `callback(&value)` runs in a coroutine on the caller's hub, then the
    /// returned [`AsyncResult`] becomes ready (so `get` returns after the
    /// callback ran). A panic in `f` (or in the callback) is stored in the
    /// result, and `get` re-raises it; the callback is not called for a
    /// panicked task. After [`close`](Self::close) the result is ready at
    /// once with a stored panic whose payload is [`PoolError::Closed`].
    ///
    /// The callback runs when the caller's hub runs, that is whenever the
    /// caller blocks on a moss call (`get`, `join`, a sleep, I/O).
    pub fn apply_async<F, T, C>(&self, f: F, callback: C) -> AsyncResult<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
        C: FnOnce(&T) + 'static,
    {
        let result = AsyncResult::new();
        let slot = match self.submit(f, 2) {
            Ok(s) => s,
            Err(e) => {
                result.set_panic(Box::new(e));
                return result;
            }
        };
        let r = result.clone();
        let shared = self.shared.clone();
        crate::spawn(move || {
            slot.wait(None, "thread pool task");
            match slot.take().expect("only the callback takes the result") {
                Ok(v) => match catch_unwind(AssertUnwindSafe(|| callback(&v))) {
                    Ok(()) => r.set(v),
                    Err(p) => r.set_panic(p),
                },
                Err(p) => r.set_panic(p),
            }
            shared.finished_one();
        });
        result
    }

    /// Applies `f` to every item on the pool and returns the results in
    /// input order, or the first item's error (in input order).
    pub fn map<F, I, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = I>,
    ) -> Result<Vec<R>, PoolError>
    where
        F: Fn(I) -> R + Send + Sync + 'static,
        I: Send + 'static,
        R: Send + 'static,
    {
        self.imap(f, items)?.collect()
    }

    /// Like [`map`](Self::map), but yields each result (in input order) as
    /// soon as it and the ones before it are done. All items are submitted
    /// at once.
    pub fn imap<F, I, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = I>,
    ) -> Result<Imap<R>, PoolError>
    where
        F: Fn(I) -> R + Send + Sync + 'static,
        I: Send + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        let mut slots = VecDeque::new();
        for item in items {
            let f = f.clone();
            slots.push_back(self.submit(move || f(item), 1)?);
        }
        Ok(Imap { slots })
    }

    /// Refuses new tasks; queued and running tasks still complete, then the
    /// threads exit.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Waits until every task submitted so far (and every `apply_async`
    /// callback) has finished, and, once the pool is closed, until its
    /// threads have exited. A coroutine yields meanwhile.
    pub fn join(&self) {
        loop {
            let u = {
                let mut s = self.shared.core().lock();
                if s.outstanding == 0 && (!s.closed || s.live == 0) {
                    return;
                }
                let u = park::unparker();
                s.joiners.push(u.clone());
                u
            };
            park::park_cancellable(None, "thread pool join");
            drop(u);
        }
    }

    /// Queues `f`, counting `outstanding` items for `join` (the task, and
    /// its callback if any).
    fn submit<F, T>(
        &self,
        f: F,
        outstanding: usize,
    ) -> Result<Arc<Oneshot<std::thread::Result<T>>>, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::new(Oneshot::new());
        let theirs = slot.clone();
        let job: Job = Box::new(move || theirs.set(catch_unwind(AssertUnwindSafe(f))));
        let core = self.shared.core();
        let spawn = {
            let mut s = core.lock();
            if s.closed {
                return Err(PoolError::Closed);
            }
            s.queue.push_back(job);
            s.outstanding += outstanding;
            let spawn = s.idle == 0 && s.live < self.shared.size;
            if spawn {
                s.live += 1;
            } else if s.idle > 0 {
                core.work.notify_one();
            }
            spawn
        };
        if spawn && let Err(e) = self.shared.clone().start_worker() {
            let mut s = core.lock();
            s.live -= 1;
            if s.live == 0 {
                // Nobody could ever run it: take it back.
                s.queue.pop_back();
                s.outstanding -= outstanding;
                return Err(PoolError::io(&e));
            }
        }
        Ok(slot)
    }
}

impl Shared {
    /// The core of this process generation. In a forked child, the first
    /// call replaces the core inherited from the parent (whose workers do
    /// not exist here, and whose lock one of them may hold forever) with a
    /// fresh, empty one that starts its own workers; a closed pool stays
    /// closed. The inherited core is leaked, never locked.
    fn core(&self) -> &Core {
        let p = self.core.load(Ordering::Acquire);
        // SAFETY: see the field's invariants: `p` is a live core.
        let core = unsafe { &*p };
        if core.generation == fork_generation() {
            return core;
        }
        self.replace_inherited(p)
    }

    #[cold]
    fn replace_inherited(&self, old: *mut Core) -> &Core {
        // SAFETY: as in `core`. Only the atomic `closed` copy is read, no
        // lock is taken.
        let was_closed = unsafe { &*old }.closed_hint.load(Ordering::Relaxed);
        let fresh = Core::new();
        fresh.closed_hint.store(was_closed, Ordering::Relaxed);
        fresh.lock().closed = was_closed;
        let fresh = Box::into_raw(Box::new(fresh));
        let p = match self
            .core
            .compare_exchange(old, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` was never published; we own it.
                drop(unsafe { Box::from_raw(fresh) });
                winner
            }
        };
        // SAFETY: `p` is the published core, live per the invariants.
        unsafe { &*p }
    }

    fn close(&self) {
        let core = self.core();
        core.closed_hint.store(true, Ordering::Relaxed);
        let joiners = {
            let mut s = core.lock();
            s.closed = true;
            core.work.notify_all();
            if s.live == 0 && s.outstanding == 0 {
                std::mem::take(&mut s.joiners)
            } else {
                Vec::new()
            }
        };
        joiners.into_iter().for_each(|u| u.unpark());
    }

    fn start_worker(self: Arc<Shared>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("moss-threadpool".into())
            .spawn(move || self.work())?;
        Ok(())
    }

    /// A worker's loop, on the core of the generation that started it.
    fn work(&self) {
        let core = self.core();
        let mut s = core.lock();
        loop {
            if let Some(job) = s.queue.pop_front() {
                drop(s);
                job();
                self.finished_one();
                s = core.lock();
                continue;
            }
            if s.closed {
                break;
            }
            s.idle += 1;
            s = core.work.wait(s).unwrap_or_else(|e| e.into_inner());
            s.idle -= 1;
        }
        s.live -= 1;
        let joiners = if s.live == 0 && s.outstanding == 0 {
            std::mem::take(&mut s.joiners)
        } else {
            Vec::new()
        };
        drop(s);
        joiners.into_iter().for_each(|u| u.unpark());
    }

    fn finished_one(&self) {
        let joiners = {
            let mut s = self.core().lock();
            s.outstanding -= 1;
            if s.outstanding == 0 && (!s.closed || s.live == 0) {
                std::mem::take(&mut s.joiners)
            } else {
                Vec::new()
            }
        };
        joiners.into_iter().for_each(|u| u.unpark());
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the last reference to the pool is gone (workers hold one
        // while they run), so nothing uses the current core; it came from
        // `Box::into_raw` and is freed once, here.
        drop(unsafe { Box::from_raw(*self.core.get_mut()) });
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.core().lock();
        f.debug_struct("ThreadPool")
            .field("size", &self.shared.size)
            .field("threads", &s.live)
            .field("queued", &s.queue.len())
            .field("closed", &s.closed)
            .finish()
    }
}

/// The results of [`ThreadPool::imap`], in input order; each `next` waits
/// (yielding in a coroutine) for the next result.
pub struct Imap<R> {
    slots: VecDeque<Arc<Oneshot<std::thread::Result<R>>>>,
}

impl<R> Iterator for Imap<R> {
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Result<R, PoolError>> {
        let slot = self.slots.pop_front()?;
        slot.wait(None, "thread pool imap");
        Some(
            match slot.take().expect("only the iterator takes the result") {
                Ok(v) => Ok(v),
                Err(p) => Err(PoolError::from_panic(&*p)),
            },
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.slots.len(), Some(self.slots.len()))
    }
}

impl<R> fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("remaining", &self.slots.len())
            .finish()
    }
}
