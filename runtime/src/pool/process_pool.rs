//! A pool of worker processes for CPU-bound work: `multiprocessing.Pool`.
//!
//! # Design
//!
//! ```text
//!  callers (any coroutine / thread)      manager thread             workers (forked)
//!  ─────────────────────────────────     ──────────────────────     ─────────────────
//!  serialize args, push a Task ──queue──▶ poll(2): wake socket,      read frame (blocking)
//!  write the wake socket (once)          every worker's socket      call trampoline(f, args)
//!  park on the task's Oneshot            and pidfd                  write reply frame
//!        ▲                               send a frame to each  ───▶
//!        └──── Oneshot::set + Unparker ◀─ idle worker; read replies ◀─
//! ```
//!
//! * Tasks are plain `fn(A) -> R` pointers. A forked worker has the parent's
//!   address space, so the pointer's value (sent as an integer) names the
//!   same code there. With it travels a pointer to a monomorphized
//!   *trampoline* for that `A`/`R` that deserializes the arguments (postcard),
//!   calls the function under `catch_unwind` and serializes the result. The
//!   frames go over a private socket pair per worker, which no one but this
//!   pool writes, so a worker only ever calls pointers its parent sent.
//! * One manager thread per pool owns every worker fd and does all the
//!   worker I/O with non-blocking sockets and `poll`: no caller ever blocks
//!   a hub, and the pool can be used from any number of coroutines and
//!   threads at once (tasks are served in submission order).
//! * Each worker runs its tasks one at a time, replying to each at once.
//!   When its pidfd turns readable (or its socket hangs up) the manager
//!   first reads whatever replies it still sent, then reaps it; the task it
//!   was running fails with [`PoolError::WorkerDied`], tasks queued behind
//!   it go to other workers, and a fresh worker is forked at once. Other
//!   tasks are not affected.
//! * Workers are forked by the manager thread, so in a worker only that
//!   thread existed (see the fork rules in [`Process`](super::Process)): a
//!   task should not rely on locks other threads of the parent might hold
//!   (std's stdout lock included, if other threads print at the same time).
//!   std's panic output lock is one of them: if another thread was printing
//!   a panic at the moment a worker was forked, a task that panics in that
//!   worker waits for the lock forever (its caller can still be killed or
//!   time out, and [`terminate`](ProcessPool::terminate) ends it).
//!   Workers are killed (SIGKILL) when the pool's process ends, so a stuck
//!   one never outlives it.
//! * Functions must exist in the workers: a function from a library loaded
//!   with `dlopen` after they were forked is not mapped there, and calling
//!   it crashes the worker (reported as [`PoolError::WorkerDied`]).
//! * Arguments and results use postcard, a compact non-self-describing
//!   format: serde features that need a self-describing one (untagged
//!   enums, `flatten`, `serde_json::Value`) fail with
//!   [`PoolError::Serialize`].
//! * Frames carry a `u32` length: arguments (or a chunk of `map` items)
//!   that serialize to 4 GiB or more fail with [`PoolError::Io`]
//!   (`InvalidInput`) before anything is sent, and a result that large
//!   comes back as [`PoolError::Serialize`].
//! * [`map`](ProcessPool::map) sends items in chunks (about four per worker,
//!   as Python does), each chunk one task; the rest of the map family
//!   (`map_chunked`, `imap`, `imap_unordered`, `map_async`) is in
//!   `process_map.rs`.
//! * [`ProcessPool::builder`] sets what `multiprocessing.Pool` takes as
//!   arguments: an `initializer` run once in every worker before its first
//!   task (the worker reports it ran, or the panic that stopped it, before
//!   it gets work), and `max_tasks_per_child`, after which a worker exits
//!   and is replaced (the manager never sends it more than that).
//!
//! ```
//! use moss::pool::ProcessPool;
//!
//! fn square(x: u64) -> u64 { x * x }
//! fn pid(_: ()) -> u32 { std::process::id() }
//!
//! let pool = ProcessPool::new(2).unwrap();
//! assert_eq!(pool.apply(square, 7).unwrap(), 49);
//! assert_ne!(pool.apply(pid, ()).unwrap(), std::process::id());
//! assert_eq!(pool.map(square, 1..=4).unwrap(), vec![1, 4, 9, 16]);
//! pool.close();
//! pool.join();
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::PoolError;
use super::callback;
use super::frame;
use super::pool_manager;
use crate::park::{self, Unparker};
use crate::sync::AsyncResult;
use crate::sys::fd;
use crate::thread::Oneshot;

/// Runs in a worker: `(function pointer, serialized arguments)` to a
/// complete reply frame (a status byte, then the serialized result or a
/// message).
pub(crate) type Trampoline = fn(usize, &[u8]) -> Vec<u8>;

pub(crate) const REPLY_OK: u8 = 0;
pub(crate) const REPLY_PANIC: u8 = 1;
pub(crate) const REPLY_SERDE: u8 = 2;
/// A worker's first frame when the pool has an initializer: it ran.
pub(crate) const REPLY_READY: u8 = 3;
/// ... or it panicked (then a message follows, and the worker exits).
pub(crate) const REPLY_INIT_FAILED: u8 = 4;

/// What a caller waits for: the serialized result, or why there is none.
pub(crate) type Reply = Oneshot<Result<Vec<u8>, PoolError>>;

/// A task on its way to a worker.
pub(crate) struct Task {
    /// The complete request frame: `[len][trampoline: u64][function: u64]
    /// [postcard arguments]`.
    pub(crate) frame: Vec<u8>,
    pub(crate) reply: Arc<Reply>,
}

/// A pool of `n` worker processes. A handle: cheap to clone, `Send + Sync`.
/// Dropping the last handle closes the pool (queued tasks still run, then
/// the workers exit and are reaped).
#[derive(Clone)]
pub struct ProcessPool {
    pub(super) shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Terminates a pool whose start its caller abandoned (dropped only when
/// the caller unwinds).
struct StopOnUnwind<'a>(&'a Shared);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

pub(crate) struct Shared {
    pub(crate) size: usize,
    pub(crate) config: Config,
    /// Only the process that created the pool has its manager thread.
    creator: u32,
    pub(crate) state: Mutex<State>,
    /// The manager's wake-up socket (write end) and whether a byte is pending.
    wake_w: std::os::fd::OwnedFd,
    pub(crate) wake_pending: AtomicBool,
}

pub(crate) struct State {
    pub(crate) queue: VecDeque<Task>,
    pub(crate) closed: bool,
    pub(crate) terminated: bool,
    /// Tasks submitted and not answered, plus callbacks not yet run.
    outstanding: usize,
    /// The manager thread has reaped every worker and exited.
    pub(crate) manager_done: bool,
    pub(crate) pids: Vec<u32>,
    joiners: Vec<Unparker>,
    /// Callbacks abandoned by their exited thread before their task's
    /// reply arrived: the manager sets their results (module `callback`).
    orphans: Vec<Arc<callback::Slot>>,
    /// Why the pool cannot run tasks any more (the initializer failed in a
    /// replacement worker): every later task fails with it.
    pub(crate) broken: Option<PoolError>,
}

/// What a [`ProcessPoolBuilder`] configures; read by the manager and, after
/// the fork, by each worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) initializer: Option<fn()>,
    pub(crate) max_tasks_per_child: Option<usize>,
    /// Items per task for `map`, `map_async`, `imap` and `imap_unordered`
    /// when the call does not say.
    pub(crate) chunksize: Option<usize>,
}

/// Configures a [`ProcessPool`] before it starts: `multiprocessing.Pool(n,
/// initializer, maxtasksperchild)`.
///
/// ```
/// use moss::pool::ProcessPool;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static READY: AtomicU32 = AtomicU32::new(0);
/// fn init() { READY.store(7, Ordering::SeqCst) } // runs in each worker
/// fn ready(_: ()) -> u32 { READY.load(Ordering::SeqCst) }
/// fn pid(_: ()) -> u32 { std::process::id() }
///
/// let pool = ProcessPool::builder(1)
///     .initializer(init)
///     .max_tasks_per_child(1)
///     .build()
///     .unwrap();
/// assert_eq!(pool.apply(ready, ()).unwrap(), 7);
/// assert_ne!(pool.apply(pid, ()).unwrap(), pool.apply(pid, ()).unwrap()); // a fresh worker each time
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ProcessPoolBuilder {
    size: usize,
    config: Config,
}

impl ProcessPoolBuilder {
    /// Runs `f` once in every worker, before its first task (Python's
    /// `initializer`; capture nothing: it is a plain `fn`, and statics it
    /// sets are the worker's own). If it panics in a worker of the first
    /// set, [`build`](Self::build) fails with its message; in a later
    /// (replacement) worker, every task queued then or submitted afterwards
    /// fails with [`PoolError::Initializer`]; the pool forks no more
    /// workers, rather than retry forever.
    pub fn initializer(mut self, f: fn()) -> ProcessPoolBuilder {
        self.config.initializer = Some(f);
        self
    }

    /// Replaces a worker after it has run `k` tasks (Python's
    /// `maxtasksperchild`; a chunk of `map` or `imap` items is one task):
    /// for leaky tasks. `build` fails with `InvalidInput` for 0.
    pub fn max_tasks_per_child(mut self, k: usize) -> ProcessPoolBuilder {
        self.config.max_tasks_per_child = Some(k);
        self
    }

    /// Sends `n` items per task (Python's `chunksize` argument, given once
    /// for the pool; 0 is taken as 1) in [`map`](ProcessPool::map),
    /// [`map_async`](ProcessPool::map_async), [`imap`](ProcessPool::imap)
    /// and [`imap_unordered`](ProcessPool::imap_unordered).
    /// [`map_chunked`](ProcessPool::map_chunked) and
    /// [`ProcessImap::chunksize`](super::ProcessImap::chunksize) still set
    /// it per call. Without it, `map` and `map_async` use about four chunks
    /// per worker and `imap` one item per task, as Python does.
    pub fn chunksize(mut self, n: usize) -> ProcessPoolBuilder {
        self.config.chunksize = Some(n.max(1));
        self
    }

    /// Forks the workers from a new manager thread and waits until they
    /// run (and their initializer has returned). A coroutine waiting here
    /// yields; if it is killed or times out, the workers are killed.
    pub fn build(self) -> io::Result<ProcessPool> {
        if self.config.max_tasks_per_child == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ProcessPool max_tasks_per_child must be at least 1",
            ));
        }
        ProcessPool::start(super::size_or_cpus(self.size), self.config)
    }
}

impl ProcessPool {
    /// Forks `n` workers from a new manager thread and waits until they
    /// run; `n = 0` means one per CPU (Python's `Pool()`:
    /// [`std::thread::available_parallelism`], or 1 if unknown), as for
    /// [`ThreadPool::new`](super::ThreadPool::new). Fails if the
    /// pipes, the thread or a fork cannot be created.
    /// [`ProcessPool::builder`] sets more.
    pub fn new(n: usize) -> io::Result<ProcessPool> {
        ProcessPool::builder(n).build()
    }

    /// A builder for a pool of `n` workers (0: one per CPU, as in
    /// [`new`](Self::new)), with an `initializer` and `max_tasks_per_child`
    /// (see [`ProcessPoolBuilder`]).
    pub fn builder(n: usize) -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            size: n,
            config: Config {
                initializer: None,
                max_tasks_per_child: None,
                chunksize: None,
            },
        }
    }

    fn start(n: usize, config: Config) -> io::Result<ProcessPool> {
        // A socket pair rather than a pipe: a late wake-up written after the
        // manager has gone is an EPIPE error (MSG_NOSIGNAL), never a SIGPIPE.
        let (wake_r, wake_w) = fd::socketpair()?;
        fd::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&wake_r), true)?;
        fd::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&wake_w), true)?;
        let shared = Arc::new(Shared {
            size: n,
            config,
            creator: std::process::id(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                terminated: false,
                outstanding: 0,
                manager_done: false,
                pids: Vec::new(),
                joiners: Vec::new(),
                orphans: Vec::new(),
                broken: None,
            }),
            wake_w,
            wake_pending: AtomicBool::new(false),
        });
        let started = Arc::new(Oneshot::new());
        pool_manager::start(shared.clone(), wake_r, started.clone())?;
        // A caller killed or timed out while the workers start (a slow
        // initializer) stops them: no handle would ever close the pool.
        let abandon = StopOnUnwind(&shared);
        started.wait(None, "process pool start");
        std::mem::forget(abandon);
        started.take().expect("set once by the manager")?;
        Ok(ProcessPool {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// The number of workers.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// The pids of the current workers (replaced workers have new pids).
    pub fn pids(&self) -> Vec<u32> {
        self.shared.lock().pids.clone()
    }

    /// Runs `f(args)` in a worker and waits for the result: only the caller
    /// waits (a coroutine yields to its hub). A panic in `f` is returned as
    /// [`PoolError::Panicked`], a worker that dies as
    /// [`PoolError::WorkerDied`].
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let reply = self.submit(call::<A, R>, f as usize, &args)?;
        wait_reply(&reply)
    }

    /// Runs `f(args)` in a worker without waiting. When the result is there,
    /// `callback(&value)` runs in a coroutine on the caller's hub (not for an
    /// error), then the returned [`AsyncResult`] becomes ready with the
    /// result or the error (a panicking callback makes it
    /// [`PoolError::Panicked`]). After [`close`](Self::close) it is ready at
    /// once with [`PoolError::Closed`].
    ///
    /// The callback runs when the caller's hub runs, that is whenever the
    /// caller blocks on a moss call (`get`, `join`, a sleep, I/O).
    ///
    /// If the caller's thread exits before the callback ran, the callback
    /// is dropped without running (it need not be `Send`, so it cannot run
    /// on another thread); the `AsyncResult` still becomes ready with the
    /// task's result, and [`join`](Self::join) does not wait for it. A
    /// callback interrupted by its thread's exit leaves the task's result
    /// in the `AsyncResult` too.
    pub fn apply_async<A, R, C>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: C,
    ) -> AsyncResult<Result<R, PoolError>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(&R) + 'static,
    {
        self.apply_async_with(f, args, callback, |_: &PoolError| {})
    }

    /// [`apply_async`](Self::apply_async) with an `error_callback` too
    /// (Python's `error_callback=`): it runs instead of `callback`, in a
    /// coroutine on the caller's hub, with the error when the task fails
    /// (also when the pool refused it: then the `AsyncResult` is ready at
    /// once and the error callback runs soon after). A panicking error
    /// callback leaves the task's error as the result.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use moss::pool::{PoolError, ProcessPool};
    ///
    /// fn check(x: i32) -> i32 { assert!(x >= 0, "negative: {x}"); x }
    ///
    /// let pool = ProcessPool::new(1).unwrap();
    /// let seen = Rc::new(RefCell::new(String::new()));
    /// let s = seen.clone();
    /// let r = pool.apply_async_with(check, -1, |_| {}, move |e| *s.borrow_mut() = e.to_string());
    /// assert!(matches!(r.get(), Err(PoolError::Panicked { .. })));
    /// assert!(seen.borrow().contains("negative: -1"));
    /// ```
    pub fn apply_async_with<A, R, C, E>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: C,
        error_callback: E,
    ) -> AsyncResult<Result<R, PoolError>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(&R) + 'static,
        E: FnOnce(&PoolError) + 'static,
    {
        // One more outstanding item for the callback.
        let reply = self.submit_counting(call::<A, R>, f as usize, &args, 2);
        self.spawn_async(
            reply.map(|r| vec![r]),
            decode_first::<R>,
            callback,
            error_callback,
        )
    }

    /// The callback side of every `*_async` call: once every reply is there,
    /// runs `callback` (or `error_callback`) in a coroutine on the caller's
    /// hub, then sets the result (see module `callback` for a caller thread
    /// that exits first). The first reply counted one more outstanding item
    /// for the callback.
    pub(crate) fn spawn_async<V, C, E>(
        &self,
        replies: Result<Vec<Arc<Reply>>, PoolError>,
        decode: fn(&[Arc<Reply>]) -> Result<V, PoolError>,
        callback: C,
        error_callback: E,
    ) -> AsyncResult<Result<V, PoolError>>
    where
        V: Send + 'static,
        C: FnOnce(&V) + 'static,
        E: FnOnce(&PoolError) + 'static,
    {
        let result = AsyncResult::new();
        let replies: Arc<[Arc<Reply>]> = match replies {
            Ok(r) => r.into(),
            Err(e) => {
                result.set(Err(e.clone()));
                crate::spawn(move || error_callback(&e));
                return result;
            }
        };
        let slot = {
            let (ready, done, r) = (replies.clone(), replies.clone(), result.clone());
            callback::Slot::register(
                self.shared.clone(),
                move || ready.iter().all(|x| x.is_set()),
                Box::new(move || r.set(decode(&done))),
            )
        };
        let r = result.clone();
        let guard = callback::Guard {
            slot: slot.clone(),
            interrupted: Some(move || {
                r.set(Err(PoolError::Panicked {
                    message: "the callback was interrupted: its thread exited".into(),
                }))
            }),
        };
        let r = result.clone();
        crate::spawn(move || {
            // Declared first: dropped (abandoning the slot) if this
            // coroutine is dropped unstarted or unwound before the end.
            let mut guard = guard;
            for reply in replies.iter() {
                reply.wait(None, "process pool task");
            }
            if !slot.begin() {
                guard.interrupted = None; // abandoned: the slot finishes itself
                return;
            }
            let v = decode(&replies);
            let outcome = match &v {
                Ok(v) => catch_unwind(AssertUnwindSafe(|| callback(v))),
                Err(e) => catch_unwind(AssertUnwindSafe(|| error_callback(e))),
            };
            guard.interrupted = None;
            match outcome {
                Ok(()) => r.set(v),
                // Killed inside the callback (its thread exits): the task's
                // value is still the result; the unwind goes on.
                Err(p) if p.is::<crate::Cancelled>() => {
                    r.set(v);
                    slot.done();
                    resume_unwind(p);
                }
                Err(p) => r.set(v.and_then(|_| Err(PoolError::from_panic(&*p)))),
            }
            slot.done();
        });
        result
    }

    /// Applies `f` to every item in the workers and returns the results in
    /// input order, or the first error. Items travel in chunks (about four
    /// per worker; [`map_chunked`](Self::map_chunked) sets the size).
    ///
    /// # starmap
    ///
    /// Python's `starmap(f, [(a, b), ...])` calls `f(a, b)`; in moss, `f`
    /// takes the tuple and `map` is `starmap`:
    ///
    /// ```
    /// use moss::pool::ProcessPool;
    /// fn power((base, exp): (u64, u32)) -> u64 { base.pow(exp) }
    /// let pool = ProcessPool::new(2).unwrap();
    /// assert_eq!(pool.map(power, [(2, 10), (3, 3)]).unwrap(), [1024, 27]);
    /// ```
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = self.default_chunksize(items.len());
        self.map_chunked(f, items, chunksize)
    }

    /// Refuses new tasks; queued and running tasks still complete, then the
    /// workers exit.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Kills the workers (SIGKILL) at once: queued and running tasks fail
    /// with [`PoolError::Terminated`]. Returns once the workers are reaped.
    pub fn terminate(&self) {
        self.shared.stop();
        self.join();
    }

    /// Waits until every task submitted so far (and every `apply_async`
    /// callback) has finished, and, once the pool is closed or terminated,
    /// until the workers have exited and been reaped. A coroutine yields.
    pub fn join(&self) {
        loop {
            {
                let mut s = self.shared.lock();
                if s.outstanding == 0 && (!s.closed || s.manager_done) {
                    return;
                }
                s.joiners.push(park::unparker());
            }
            park::park_cancellable(None, "process pool join");
        }
    }

    fn submit<T: Serialize + ?Sized>(
        &self,
        call: Trampoline,
        f: usize,
        args: &T,
    ) -> Result<Arc<Reply>, PoolError> {
        self.submit_counting(call, f, args, 1)
    }

    /// Queues a task, counting `outstanding` items for `join` (the task, and
    /// its callback if any).
    pub(crate) fn submit_counting<T: Serialize + ?Sized>(
        &self,
        call: Trampoline,
        f: usize,
        args: &T,
        outstanding: usize,
    ) -> Result<Arc<Reply>, PoolError> {
        if std::process::id() != self.shared.creator {
            return Err(PoolError::Io {
                kind: io::ErrorKind::Unsupported,
                message: "a ProcessPool can only be used in the process that created it".into(),
            });
        }
        let mut head = frame::start();
        head.extend_from_slice(&(call as usize as u64).to_le_bytes());
        head.extend_from_slice(&(f as u64).to_le_bytes());
        let mut frame =
            postcard::to_extend(args, head).map_err(|e| PoolError::Serialize(e.to_string()))?;
        frame::finish(
            &mut frame,
            "a task's serialized arguments (with a 16-byte header)",
        )
        .map_err(|e| PoolError::io(&e))?;
        let reply = Arc::new(Oneshot::new());
        {
            let mut s = self.shared.lock();
            if s.closed {
                return Err(PoolError::Closed);
            }
            if let Some(e) = &s.broken {
                return Err(e.clone());
            }
            s.queue.push_back(Task {
                frame,
                reply: reply.clone(),
            });
            s.outstanding += outstanding;
        }
        self.shared.wake();
        Ok(reply)
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.wake_w)
    }

    /// Makes the manager's next (or current) `poll` return. A no-op in a
    /// forked child, which closed the pipe (its number may be reused there).
    pub(crate) fn wake(&self) {
        if std::process::id() != self.creator {
            return;
        }
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            // A full pipe already holds a wake-up.
            let _ = fd::write(std::os::fd::AsRawFd::as_raw_fd(&self.wake_w), &[1], true);
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    /// Tells the manager to kill the workers and fail every task.
    fn stop(&self) {
        {
            // Both at once: no task can slip in after the manager drains.
            let mut s = self.lock();
            s.terminated = true;
            s.closed = true;
        }
        self.wake();
    }

    /// `n` tasks (or callbacks) are done: wakes `join`ers if that was all.
    pub(crate) fn finished(&self, n: usize) {
        let joiners = {
            let mut s = self.lock();
            s.outstanding -= n;
            if s.outstanding == 0 {
                std::mem::take(&mut s.joiners)
            } else {
                Vec::new()
            }
        };
        joiners.into_iter().for_each(|u| u.unpark());
    }

    /// Hands an abandoned callback to the manager, which sets its result
    /// once the reply is there ([`run_orphans`](Self::run_orphans)).
    pub(crate) fn add_orphan(&self, slot: Arc<callback::Slot>) {
        self.lock().orphans.push(slot.clone());
        // The reply may have arrived after the abandoning thread looked and
        // before the manager's last scan: look again.
        slot.try_finish();
    }

    /// Sets the results of abandoned callbacks whose replies have arrived
    /// (the manager calls it after completing replies).
    pub(crate) fn run_orphans(&self) {
        let orphans = {
            let mut s = self.lock();
            if s.orphans.is_empty() {
                return;
            }
            std::mem::take(&mut s.orphans)
        };
        let left: Vec<_> = orphans.into_iter().filter(|o| !o.try_finish()).collect();
        if !left.is_empty() {
            self.lock().orphans.extend(left);
        }
    }

    /// The manager has exited (every reply is set by then).
    pub(crate) fn manager_exited(&self) {
        self.run_orphans();
        let joiners = {
            let mut s = self.lock();
            s.manager_done = true;
            s.pids.clear();
            std::mem::take(&mut s.joiners)
        };
        joiners.into_iter().for_each(|u| u.unpark());
    }
}

fn wait_reply<R: DeserializeOwned>(reply: &Reply) -> Result<R, PoolError> {
    reply.wait(None, "process pool task");
    decode_reply(reply)
}

/// The result in a reply that has arrived (taken: once per reply).
pub(crate) fn decode_reply<R: DeserializeOwned>(reply: &Reply) -> Result<R, PoolError> {
    let bytes = reply.take().expect("a reply is taken once")?;
    match bytes.split_first() {
        Some((&REPLY_OK, rest)) => {
            postcard::from_bytes(rest).map_err(|e| PoolError::Serialize(e.to_string()))
        }
        Some((&REPLY_PANIC, rest)) => Err(PoolError::Panicked {
            message: String::from_utf8_lossy(rest).into_owned(),
        }),
        Some((&REPLY_SERDE, rest)) => Err(PoolError::Serialize(
            String::from_utf8_lossy(rest).into_owned(),
        )),
        _ => Err(PoolError::Serialize("malformed reply from a worker".into())),
    }
}

/// The trampoline for one call of `fn(A) -> R`; runs in a worker.
fn call<A: DeserializeOwned, R: Serialize>(f: usize, args: &[u8]) -> Vec<u8> {
    // SAFETY: `f` is a `fn(A) -> R` pointer `submit` took from its typed
    // caller in the process this worker was forked from (same code, same
    // addresses), paired with this monomorphization of `call`: same type.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    run(|| {
        let a: A = postcard::from_bytes(args)?;
        Ok(f(a))
    })
}

/// The result of the one reply of `apply_async` (which has arrived).
fn decode_first<R: DeserializeOwned>(replies: &[Arc<Reply>]) -> Result<R, PoolError> {
    decode_reply(&replies[0])
}

/// The trampoline for a chunk of [`ProcessPool::map`]: `Vec<A>` to `Vec<R>`.
pub(crate) fn call_batch<A: DeserializeOwned, R: Serialize>(f: usize, args: &[u8]) -> Vec<u8> {
    // SAFETY: as in `call`: `map` pairs this monomorphization with a
    // `fn(A) -> R` of the same `A` and `R`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    run(|| {
        let items: Vec<A> = postcard::from_bytes(args)?;
        Ok(items.into_iter().map(f).collect::<Vec<R>>())
    })
}

/// Runs a task's body and frames its reply. A result too large for a frame
/// (4 GiB or more serialized) becomes a [`PoolError::Serialize`] reply.
fn run<R: Serialize>(body: impl FnOnce() -> Result<R, postcard::Error>) -> Vec<u8> {
    let mut ok = frame::start();
    ok.push(REPLY_OK);
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(r)) => match postcard::to_extend(&r, ok) {
            Ok(mut v) => match frame::finish(&mut v, "a task's serialized result") {
                Ok(()) => v,
                Err(e) => {
                    drop(v);
                    out_with(REPLY_SERDE, e.to_string().as_bytes())
                }
            },
            Err(e) => out_with(REPLY_SERDE, e.to_string().as_bytes()),
        },
        Ok(Err(e)) => out_with(REPLY_SERDE, e.to_string().as_bytes()),
        Err(p) => {
            let PoolError::Panicked { message } = PoolError::from_panic(&*p) else {
                unreachable!("from_panic makes Panicked")
            };
            out_with(REPLY_PANIC, message.as_bytes())
        }
    }
}

/// A reply frame: `status`, then `bytes` (a message, cut to fit a frame).
pub(crate) fn out_with(status: u8, bytes: &[u8]) -> Vec<u8> {
    let bytes = &bytes[..bytes.len().min(frame::MAX_BODY - 1)];
    let mut v = frame::start();
    v.reserve(1 + bytes.len());
    v.push(status);
    v.extend_from_slice(bytes);
    frame::finish(&mut v, "a reply").expect("cut to fit above");
    v
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("ProcessPool")
            .field("size", &self.shared.size)
            .field("workers", &s.pids)
            .field("queued", &s.queue.len())
            .field("closed", &s.closed)
            .finish()
    }
}
