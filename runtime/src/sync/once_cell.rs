//! `OnceCell<T>`: a value initialized once, by whoever asks first, while
//! the others wait cooperatively (std's `OnceLock`, whose waiters would
//! block their thread).
//!
//! ```text
//!   UNINIT ──first get_or_init──▶ RUNNING ──initializer returns──▶ DONE
//!     ▲                              │
//!     └──initializer fails or dies ──┘  (unless a waiting get_or_init takes over)
//! ```
//!
//! `get` of a `DONE` cell is one `Acquire` load. While one context runs its
//! initializer (which may block: other coroutines of its hub keep running),
//! other `get_or_init` callers queue in FIFO order and `wait` callers in a
//! second list. When the initializer returns, every waiter wakes and finds
//! the value. When it fails (`get_or_try_init` returned an error), panics or
//! is cancelled (killed, or hit by its `timeout`), its drop guard *hands the
//! right to initialize* to the oldest queued `get_or_init`, which then runs
//! its own initializer; with none queued the cell goes back to `UNINIT`. A
//! queued caller that was handed that right and is cancelled before it runs
//! passes it on the same way, so the cell never stays `RUNNING` with nobody
//! running.
//!
//! Calling `get_or_init` or `wait` on the same cell from inside its own
//! initializer would wait for itself: that panics with a clear message
//! instead (`wait_timeout` there simply times out).

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::error::Timeout;
use super::lock::Lock;
use super::rlock::context_id;
use super::waitlist::{
    Outcome, WaitList, Waiter, deadline_in, lock, park_waiter, unpark_all, wait_notified,
};
use crate::park::{self, Wakeup};

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

struct Inner {
    /// `get_or_init` callers waiting while another runs its initializer.
    initers: WaitList<()>,
    /// `wait` callers: woken only when the value is there.
    waiters: WaitList<()>,
    /// The context running the initializer (0: none yet).
    initializer: u64,
}

/// A cell written once, shared by coroutines and threads: the first
/// [`get_or_init`](Self::get_or_init) runs its initializer, concurrent
/// callers wait for it cooperatively, and everyone gets the same `&T`.
///
/// `Send + Sync` for `T: Send + Sync`. If the initializer panics or its
/// coroutine is killed, the next waiting caller initializes instead.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moss::sync::OnceCell;
/// let config = Arc::new(OnceCell::new());
/// let hs: Vec<_> = (0..3).map(|i| {
///     let config = config.clone();
///     moss::spawn(move || {
///         *config.get_or_init(|| {
///             moss::sleep(Duration::from_millis(10)); // others wait, the hub runs
///             format!("loaded by {i}")
///         }) == "loaded by 0"
///     })
/// }).collect();
/// assert!(moss::join_all(hs).into_iter().all(|r| r.unwrap()));
/// assert_eq!(config.get().map(String::as_str), Some("loaded by 0"));
/// ```
pub struct OnceCell<T> {
    state: AtomicU8,
    inner: Lock<Inner>,
    value: UnsafeCell<MaybeUninit<T>>,
}

// The value is written once, by the one initializer, before the `Release`
// store of DONE, and only read after an `Acquire` load of DONE.
// SAFETY: so shared use only reads `&T` from any thread (`T: Sync`), and the
// value may be created on one thread and dropped on another (`T: Send`).
// As std's `OnceLock`.
unsafe impl<T: Send + Sync> Sync for OnceCell<T> {}
// SAFETY: owning the cell is owning the `T`.
unsafe impl<T: Send> Send for OnceCell<T> {}

// A panicking initializer leaves the cell uninitialized, never half-written.
impl<T: RefUnwindSafe + UnwindSafe> RefUnwindSafe for OnceCell<T> {}
impl<T: UnwindSafe> UnwindSafe for OnceCell<T> {}

impl<T> OnceCell<T> {
    /// An empty cell.
    pub const fn new() -> OnceCell<T> {
        OnceCell {
            state: AtomicU8::new(UNINIT),
            inner: Lock::new(Inner {
                initers: WaitList::new(),
                waiters: WaitList::new(),
                initializer: 0,
            }),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, if it is initialized. Never waits.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == DONE {
            // SAFETY: DONE (seen with Acquire) means the value was written
            // and is never written again while `&self` lives.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// The value, through the exclusive borrow.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if *self.state.get_mut() == DONE {
            // SAFETY: initialized (DONE), and `&mut self` is unique.
            Some(unsafe { self.value.get_mut().assume_init_mut() })
        } else {
            None
        }
    }

    /// Initializes the cell with `v` if it is empty (waiting for a running
    /// initializer first); gives `v` back if the cell has a value.
    pub fn set(&self, v: T) -> Result<(), T> {
        let mut v = Some(v);
        self.get_or_init(|| v.take().expect("runs once"));
        match v {
            None => Ok(()),
            Some(v) => Err(v),
        }
    }

    /// The value, initializing it with `f` if the cell is empty. If another
    /// coroutine or thread is running its initializer, waits for it (and if
    /// that one fails or dies, runs `f` in its place). `f` may block
    /// cooperatively. A `kill` or `timeout` of a waiter unwinds it; of the
    /// initializer, hands the initialization to the next waiter.
    ///
    /// # Panics
    /// If `f` panics (the panic propagates; the cell stays empty), or if `f`
    /// calls `get_or_init` on the same cell.
    #[inline]
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        match self.initialize(|| Ok::<T, std::convert::Infallible>(f())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// [`get_or_init`](Self::get_or_init) with a fallible initializer: an
    /// error leaves the cell empty (the next waiter tries its own) and is
    /// returned.
    ///
    /// ```
    /// let cell = moss::sync::OnceCell::new();
    /// assert_eq!(cell.get_or_try_init(|| "42x".parse::<u32>()).ok(), None);
    /// assert_eq!(cell.get_or_try_init(|| "42".parse::<u32>()), Ok(&42));
    /// ```
    pub fn get_or_try_init<E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(v) = self.get() {
            return Ok(v);
        }
        self.initialize(f)
    }

    /// Waits until the cell has a value (set by someone else). A `kill` or
    /// `timeout` of the waiter unwinds it.
    ///
    /// # Panics
    /// If called from inside this cell's own initializer (it would wait
    /// for itself).
    pub fn wait(&self) -> &T {
        match self.wait_until(None) {
            Ok(v) => v,
            Err(Timeout) => unreachable!("no deadline"),
        }
    }

    /// [`wait`](Self::wait) for at most `d`.
    pub fn wait_timeout(&self, d: Duration) -> Result<&T, Timeout> {
        self.wait_until(deadline_in(d))
    }

    /// The value, consuming the cell.
    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }

    /// Takes the value out, leaving the cell empty.
    pub fn take(&mut self) -> Option<T> {
        if *self.state.get_mut() == DONE {
            *self.state.get_mut() = UNINIT;
            // SAFETY: it was initialized, and the state now says it is not,
            // so it is read out exactly once.
            Some(unsafe { self.value.get_mut().assume_init_read() })
        } else {
            None
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<&T, Timeout> {
        if let Some(v) = self.get() {
            return Ok(v);
        }
        let g = lock(&self.inner);
        if let Some(v) = self.get() {
            return Ok(v);
        }
        if deadline.is_none() && g.initializer != 0 && g.initializer == context_id() {
            drop(g);
            panic!(
                "moss: OnceCell::wait called from its own initializer (it would wait for itself)"
            );
        }
        wait_notified(g, &self.inner, deadline, "OnceCell::wait", |i| {
            &mut i.waiters
        });
        self.get().ok_or(Timeout)
    }

    #[cold]
    fn initialize<E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let me = context_id();
        let mut g = lock(&self.inner);
        loop {
            match self.state.load(Ordering::Acquire) {
                DONE => {
                    drop(g);
                    return Ok(self.get().expect("DONE"));
                }
                UNINIT => {
                    self.state.store(RUNNING, Ordering::Relaxed);
                    break;
                }
                _ => {}
            }
            assert_ne!(
                g.initializer, me,
                "moss: OnceCell::get_or_init called from its own initializer (it would wait for itself)"
            );
            let w = Waiter::new(None);
            // SAFETY: `w` stays in this frame and `park_waiter` follows at once.
            unsafe { g.initers.push(&w) };
            drop(g);
            let (outcome, why) = park_waiter(&w, None, "OnceCell::get_or_init", &self.inner, |i| {
                &mut i.initers
            });
            match (outcome, why) {
                (Outcome::Handed, Wakeup::Cancelled) => {
                    self.abandon(); // the right to initialize goes to the next
                    park::deliver_cancel()
                }
                (_, Wakeup::Cancelled) => park::deliver_cancel(),
                // Our turn: the cell is still RUNNING, now for us.
                (Outcome::Handed, _) => {
                    g = lock(&self.inner);
                    break;
                }
                // Initialized: the next round returns the value.
                _ => g = lock(&self.inner),
            }
        }
        g.initializer = me;
        drop(g);
        let guard = Abandon(self);
        let v = f()?; // an error drops the guard: the next waiter takes over
        std::mem::forget(guard);
        // SAFETY: RUNNING for us: nobody else writes the value, and nobody
        // reads it before the DONE store below.
        unsafe { (*self.value.get()).write(v) };
        let wakes = {
            let mut g = lock(&self.inner);
            self.state.store(DONE, Ordering::Release);
            g.initializer = 0;
            let mut wakes = g.initers.wake_all(false);
            wakes.extend(g.waiters.wake_all(false));
            wakes
        };
        unpark_all(wakes);
        Ok(self.get().expect("DONE"))
    }

    /// The initializer gave up (failed, panicked or cancelled): the oldest
    /// waiting `get_or_init` takes over, or the cell is empty again.
    fn abandon(&self) {
        let mut g = lock(&self.inner);
        g.initializer = 0;
        match g.initers.hand(()) {
            Ok(wake) => {
                drop(g);
                wake.unpark();
            }
            Err(()) => self.state.store(UNINIT, Ordering::Relaxed),
        }
    }
}

/// Abandons the initialization if dropped (an error, a panic, a kill).
struct Abandon<'a, T>(&'a OnceCell<T>);

impl<T> Drop for Abandon<'_, T> {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl<T> Default for OnceCell<T> {
    fn default() -> OnceCell<T> {
        OnceCell::new()
    }
}

impl<T> From<T> for OnceCell<T> {
    fn from(v: T) -> OnceCell<T> {
        let c = OnceCell::new();
        c.state.store(DONE, Ordering::Relaxed);
        // SAFETY: a fresh cell nobody else sees.
        unsafe { (*c.value.get()).write(v) };
        c
    }
}

impl<T> Drop for OnceCell<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == DONE {
            // SAFETY: initialized, and dropped exactly once here.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for OnceCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("OnceCell");
        match self.get() {
            Some(v) => d.field(v),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}
