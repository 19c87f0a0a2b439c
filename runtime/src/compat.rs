//! Running futures that need a particular async runtime.
//!
//! [`block_on`] polls a future on the calling coroutine's
//! stack, which is all a runtime-agnostic future needs. Futures of the tokio
//! ecosystem (tokio's sockets and timers, and the clients built on them:
//! hyper, reqwest, tokio-postgres, redis' async API, ...) also need tokio's
//! reactor and timer, which only exist on tokio's own threads. [`tokio()`]
//! runs such a future on a tokio runtime that moss owns and parks the calling
//! coroutine until the output is back.
//!
//! # moss's tokio runtime
//!
//! * Started on the first call (multi-threaded, [`TOKIO_WORKER_THREADS`]
//!   worker threads named `moss-tokio`, I/O and time drivers enabled), then
//!   shared by every coroutine and thread of the process.
//! * Shut down when the process exits (an `atexit` handler): its tasks are
//!   dropped and its threads joined, for at most [`SHUTDOWN_GRACE`]. A call
//!   made after that panics.
//! * A forked child (a `moss::pool::Process`, or any `fork`) starts a fresh
//!   one on its first call: the parent's worker threads do not exist there.
//!
//! The output comes back through the future's `JoinHandle`, whose waker ends
//! the caller's park through its hub's cross-thread wake-up. A `kill` or
//! `timeout` of the caller aborts the tokio task and, while the caller
//! unwinds, waits until tokio has dropped the future (a second cancellation
//! during that wait stays pending until it ends).
//!
//! # The other direction
//!
//! Async code (a tokio task) waiting for something coroutines produce needs
//! nothing from moss: a runtime-agnostic channel works from both sides. The
//! coroutine sends without blocking (`tokio::sync::oneshot::Sender::send`,
//! `futures::channel::mpsc::UnboundedSender::unbounded_send`), and the task
//! `.await`s the receiver; or the coroutine waits in [`block_on`] on a bounded
//! channel's `send`. `moss::sync::AsyncResult` is itself a future, for
//! results that several waiters (tasks and coroutines) share.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

use ::tokio::runtime::{Builder, Handle, Runtime};
use ::tokio::task::JoinHandle;

use crate::block_on;

/// Worker threads of moss's tokio runtime.
pub const TOKIO_WORKER_THREADS: usize = 2;

/// How long the exit handler waits for moss's tokio runtime to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Runs `f` to completion on moss's tokio runtime and returns its output; the
/// calling coroutine parks meanwhile and its hub keeps running the others
/// (on a thread's root the hub runs; a plain thread blocks).
///
/// Use it for futures that need tokio's reactor or timer; runtime-agnostic
/// futures are cheaper with [`block_on`], which polls them
/// on the caller's own stack.
///
/// * A `kill` or `timeout` of the caller aborts the tokio task; the caller
///   unwinds once tokio has dropped the future.
/// * A panic inside `f` is resumed in the caller.
///
/// ```
/// use std::time::{Duration, Instant};
/// let t = Instant::now();
/// let hs: Vec<_> = (0..10)
///     .map(|i| {
///         moss::spawn(move || {
///             moss::compat::tokio(async move {
///                 tokio::time::sleep(Duration::from_millis(50)).await;
///                 i
///             })
///         })
///     })
///     .collect();
/// let sum: u32 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
/// assert_eq!(sum, 45);
/// assert!(t.elapsed() < Duration::from_millis(450)); // the ten sleeps overlapped
/// ```
///
/// # Panics
/// If `f` panics; if called from a thread of moss's own tokio runtime (it
/// would block a worker the future may need: `.await` instead); if the
/// runtime cannot be started, or was shut down because the process exits.
pub fn tokio<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    if ON_RUNTIME_THREAD.with(Cell::get) {
        panic!(
            "moss::compat::tokio: called from a thread of moss's own tokio runtime, which it \
             would block; inside async code, `.await` the future instead"
        );
    }
    let mut task = Task(Some(handle().spawn(f)));
    let out = block_on(task.0.as_mut().expect("spawned"));
    task.0 = None; // finished: nothing to abort
    match out {
        Ok(v) => v,
        Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
        Err(_) => panic!(
            "moss::compat::tokio: the future was dropped before it finished: moss's tokio \
             runtime shut down (the process is exiting)"
        ),
    }
}

/// A spawned task that is aborted if the caller unwinds while waiting.
struct Task<T>(Option<JoinHandle<T>>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            // Resolves once tokio has dropped the future (or it finished
            // just before the abort): "cancel" means it is gone on return.
            // This runs in the unwind of the first cancellation; a second
            // one (a kill while it waits) stays pending until it ends.
            let _ = block_on(h);
        }
    }
}

thread_local! {
    /// Set on the threads of moss's tokio runtime.
    static ON_RUNTIME_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The process's runtime. Leaked: a forked child abandons its parent's
/// (whose threads it does not have) without touching it.
struct Owned {
    handle: Handle,
    /// Taken by the exit handler.
    runtime: Mutex<Option<Runtime>>,
}

/// This process's runtime, or null before the first call (and in a freshly
/// forked child, and after the exit handler ran).
static CURRENT: AtomicPtr<Owned> = AtomicPtr::new(ptr::null_mut());
/// A thread is building the runtime (a plain flag rather than a lock, so a
/// child forked meanwhile can reset it).
static STARTING: AtomicBool = AtomicBool::new(false);
/// The exit handler ran: no new runtime.
static EXITED: AtomicBool = AtomicBool::new(false);
/// The exit and fork handlers are registered (inherited by forked children).
static HOOKED: AtomicBool = AtomicBool::new(false);

/// A handle to this process's runtime, starting it if needed.
fn handle() -> Handle {
    loop {
        let p = CURRENT.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a published `Owned` is leaked, never freed.
            return unsafe { &*p }.handle.clone();
        }
        if EXITED.load(Ordering::Acquire) {
            panic!(
                "moss::compat::tokio: called after moss's tokio runtime shut down (the process \
                 is exiting)"
            );
        }
        if STARTING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            let started = catch_unwind(start);
            STARTING.store(false, Ordering::Release);
            if let Err(p) = started {
                resume_unwind(p);
            }
        } else {
            // Another thread is starting it (a few milliseconds, once).
            crate::sleep(Duration::from_millis(1));
        }
    }
}

/// Builds the runtime and publishes it (the caller holds `STARTING`).
fn start() {
    if !CURRENT.load(Ordering::Acquire).is_null() {
        return;
    }
    if !HOOKED.swap(true, Ordering::AcqRel) {
        // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds (it
        // catches panics), as a handler run by `exit` must.
        unsafe { libc::atexit(at_exit) };
        // SAFETY: `in_forked_child` never unwinds and only stores to atomics,
        // which is async-signal-safe as a forked child of a threaded process requires.
        unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
    }
    let rt = match Builder::new_multi_thread()
        .worker_threads(TOKIO_WORKER_THREADS)
        .thread_name("moss-tokio")
        .on_thread_start(|| ON_RUNTIME_THREAD.with(|t| t.set(true)))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("moss::compat::tokio: cannot start the tokio runtime: {e}"),
    };
    let owned = Box::new(Owned {
        handle: rt.handle().clone(),
        runtime: Mutex::new(Some(rt)),
    });
    CURRENT.store(Box::into_raw(owned), Ordering::Release);
}

extern "C" fn in_forked_child() {
    CURRENT.store(ptr::null_mut(), Ordering::Relaxed);
    STARTING.store(false, Ordering::Relaxed);
}

extern "C" fn at_exit() {
    EXITED.store(true, Ordering::Release);
    let p = CURRENT.swap(ptr::null_mut(), Ordering::AcqRel);
    if p.is_null() {
        return;
    }
    // SAFETY: a published `Owned` is leaked, never freed.
    let owned = unsafe { &*p };
    // `try_lock`: never wait on a lock at exit (nobody else takes it).
    let rt = match owned.runtime.try_lock() {
        Ok(mut g) => g.take(),
        Err(_) => None,
    };
    if let Some(rt) = rt {
        let _ = catch_unwind(AssertUnwindSafe(move || {
            if Handle::try_current().is_ok() {
                // `exit` called from async code: it cannot wait here.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(SHUTDOWN_GRACE);
            }
        }));
    }
}
