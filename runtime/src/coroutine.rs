//! The coroutine API: spawn, join, kill, sleep, timeout.
//!
//! Semantics of cancellation are in [`crate::cancel`]; the life cycle of a
//! coroutine in [`crate::task`].

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use crate::cancel::Elapsed;
use crate::hub::{Hub, Mode};
use crate::stack_pool::{DEFAULT_STACK_SIZE, normalize_size};
use crate::task::{CoroutineId, Header, JoinError, JoinSlot, State, TaskCell, Wakeup};

/// Spawns a coroutine on the calling thread's hub and returns its handle.
///
/// The closure need not be `Send`: coroutines never leave their thread. It
/// starts the next time the hub runs (when the caller blocks on a moss call).
/// Dropping the handle detaches the coroutine.
///
/// A coroutine still alive when its thread exits is killed then (unwound
/// from its blocking point, so its destructors run and it leaves the wait
/// lists of shared objects); one that never started is dropped unrun.
/// Coroutines of the main thread end with the process.
///
/// ```
/// let h = moss::spawn(|| 6 * 7);
/// assert_eq!(h.join().unwrap(), 42);
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    spawn_inner(Spawn::default(), None, Location::caller(), f)
}

/// Spawns a coroutine that starts after `delay`.
///
/// ```
/// use std::time::{Duration, Instant};
/// let t = Instant::now();
/// let h = moss::spawn_later(Duration::from_millis(20), move || t.elapsed());
/// assert!(h.join().unwrap() >= Duration::from_millis(20));
/// ```
#[track_caller]
pub fn spawn_later<F, T>(delay: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let start = Instant::now().checked_add(delay);
    let site = Location::caller();
    match start {
        Some(at) => spawn_inner(Spawn::default(), Some(at), site, f),
        // A delay past the end of time: the coroutine never starts on its own.
        None => spawn_inner(Spawn::default(), Some(far_future()), site, f),
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// What a [`Builder`] configures, resolved.
struct Spawn {
    name: Option<Rc<str>>,
    stack_size: usize,
    background: bool,
}

impl Default for Spawn {
    fn default() -> Spawn {
        Spawn {
            name: None,
            stack_size: DEFAULT_STACK_SIZE,
            background: false,
        }
    }
}

fn spawn_inner<F, T>(
    cfg: Spawn,
    start: Option<Instant>,
    site: &'static Location<'static>,
    f: F,
) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let hub = Hub::current();
    let mut header = Header::new(hub.new_id(), cfg.name, cfg.stack_size, site);
    header.background = cfg.background;
    let cell = Rc::new(TaskCell::new(header, f));
    hub.spawn(cell.clone(), start);
    JoinHandle {
        task: cell,
        _not_send: PhantomData,
    }
}

/// Configures a coroutine before spawning it, like `std::thread::Builder`.
///
/// ```
/// let h = moss::Builder::new()
///     .name("worker")
///     .stack_size(64 * 1024)
///     .spawn(|| moss::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(h.name(), Some("worker"));
/// assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    background: bool,
}

impl Builder {
    /// A builder with the default name (none) and stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine (shown by `dump`, join errors and overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size in bytes (rounded up to pages). Between
    /// [`MIN_STACK_SIZE`](crate::MIN_STACK_SIZE) and
    /// [`MAX_STACK_SIZE`](crate::MAX_STACK_SIZE); default
    /// [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Marks the coroutine as a background one (a daemon thread, in
    /// Python's words): [`run`] and [`wait`] do not wait for it, so a
    /// housekeeping loop (a metrics flusher, a signal handler's
    /// dispatcher) does not keep a program from finishing. In every other
    /// way it is an ordinary coroutine: it runs whenever its hub runs,
    /// `join` and `kill` work, and `dump` lists it. A background coroutine
    /// still alive when its thread exits is killed then, like any other (see
    /// [`spawn`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let flusher = moss::Builder::new()
    ///     .name("flusher")
    ///     .background(true)
    ///     .spawn(|| loop { moss::sleep(Duration::from_secs(60)) })
    ///     .unwrap();
    /// moss::run(|| moss::spawn(|| ()).join().unwrap()); // returns at once
    /// assert!(!flusher.is_finished());
    /// flusher.kill();
    /// ```
    pub fn background(mut self, on: bool) -> Builder {
        self.background = on;
        self
    }

    /// Spawns the coroutine. Fails with `InvalidInput` for a stack size out of
    /// bounds, and with the OS error if no stack of that size can be mapped.
    /// The stack itself is bound when the coroutine first runs (if mapping
    /// fails only then, `join` reports it).
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let size = match self.stack_size {
            Some(s) => normalize_size(s)?,
            None => DEFAULT_STACK_SIZE,
        };
        // Binding is lazy, but an address space that cannot hold one more
        // stack of this size is reported here, not at the first run.
        Hub::current().stacks.borrow_mut().reserve(size)?;
        let cfg = Spawn {
            name: self.name.map(Rc::from),
            stack_size: size,
            background: self.background,
        };
        Ok(spawn_inner(cfg, None, Location::caller(), f))
    }
}

/// An owned permission to join a coroutine. `!Send`: it belongs to the thread
/// whose hub runs the coroutine.
///
/// ```compile_fail,E0277
/// let h = moss::spawn(|| 1);
/// std::thread::spawn(move || h.join()); // JoinHandle is !Send
/// ```
pub struct JoinHandle<T> {
    task: Rc<dyn JoinSlot<T>>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // Detached: a coroutine still running drops its result itself.
        self.header().detached.set(true);
    }
}

impl<T> JoinHandle<T> {
    /// The control block (for `sync::wait_any` and `pool::Pool`).
    pub(crate) fn header(&self) -> &Header {
        crate::task::slot_header(&self.task)
    }

    /// The typed result slot (for the link API in `link.rs`).
    pub(crate) fn slot(&self) -> &dyn JoinSlot<T> {
        &*self.task
    }

    /// Waits for the coroutine to finish and returns its value, or why it
    /// has none (panic, kill). From a coroutine this yields to the hub; from
    /// the root it runs the hub. Killing the *caller* while it waits unwinds
    /// the caller.
    ///
    /// # Panics
    /// On the root, if the coroutine can never finish: nothing is ready, no
    /// timer is pending, no I/O is awaited, and no other thread could wake
    /// anything (the test [`wait`](crate::wait) describes). The message says
    /// "this operation would block forever" and lists what each coroutine
    /// waits on, as [`dump`](crate::dump) does. A coroutine stuck on a
    /// `moss::sync` object while the process has other threads is not
    /// detected: the join then waits.
    pub fn join(self) -> Result<T, JoinError> {
        match self.wait(None) {
            Ok(r) => r,
            Err(_) => unreachable!("a join without deadline cannot time out"),
        }
    }

    /// Like [`join`](Self::join) but gives up after `d`, returning the handle
    /// so the caller can try again. `Duration::ZERO` polls.
    pub fn join_timeout(self, d: Duration) -> Result<Result<T, JoinError>, JoinHandle<T>> {
        // A deadline past the end of time means no deadline.
        self.wait(Instant::now().checked_add(d))
    }

    fn wait(self, deadline: Option<Instant>) -> Result<Result<T, JoinError>, JoinHandle<T>> {
        let hub = Hub::current();
        loop {
            if let Some(r) = self.task.take() {
                return Ok(r);
            }
            let me = hub.current_header();
            if me.id == self.header().id {
                panic!("moss: coroutine {} cannot join itself", me.label());
            }
            self.header().add_joiner(me.token());
            // `join` cannot fail; `join_timeout` can (with its handle back).
            let mode = if deadline.is_some() {
                Mode::Fallible
            } else {
                Mode::Infallible
            };
            match hub.park(deadline, "join", mode) {
                Wakeup::Notified => {}
                Wakeup::TimedOut => return Err(self),
                Wakeup::Cancelled => {
                    crate::cancel::deliver_or_fail(hub);
                    return Err(self);
                }
            }
        }
    }

    /// Kills the coroutine: it unwinds from its current or next blocking
    /// point (destructors run). Returns once it has died. A coroutine that has
    /// not started never runs; a finished one is left alone; killing the
    /// calling coroutine itself unwinds the caller at once.
    ///
    /// One exception, while a coroutine of this thread unwinds (its
    /// destructors block): a coroutine that parked meanwhile in a wait that
    /// cannot fail (a lock, an untimed `get`, a `join`) holds its kill until
    /// no coroutine of the thread unwinds (it cannot tell that it is not the
    /// one unwinding, and a second unwind would abort). A `kill` made
    /// meanwhile (say by a destructor that stops a helper) then returns once
    /// the target holds its kill, instead of waiting for a death that may
    /// wait for the caller's own unwind to end; the target dies as soon as
    /// no coroutine of the thread unwinds.
    ///
    /// ```
    /// use std::time::Duration;
    /// let h = moss::spawn(|| moss::sleep(Duration::from_secs(3600)));
    /// moss::yield_now(); // let it start sleeping
    /// h.kill();
    /// assert!(h.join().unwrap_err().is_killed());
    /// ```
    pub fn kill(&self) {
        crate::cancel::kill(self.header());
    }

    /// Whether the coroutine has finished (returned, panicked or was killed).
    pub fn is_finished(&self) -> bool {
        self.header().state.is(State::Done)
    }

    /// The coroutine's id.
    pub fn id(&self) -> CoroutineId {
        self.header().id
    }

    /// The coroutine's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.header().name.as_deref()
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

pub(crate) use crate::cancel::kill as kill_task;

/// Joins every handle, returning the results in input order.
///
/// ```
/// let hs: Vec<_> = (0..10).map(|i| moss::spawn(move || i * i)).collect();
/// let squares: Vec<u32> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
/// assert_eq!(squares[9], 81);
/// ```
pub fn join_all<T>(hs: impl IntoIterator<Item = JoinHandle<T>>) -> Vec<Result<T, JoinError>> {
    hs.into_iter().map(JoinHandle::join).collect()
}

/// Suspends the caller for `d`, letting other coroutines run.
/// `Duration::ZERO` is [`yield_now`]; `Duration::MAX` sleeps until killed.
pub fn sleep(d: Duration) {
    if d.is_zero() {
        return yield_now();
    }
    let hub = Hub::current();
    let deadline = Instant::now().checked_add(d);
    loop {
        match hub.park(deadline, "sleep", Mode::Fallible) {
            Wakeup::TimedOut => return,
            // Unwinds, or (while unwinding already) ends the sleep early.
            Wakeup::Cancelled => return crate::cancel::deliver_or_fail(hub),
            // Nothing else wakes a sleep, but stay robust to stray wake-ups.
            Wakeup::Notified => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
            }
        }
    }
}

/// Lets every other ready coroutine run once (gevent's `sleep(0)`); the
/// caller goes to the back of the run queue.
///
/// Inlined into callers on purpose (see the hub's `yield_now`).
#[inline(always)]
pub fn yield_now() {
    let hub = Hub::current();
    let h = hub.current_header();
    crate::cancel::check(hub, h);
    hub.yield_now(h);
    crate::cancel::check(hub, h);
}

/// The identity of the running coroutine (or of the thread's root).
#[derive(Clone, Debug)]
pub struct Current {
    id: CoroutineId,
    name: Option<Rc<str>>,
}

impl Current {
    /// The running coroutine's id.
    pub fn id(&self) -> CoroutineId {
        self.id
    }

    /// Its name: `Some("main")` for a thread's root, `None` for an unnamed
    /// coroutine.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// Who is running now.
///
/// ```
/// assert_eq!(moss::current().name(), Some("main"));
/// ```
pub fn current() -> Current {
    let h = Hub::current().current_header();
    Current {
        id: h.id,
        name: h.name.clone(),
    }
}

/// Runs `f`, cancelling it at its next blocking point once `d` has passed.
///
/// `Duration::MAX` never fires; `Duration::ZERO` fires at the first blocking
/// point. Timeouts nest in any order; a `kill` passes through.
///
/// ```
/// use std::time::Duration;
/// let r = moss::timeout(Duration::from_millis(10), || moss::sleep(Duration::from_secs(5)));
/// assert!(r.is_err());
/// assert_eq!(moss::timeout(Duration::from_secs(5), || 7), Ok(7));
/// ```
pub fn timeout<T>(d: Duration, f: impl FnOnce() -> T) -> Result<T, Elapsed> {
    crate::cancel::timeout(d, f)
}

/// Runs `f` on this thread, then runs the hub until every coroutine of this
/// thread has finished (or nothing can make progress any more). Background
/// coroutines ([`Builder::background`]) are not waited for.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// let n = Rc::new(Cell::new(0));
/// moss::run(|| for _ in 0..3 { let n = n.clone(); moss::spawn(move || n.set(n.get() + 1)); });
/// assert_eq!(n.get(), 3);
/// ```
pub fn run<T>(f: impl FnOnce() -> T) -> T {
    let v = f();
    wait();
    v
}

/// Runs the hub until no other coroutine of this thread is pending
/// (background ones, see [`Builder::background`], do not count).
///
/// On the root it also returns, as gevent's `wait` does, when the remaining
/// coroutines can never be woken, leaving them parked: none is ready, no
/// timer is pending (a sleep, a timeout), no I/O is awaited, and no other
/// thread could wake them, because nothing another thread could use to wake
/// them is alive, or because the process has no other thread
/// ([`monitor`](crate::monitor)'s thread, which only watches, does not
/// count).
///
/// A wait on a [`moss::sync`](crate::sync) object (an `Event`, a `Queue`,
/// a `Mutex`...) can end by any thread that reaches the object, and moss
/// cannot tell which threads do: while the process has another thread, such
/// a wait counts as one that may still end, even if no other thread holds
/// the object, and `wait` keeps waiting (moss checks about once a second
/// whether that thread has gone). A program that seems stuck there:
/// [`dump`] lists what each coroutine waits on, and for how long.
///
/// Called from a coroutine, it waits for every other foreground coroutine
/// of its thread; if they can never finish, the root's own wait decides
/// (a [`join`](JoinHandle::join) on the root panics, see there).
///
/// ```
/// use std::time::Duration;
/// for i in 0..3 {
///     moss::spawn(move || moss::sleep(Duration::from_millis(10 * i)));
/// }
/// moss::wait(); // all three have finished
/// ```
pub fn wait() {
    let hub = Hub::current();
    if !hub.in_coroutine() {
        hub.run_until(crate::hub::Until::NoTasks, false);
        return;
    }
    // In a coroutine: wait for every *other* foreground coroutine.
    let me = usize::from(!hub.current_header().background);
    while hub.foreground_tasks() > me {
        let me = hub.current_header();
        hub.idle_waiters.borrow_mut().push(me.token());
        if hub.park(None, "wait", Mode::Infallible) == Wakeup::Cancelled {
            crate::cancel::deliver(hub);
        }
    }
}

/// Runs `f(index)` on `threads` OS threads (at least one), each with its own
/// hub, and returns when every thread and all its coroutines have finished.
///
/// # Panics
/// If `f` panics on any thread (after all threads have finished), with the
/// index of the first thread that panicked; if a thread cannot be spawned
/// (after the threads already running have finished).
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// let n = Arc::new(AtomicUsize::new(0));
/// let m = n.clone();
/// moss::run_per_core(2, move |_| { m.fetch_add(1, Ordering::SeqCst); });
/// assert_eq!(n.load(Ordering::SeqCst), 2);
/// ```
pub fn run_per_core<F>(threads: usize, f: F)
where
    F: Fn(usize) + Send + Sync + 'static,
{
    let f = std::sync::Arc::new(f);
    let mut handles = Vec::new();
    let mut spawn_error = None;
    for i in 0..threads.max(1) {
        let f = f.clone();
        match std::thread::Builder::new()
            .name(format!("moss-hub-{i}"))
            .spawn(move || {
                run(|| f(i));
                // Coroutines that can never finish are killed now, while
                // this thread's thread-locals still live (see the hub's
                // thread-exit notes).
                Hub::current().shutdown();
            }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawn_error = Some((i, e));
                break;
            }
        }
    }
    // Join what runs before any panic, so that no hub thread outlives this
    // call, whatever happens.
    let mut first_panic = None;
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(p) = h.join() {
            first_panic.get_or_insert((i, p));
        }
    }
    if let Some((i, e)) = spawn_error {
        panic!("moss::run_per_core: cannot spawn hub thread {i}: {e}");
    }
    if let Some((i, p)) = first_panic {
        let msg = crate::panic_message(&*p).unwrap_or_default();
        panic!("moss::run_per_core: thread {i} panicked: {msg}");
    }
}

/// Every live coroutine of this thread, the root first, one per line: id,
/// name, state and where it was spawned. gevent's `print_run_info`.
///
/// A parked coroutine's state says what it waits on, for how long it has
/// been waiting, and for a timed wait the time left, as in
/// `waiting on Event::wait for 12.034s` or
/// `waiting on sleep for 0.500s (59.500s left)`. The waiting time is
/// measured on a clock the thread reads once per turn of its scheduler: it
/// is exact to within one turn, and a wait that began right after a long
/// stretch of CPU work without a yield looks older by up to that stretch.
///
/// Call it from a coroutine, or from a watchdog of your own, when a program
/// seems stuck: the longest waits are usually the ones to look at.
///
/// ```
/// use std::time::Duration;
///
/// let _idle = moss::Builder::new().name("idle").spawn(|| ()).unwrap();
/// let _nap = moss::Builder::new()
///     .name("nap")
///     .spawn(|| moss::sleep(Duration::from_secs(60)))
///     .unwrap();
/// moss::yield_now(); // both start: idle ends, nap sleeps
/// let d = moss::dump();
/// let nap = d.lines().find(|l| l.contains("nap")).unwrap();
/// assert!(nap.contains("waiting on sleep for ") && nap.contains("s left)"));
/// ```
pub fn dump() -> String {
    Hub::current().dump()
}
