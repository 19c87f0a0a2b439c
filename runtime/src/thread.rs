//! OS threads whose `join` yields: Python's `threading.Thread(target, name,
//! args)`.
//!
//! [`spawn`] and [`Builder`] wrap `std::thread`. The new thread stores its
//! result (or panic) in a one-shot slot and wakes whoever waits through a
//! [`Unparker`]: a coroutine calling
//! [`JoinHandle::join`] parks and its hub keeps running other coroutines; a
//! root or a plain thread blocks in its hub's `epoll_wait` until the wake-up.
//! Once the result is there, the OS thread is joined too; it has finished
//! its closure by then, so that last step only waits for its thread-local
//! destructors.
//!
//! The thread itself is an ordinary thread: if it uses moss it gets its own
//! hub (call [`run`](crate::run) in it to wait for its coroutines).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! let counter = Arc::new(Mutex::new(0));
//! let hs: Vec<_> = (0..4)
//!     .map(|_| {
//!         let c = counter.clone();
//!         moss::thread::spawn(move || *c.lock().unwrap() += 1)
//!     })
//!     .collect();
//! for h in hs {
//!     h.join().unwrap();
//! }
//! assert_eq!(*counter.lock().unwrap(), 4);
//! ```

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::park::{self, Unparker, Wakeup};

/// A value produced once on some thread and awaited by any number of
/// contexts (coroutines, roots, plain threads) of any thread.
pub(crate) struct Oneshot<T> {
    state: Mutex<OneshotState<T>>,
}

struct OneshotState<T> {
    value: Option<T>,
    set: bool,
    waiters: Vec<Unparker>,
}

impl<T> Oneshot<T> {
    pub(crate) fn new() -> Oneshot<T> {
        Oneshot {
            state: Mutex::new(OneshotState {
                value: None,
                set: false,
                waiters: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OneshotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the value and wakes every waiter. A second `set` is ignored.
    pub(crate) fn set(&self, v: T) {
        let waiters = {
            let mut s = self.lock();
            if s.set {
                return;
            }
            s.value = Some(v);
            s.set = true;
            std::mem::take(&mut s.waiters)
        };
        for w in waiters {
            w.unpark();
        }
    }

    /// Whether the value has been set (even if already taken).
    pub(crate) fn is_set(&self) -> bool {
        self.lock().set
    }

    /// Waits until the value is set or `deadline` passes; `true` if set.
    /// A pending `kill`/`timeout` of the calling coroutine unwinds it.
    pub(crate) fn wait(&self, deadline: Option<Instant>, what: &'static str) -> bool {
        loop {
            let u = {
                let mut s = self.lock();
                if s.set {
                    return true;
                }
                let u = park::unparker();
                s.waiters.push(u.clone());
                u
            };
            if park::park_cancellable(deadline, what) == Wakeup::TimedOut {
                let mut s = self.lock();
                s.waiters.retain(|w| !w.same_wait(&u));
                return s.set;
            }
        }
    }

    /// Registers `u` to be woken when the value is set, for a caller that
    /// waits on several at once; true (and `u` is not kept) if it is set
    /// already. Earlier registrations of `u`'s context are dropped (their
    /// waits are over), so watching round after round keeps one entry.
    pub(crate) fn watch(&self, u: &Unparker) -> bool {
        let mut s = self.lock();
        if s.set {
            return true;
        }
        s.waiters.retain(|w| !w.same_context(u));
        s.waiters.push(u.clone());
        false
    }

    /// Takes the value if it is there.
    pub(crate) fn take(&self) -> Option<T> {
        self.lock().value.take()
    }
}

/// Spawns an OS thread running `f`; its handle's `join` yields in a
/// coroutine. Panics if the OS cannot create the thread, like
/// `std::thread::spawn` (use [`Builder::spawn`] to get the error).
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Builder::new().spawn(f) {
        Ok(h) => h,
        Err(e) => panic!("moss::thread::spawn: failed to spawn thread: {e}"),
    }
}

/// A user type that is a thread body: Python's subclass of `threading.Thread`
/// that overrides `run`. Implement [`run`](Runnable::run) (and optionally
/// [`name`](Runnable::name)), then call [`start`](Runnable::start).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use moss::thread::Runnable;
///
/// struct Summer { upto: u64, out: Arc<AtomicU64> }
///
/// impl Runnable for Summer {
///     fn run(self) {
///         self.out.store((1..=self.upto).sum(), Ordering::SeqCst);
///     }
///     fn name(&self) -> Option<String> {
///         Some(format!("summer-{}", self.upto))
///     }
/// }
///
/// let out = Arc::new(AtomicU64::new(0));
/// let t = Summer { upto: 10, out: out.clone() }.start().unwrap();
/// assert_eq!(t.thread().name(), Some("summer-10"));
/// t.join().unwrap();
/// assert_eq!(out.load(Ordering::SeqCst), 55);
/// ```
pub trait Runnable: Sized + Send + 'static {
    /// The body; runs on the new thread.
    fn run(self);

    /// The thread's name (`None`: unnamed).
    fn name(&self) -> Option<String> {
        None
    }

    /// Spawns a thread that calls [`run`](Runnable::run).
    fn start(self) -> io::Result<JoinHandle<()>> {
        let mut b = Builder::new();
        if let Some(n) = self.name() {
            b = b.name(n);
        }
        b.spawn(move || self.run())
    }
}

/// Configures a thread before spawning it, like `std::thread::Builder`.
///
/// ```
/// let h = moss::thread::Builder::new()
///     .name("cruncher")
///     .stack_size(256 * 1024)
///     .spawn(|| std::thread::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(h.join().unwrap().as_deref(), Some("cruncher"));
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with std's defaults (no name, std's default stack size).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the thread (shown in panic messages and debuggers).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// The thread's stack size in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the thread. Fails with `InvalidInput` for a name containing a
    /// NUL byte, and as `std::thread::Builder::spawn` does when the OS has no
    /// resources left.
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut b = std::thread::Builder::new();
        if self.name.as_deref().is_some_and(|n| n.contains('\0')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "thread name may not contain NUL bytes",
            ));
        }
        if let Some(n) = self.name {
            b = b.name(n);
        }
        if let Some(s) = self.stack_size {
            b = b.stack_size(s);
        }
        let slot = Arc::new(Oneshot::new());
        let theirs = slot.clone();
        let inner = b.spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f));
            theirs.set(r);
        })?;
        Ok(JoinHandle { inner, slot })
    }
}

/// An owned permission to join a thread spawned by [`spawn`] or
/// [`Builder::spawn`]. Dropping it detaches the thread.
pub struct JoinHandle<T> {
    inner: std::thread::JoinHandle<()>,
    slot: Arc<Oneshot<std::thread::Result<T>>>,
}

impl<T> JoinHandle<T> {
    /// Waits for the thread to finish and returns its value, or the payload
    /// of its panic (as `std::thread::JoinHandle::join`). In a coroutine this
    /// yields to the hub; a `kill` of the caller unwinds it (the thread keeps
    /// running, detached).
    pub fn join(self) -> std::thread::Result<T> {
        match self.join_deadline(None) {
            Ok(r) => r,
            Err(_) => unreachable!("a join without deadline cannot time out"),
        }
    }

    /// Like [`join`](Self::join) but gives up after `d`, returning the handle
    /// so the caller can try again. `Duration::ZERO` polls.
    pub fn join_timeout(self, d: Duration) -> Result<std::thread::Result<T>, JoinHandle<T>> {
        self.join_deadline(Instant::now().checked_add(d))
    }

    fn join_deadline(
        self,
        deadline: Option<Instant>,
    ) -> Result<std::thread::Result<T>, JoinHandle<T>> {
        if !self.slot.wait(deadline, "thread join") {
            return Err(self);
        }
        let r = self
            .slot
            .take()
            .expect("a thread result is taken only by its one handle");
        // The closure has returned; this waits only for the thread's exit.
        let _ = self.inner.join();
        Ok(r)
    }

    /// Whether the thread has finished its closure.
    pub fn is_finished(&self) -> bool {
        self.slot.is_set()
    }

    /// The underlying `std::thread::Thread` (name, id, unpark).
    pub fn thread(&self) -> &std::thread::Thread {
        self.inner.thread()
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("thread", self.inner.thread())
            .field("finished", &self.is_finished())
            .finish()
    }
}
