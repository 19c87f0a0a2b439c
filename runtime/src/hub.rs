//! The hub: one scheduler per OS thread.
//!
//! ```text
//!             ┌──────────────────────── run_until(done) on the root stack ──┐
//!             │                                                             │
//!   ┌────────▶│ pop the run queue, resume the task (stack switch); it runs  │
//!   │         │ until it parks, yields or returns; stop if done()           │
//!   │         │ ... at most BATCH tasks, then:                              │
//!   │         │ poll: epoll_wait (0 if tasks are ready, else until the next │
//!   │         │       timer; skipped when nothing can produce an event)     │
//!   │         │       → wake I/O waiters, drain the cross-thread queue,     │
//!   │         │       → fire due timers (wakes, timeouts, delayed starts)   │
//!   └─────────┤ nothing ready, no timer, no I/O waiter, no cross-thread     │
//!             │ waker: "would block forever"                                │
//!             └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! The loop runs on the root (the thread's own stack) whenever the root blocks
//! on a moss call; coroutines always suspend back into it. There is no
//! separate hub stack: a coroutine-to-coroutine switch is suspend + resume.
//!
//! Cross-thread wake-ups go through [`Remote`]: a mutex-protected token list
//! plus a mio `Waker` (an eventfd) that is written only when the hub is (about
//! to be) asleep in `epoll_wait`, so a busy hub costs a waker no syscall.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;
use slab::Slab;

use crate::cancel::{self, Cancel};
use crate::io_slot::IoSlot;
use crate::stack_pool::StackPool;
use crate::task::{CoroutineId, Header, ROOT_KEY, RootTask, State, Task, Token, Wakeup, header_of};
use crate::timer::{Action, Timers};

/// When the root's hub loop returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// The root was woken (its park or yield ended).
    RootReady,
    /// No task of this hub is left.
    NoTasks,
}

/// Tasks resumed between two polls of I/O and timers when tasks keep yielding.
const BATCH: u32 = 64;
const WAKER_TOKEN: mio::Token = mio::Token(usize::MAX);

/// Ids are handed out to hubs in blocks so spawning touches no shared counter.
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);
const ID_BLOCK: u64 = 4096;
static NEXT_HUB_ID: AtomicU64 = AtomicU64::new(1);

/// The part of a hub other threads may touch.
pub(crate) struct Remote {
    pub(crate) hub_id: u64,
    queue: Mutex<Vec<Token>>,
    has_items: AtomicBool,
    /// The hub is in (or about to enter) a blocking `epoll_wait`.
    sleeping: AtomicBool,
    waker: mio::Waker,
}

impl Remote {
    pub(crate) fn push(&self, token: Token) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token);
        self.has_items.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // A failed wake leaves the hub to its timeout; nothing to report.
            let _ = self.waker.wake();
        }
    }
}

/// FIFO of ready tasks.
///
/// # Invariants
/// The deque is only accessed through these three methods, none of which
/// calls out to code that could touch the queue again (no user code, no
/// drops of tasks: `pop` moves the task out), so no two references to the
/// deque are ever alive at once. The hub is `!Sync` (one thread).
#[derive(Default)]
struct RunQueue(std::cell::UnsafeCell<VecDeque<Rc<dyn Task>>>);

impl RunQueue {
    #[inline]
    fn push(&self, t: Rc<dyn Task>) {
        // SAFETY: see the type's invariants: no other reference is alive.
        unsafe { (*self.0.get()).push_back(t) }
    }

    #[inline]
    fn pop(&self) -> Option<Rc<dyn Task>> {
        // SAFETY: see the type's invariants.
        unsafe { (*self.0.get()).pop_front() }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        // SAFETY: see the type's invariants.
        unsafe { (*self.0.get()).is_empty() }
    }
}

pub(crate) struct Hub {
    pub(crate) tasks: RefCell<Slab<Rc<dyn Task>>>,
    run_queue: RunQueue,
    pub(crate) timers: RefCell<Timers>,
    poll: RefCell<mio::Poll>,
    events: RefCell<mio::Events>,
    pub(crate) io: RefCell<Slab<IoSlot>>,
    /// Tasks parked on I/O readiness.
    pub(crate) io_waiters: Cell<usize>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) stacks: RefCell<StackPool>,
    pub(crate) root: Rc<RootTask>,
    /// The running task's header, or the root's.
    current: Cell<*const Header>,
    next_id: Cell<u64>,
    id_end: Cell<u64>,
    /// Tasks resumed (or fast yields) since the last poll.
    since_poll: Cell<u32>,
    /// Waiters of `wait()` called from coroutines.
    pub(crate) idle_waiters: RefCell<Vec<Token>>,
    next_scope: Cell<u64>,
    /// An alternate signal stack this hub installed (freed on drop).
    altstack: Cell<Option<(usize, usize)>>,
    /// The root's park (by sequence number) that ends when its entry in the
    /// run queue comes up (`yield_now` on the root).
    root_turn: Cell<Option<u64>>,
}

thread_local! {
    static HUB: Cell<*const Hub> = const { Cell::new(std::ptr::null()) };
    static OWNER: HubOwner = const { HubOwner(Cell::new(std::ptr::null_mut())) };
}

/// Owns the thread's hub; dropping it at thread exit frees the hub.
struct HubOwner(Cell<*mut Hub>);

impl Drop for HubOwner {
    fn drop(&mut self) {
        let p = self.0.replace(std::ptr::null_mut());
        if !p.is_null() {
            HUB.with(|h| h.set(std::ptr::null()));
            // SAFETY: `p` came from `Box::into_raw` in `Hub::current` and is
            // freed only here, once; `HUB` no longer points at it.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl Hub {
    fn new() -> io::Result<Hub> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let hub_id = NEXT_HUB_ID.fetch_add(1, Ordering::Relaxed);
        let remote = Arc::new(Remote {
            hub_id,
            queue: Mutex::new(Vec::new()),
            has_items: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            waker,
        });
        let first = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
        let root = Rc::new(RootTask(Header::new_root(CoroutineId(first))));
        Ok(Hub {
            tasks: RefCell::new(Slab::new()),
            run_queue: RunQueue::default(),
            timers: RefCell::new(Timers::default()),
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(1024)),
            io: RefCell::new(Slab::new()),
            io_waiters: Cell::new(0),
            remote,
            stacks: RefCell::new(StackPool::default()),
            root,
            current: Cell::new(std::ptr::null()),
            next_id: Cell::new(first + 1),
            id_end: Cell::new(first + ID_BLOCK),
            since_poll: Cell::new(0),
            idle_waiters: RefCell::new(Vec::new()),
            next_scope: Cell::new(1),
            altstack: Cell::new(None),
            root_turn: Cell::new(None),
        })
    }

    /// The calling thread's hub, created on first use.
    ///
    /// # Panics
    /// If the hub cannot be created (no file descriptors left for its epoll
    /// instance and eventfd).
    #[inline]
    pub(crate) fn current() -> &'static Hub {
        let p = HUB.with(|h| h.get());
        if !p.is_null() {
            // SAFETY: `HUB` points at this thread's live, boxed (never moved)
            // hub; it is cleared before the hub is freed at thread exit, and
            // the reference is used only on this thread during its life.
            return unsafe { &*p };
        }
        Self::create()
    }

    #[cold]
    fn create() -> &'static Hub {
        let hub = match Hub::new() {
            Ok(h) => h,
            Err(e) => panic!("moss: cannot create the hub of this thread: {e}"),
        };
        let p = Box::into_raw(Box::new(hub));
        OWNER.with(|o| o.0.set(p));
        HUB.with(|h| h.set(p));
        // SAFETY: just allocated and published; see `current`.
        let hub = unsafe { &*p };
        hub.current.set(&hub.root.0);
        crate::sys::signal::install(hub);
        hub
    }

    /// The hub of this thread if it exists (never creates one).
    #[inline]
    pub(crate) fn try_current() -> Option<&'static Hub> {
        let p = HUB.with(|h| h.get());
        if p.is_null() {
            return None;
        }
        // SAFETY: as in `current`: a non-null `HUB` is this thread's live hub.
        Some(unsafe { &*p })
    }

    /// In a freshly forked child: abandons the hub inherited from the parent
    /// (leaked, never touched again: its epoll instance and eventfd are shared
    /// with the parent, its coroutines are the parent's), so that the next
    /// moss call on this thread creates a fresh hub.
    pub(crate) fn forget_after_fork() {
        OWNER.with(|o| o.0.set(std::ptr::null_mut()));
        HUB.with(|h| h.set(std::ptr::null()));
    }

    pub(crate) fn set_altstack(&self, range: (usize, usize)) {
        self.altstack.set(Some(range));
    }

    /// The header of whatever runs now: a coroutine or the root.
    #[inline]
    pub(crate) fn current_header(&self) -> &Header {
        // SAFETY: `current` points at the root's header (owned by the hub) or
        // at the header of the running task, which the task slab keeps alive
        // until it is done; it is reset before a finished task is released.
        unsafe { &*self.current.get() }
    }

    pub(crate) fn in_coroutine(&self) -> bool {
        !self.current_header().is_root()
    }

    pub(crate) fn new_id(&self) -> CoroutineId {
        let id = self.next_id.get();
        if id == self.id_end.get() {
            let first = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            self.next_id.set(first + 1);
            self.id_end.set(first + ID_BLOCK);
            return CoroutineId(first);
        }
        self.next_id.set(id + 1);
        CoroutineId(id)
    }

    pub(crate) fn new_scope(&self) -> u64 {
        let s = self.next_scope.get();
        self.next_scope.set(s + 1);
        s
    }

    /// Adds a new task; it starts at `start` or as soon as possible.
    pub(crate) fn spawn(&self, task: Rc<dyn Task>, start: Option<Instant>) {
        let key = self.tasks.borrow_mut().insert(task.clone());
        let h = task.header();
        h.key.set(key as u32);
        match start {
            Some(at) => {
                let k = self
                    .timers
                    .borrow_mut()
                    .insert(at, Action::Start(h.token()));
                h.timer.set(Some(k));
            }
            None => self.run_queue.push(task),
        }
    }

    pub(crate) fn task(&self, key: u32, id: u64) -> Option<Rc<dyn Task>> {
        if key == ROOT_KEY {
            return (self.root.0.id.0 == id).then(|| self.root.clone() as Rc<dyn Task>);
        }
        let tasks = self.tasks.borrow();
        let t = tasks.get(key as usize)?;
        (t.header().id.0 == id).then(|| t.clone())
    }

    pub(crate) fn live_tasks(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Ends the wait `token` with `why`; false if that wait is already over.
    pub(crate) fn wake(&self, token: Token, why: Wakeup) -> bool {
        let Some(t) = self.task(token.key, token.id) else {
            return false;
        };
        if !t.header().state.wake(token.seq, why) {
            return false;
        }
        self.schedule(t);
        true
    }

    /// Ends whatever park `t` is in with `why` (a cancellation); false if it
    /// is not parked.
    pub(crate) fn wake_parked(&self, t: &Rc<dyn Task>, why: Wakeup) -> bool {
        if !t.header().state.wake_parked(why) {
            return false;
        }
        self.schedule(t.clone());
        true
    }

    /// Queues a task that became Ready (a woken root needs no queue: its
    /// loop sees the state).
    #[inline]
    fn schedule(&self, t: Rc<dyn Task>) {
        if !header_of(&t).is_root() {
            self.run_queue.push(t);
        }
    }

    /// Suspends the current context until woken, the deadline passes, or a
    /// cancellation is requested. Never unwinds.
    ///
    /// Inlined (with its rare paths out of line) for the reason given at
    /// `yield_now`: fewer returns between a resume and user code.
    #[inline(always)]
    pub(crate) fn park(&self, deadline: Option<Instant>, what: &'static str) -> Wakeup {
        let h = self.current_header();
        if h.state.cancel_pending() {
            h.state.mark_seen();
            return Wakeup::Cancelled;
        }
        self.park_now(h, deadline, what)
    }

    /// [`park`](Self::park) for a wait that cannot fail: a cancellation
    /// already pending does not end it (it stays pending, marked seen). Only
    /// a new, stronger one (a kill over a pending timeout) ends it early.
    pub(crate) fn park_shielded(&self, deadline: Option<Instant>, what: &'static str) -> Wakeup {
        let h = self.current_header();
        if h.state.cancel_pending() {
            h.state.mark_seen();
        }
        self.park_now(h, deadline, what)
    }

    /// Whether the current context runs its own code: false while the hub
    /// loop runs on the root's stack (the root is parked then), where a park
    /// would re-enter the loop.
    pub(crate) fn context_running(&self) -> bool {
        self.current_header().state.get() == State::Running
    }

    #[inline(always)]
    fn park_now(&self, h: &Header, deadline: Option<Instant>, what: &'static str) -> Wakeup {
        if !h.is_root() {
            // Before any state changes: a failed check leaves nothing behind.
            crate::greenlet::assert_not_in_greenlet();
        }
        if deadline.is_some() && !self.arm_park_timer(h, deadline) {
            return Wakeup::TimedOut;
        }
        h.waiting_on.set(what);
        h.state.park();
        if h.is_root() {
            self.run_until(Until::RootReady, true);
        } else {
            self.suspend(h);
        }
        let w = h.state.end_park();
        if h.timer.get().is_some() {
            self.disarm_park_timer(h);
        }
        if w == Wakeup::Cancelled {
            h.state.mark_seen();
        }
        w
    }

    /// Arms the timer of a timed park; false if the deadline already passed.
    #[inline(never)]
    fn arm_park_timer(&self, h: &Header, deadline: Option<Instant>) -> bool {
        let Some(d) = deadline else { return true };
        if d <= Instant::now() {
            return false;
        }
        let k = self.timers.borrow_mut().insert(d, Action::Wake(h.token()));
        h.timer.set(Some(k));
        true
    }

    #[inline(never)]
    fn disarm_park_timer(&self, h: &Header) {
        if let Some(k) = h.timer.take() {
            self.timers.borrow_mut().cancel(k);
        }
    }

    /// Switches from the running coroutine back to the hub loop.
    #[inline(always)]
    fn suspend(&self, h: &Header) {
        let y = h.yielder.get();
        debug_assert!(!y.is_null(), "suspend outside a coroutine");
        // SAFETY: `yielder` is the `&Yielder` corosensei gave this task's body,
        // alive on its stack while the body runs; we run on that stack now
        // (current is this task), so it is alive and ours to suspend.
        unsafe { (*y).suspend(()) };
    }

    /// `yield_now` for the current context.
    ///
    /// Inlined into callers on purpose: a switch from a shallow call depth
    /// keeps the CPU's return-stack predictions intact (each `ret` between
    /// the resume point and user code mispredicts after a stack switch).
    #[inline(always)]
    pub(crate) fn yield_now(&self) {
        let h = self.current_header();
        if h.state.cancel_pending() {
            cancel::deliver(self);
        }
        if h.is_root() {
            // Let every task that is ready now run once, then poll: the root
            // parks until its own turn in the run queue comes.
            self.root_turn.set(Some(h.state.park_seq()));
            h.state.park();
            self.run_queue.push(self.root.clone());
            self.run_until(Until::RootReady, true);
            h.state.end_park();
            self.poll_once(Some(Duration::ZERO));
        } else {
            let n = self.since_poll.get() + 1;
            self.since_poll.set(n);
            if n < BATCH && self.run_queue.is_empty() {
                return;
            }
            crate::greenlet::assert_not_in_greenlet();
            // The hub loop requeues a task that suspends in state Ready.
            h.state.yield_();
            self.suspend(h);
        }
        if h.state.cancel_pending() {
            cancel::deliver(self);
        }
    }

    /// Runs the loop on the root stack until `done()` holds. When nothing can
    /// ever make progress: panics if `strict`, else returns false.
    pub(crate) fn run_until(&self, until: Until, strict: bool) -> bool {
        debug_assert!(!self.in_coroutine(), "the hub loop runs on the root only");
        let done = || match until {
            Until::RootReady => !self.root.0.state.is(State::Parked),
            Until::NoTasks => self.tasks.borrow().is_empty(),
        };
        loop {
            if done() {
                return true;
            }
            let mut n = 0;
            loop {
                let next = self.run_queue.pop();
                let Some(t) = next else { break };
                self.resume(t);
                if done() {
                    return true;
                }
                n += 1;
                if n == BATCH {
                    break;
                }
            }
            let timeout = if !self.run_queue.is_empty() {
                Some(Duration::ZERO)
            } else {
                match self.timers.borrow().next_deadline() {
                    Some(d) => Some(d.saturating_duration_since(Instant::now())),
                    None if self.can_be_woken() => None,
                    None if strict => self.block_forever(),
                    None => return false,
                }
            };
            self.poll_once(timeout);
        }
    }

    #[cold]
    fn block_forever(&self) -> ! {
        panic!(
            "moss: this operation would block forever: the {} is waiting on '{}', and no \
             coroutine is runnable, no timer is pending, no I/O is awaited and nothing on \
             another thread can wake this hub ({} coroutines blocked)",
            if self.in_coroutine() {
                "coroutine"
            } else {
                "root"
            },
            self.current_header().waiting_on.get(),
            self.live_tasks(),
        )
    }

    fn can_be_woken(&self) -> bool {
        self.io_waiters.get() > 0
            // Every live `Unparker` holds a clone of `remote` (the hub holds
            // one): a waiter that another thread could wake.
            || Arc::strong_count(&self.remote) > 1
            || self.remote.has_items.load(Ordering::SeqCst)
    }

    /// Runs one task until it parks, yields or returns.
    fn resume(&self, t: Rc<dyn Task>) {
        self.since_poll.set(self.since_poll.get() + 1);
        let h = header_of(&t);
        if h.is_root() {
            // The root queued itself in `yield_now`: its turn ends that park
            // (unless something else ended it first).
            if let Some(seq) = self.root_turn.take() {
                h.state.wake(seq, Wakeup::Notified);
            }
            return;
        }
        match h.state.get() {
            State::Ready | State::New => {}
            State::Done => return, // killed while queued
            s => unreachable!("resume of a task in state {s:?}"),
        }
        // SAFETY: the coroutine cell is only touched here and in `finish`,
        // on the hub loop (root stack), never by the task's own code; no other
        // reference to it is alive during this call.
        let coro = unsafe { &mut *h.coroutine.get() };
        if coro.is_none() {
            let stack = self.stacks.borrow_mut().take(h.stack_size);
            let stack = match stack {
                Ok(s) => s,
                Err(e) => {
                    t.finish_unstarted(Some(e));
                    self.finish(&t);
                    return;
                }
            };
            h.guard.set(stack.guard_range().0);
            let body = t.clone();
            *coro = Some(corosensei::Coroutine::with_stack(stack, move |y, ()| {
                body.header().yielder.set(y);
                body.run();
            }));
        }
        h.state.resume();
        let prev = self.current.replace(h);
        let r = coro.as_mut().expect("bound above").resume(());
        self.current.set(prev);
        match r {
            CoroutineResult::Yield(()) => {
                if h.state.get() == State::Ready {
                    // It yielded: back of the queue, no refcount traffic.
                    self.run_queue.push(t);
                }
            }
            CoroutineResult::Return(()) => {
                let stack = coro.take().expect("coroutine present").into_stack();
                self.stacks.borrow_mut().give(stack);
                self.finish(&t);
            }
        }
    }

    /// Marks `t` done, releases its slab entry and wakes its joiners.
    pub(crate) fn finish(&self, t: &Rc<dyn Task>) {
        let h = t.header();
        h.state.complete();
        if let Some(k) = h.timer.take() {
            self.timers.borrow_mut().cancel(k);
        }
        self.tasks.borrow_mut().try_remove(h.key.get() as usize);
        if let Some(j) = h.joiner.take() {
            self.wake(j, Wakeup::Notified);
        }
        if let Some(more) = h.more_joiners.take() {
            for j in *more {
                self.wake(j, Wakeup::Notified);
            }
        }
        if !self.idle_waiters.borrow().is_empty() {
            let waiters = std::mem::take(&mut *self.idle_waiters.borrow_mut());
            for w in waiters {
                self.wake(w, Wakeup::Notified);
            }
        }
    }

    /// Polls I/O and the cross-thread queue, waiting at most `timeout`
    /// (`None`: until an event), then fires due timers.
    pub(crate) fn poll_once(&self, timeout: Option<Duration>) {
        self.since_poll.set(0);
        let must_poll = timeout != Some(Duration::ZERO) || !self.io.borrow().is_empty();
        if must_poll {
            let mut timeout = timeout;
            let sleeping = timeout != Some(Duration::ZERO);
            if sleeping {
                self.remote.sleeping.store(true, Ordering::SeqCst);
                if self.remote.has_items.load(Ordering::SeqCst) {
                    timeout = Some(Duration::ZERO);
                }
            }
            let mut events = self.events.borrow_mut();
            let r = self.poll.borrow_mut().poll(&mut events, timeout);
            if sleeping {
                self.remote.sleeping.store(false, Ordering::SeqCst);
            }
            if let Err(e) = r
                && e.kind() != io::ErrorKind::Interrupted
            {
                panic!("moss: epoll_wait failed: {e}");
            }
            for ev in events.iter() {
                if ev.token() != WAKER_TOKEN {
                    self.dispatch_io(ev);
                }
            }
        }
        if self.remote.has_items.load(Ordering::SeqCst) {
            self.remote.has_items.store(false, Ordering::SeqCst);
            let tokens =
                std::mem::take(&mut *self.remote.queue.lock().unwrap_or_else(|e| e.into_inner()));
            for t in tokens {
                self.wake(t, Wakeup::Notified);
            }
        }
        self.fire_timers();
    }

    fn fire_timers(&self) {
        let mut now = None;
        loop {
            if self.timers.borrow().len() == 0 {
                return;
            }
            let now = *now.get_or_insert_with(Instant::now);
            let action = self.timers.borrow_mut().pop_due(now);
            let Some(action) = action else { return };
            match action {
                Action::Wake(tok) => {
                    if let Some(t) = self.task(tok.key, tok.id) {
                        let h = t.header();
                        if h.state.wake(tok.seq, Wakeup::TimedOut) {
                            // The timer has fired: nothing to disarm.
                            h.timer.set(None);
                            self.schedule(t);
                        }
                    }
                }
                Action::Timeout(tok, scope) => {
                    if let Some(t) = self.task(tok.key, tok.id) {
                        cancel::request(self, &t, Cancel::Timeout(scope));
                    }
                }
                Action::Start(tok) => {
                    if let Some(t) = self.task(tok.key, tok.id) {
                        let h = t.header();
                        h.timer.set(None);
                        if h.state.is(State::New) {
                            self.run_queue.push(t);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn registry_register(&self, fd: std::os::fd::RawFd, key: usize) -> io::Result<()> {
        self.poll.borrow().registry().register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(key),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )
    }

    pub(crate) fn registry_deregister(&self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.poll
            .borrow()
            .registry()
            .deregister(&mut mio::unix::SourceFd(&fd))
    }

    fn dispatch_io(&self, ev: &mio::event::Event) {
        let (readers, writers) = {
            let mut io = self.io.borrow_mut();
            let Some(slot) = io.get_mut(ev.token().0) else {
                return;
            };
            let err = ev.is_error();
            let r = ev.is_readable() || ev.is_read_closed() || err;
            let w = ev.is_writable() || ev.is_write_closed() || err;
            slot.set_read_hup(ev.is_read_closed());
            (slot.on_event(r, true), slot.on_event(w, false))
        };
        for t in readers.into_iter().chain(writers.into_iter()) {
            self.wake(t, Wakeup::Notified);
        }
    }

    /// Diagnostic listing of this hub's coroutines.
    pub(crate) fn dump(&self) -> String {
        use std::fmt::Write;
        let now = Instant::now();
        let mut out = String::new();
        let describe = |h: &Header, out: &mut String| {
            let state = match h.state.get() {
                State::New if h.timer.get().is_some() => "not started (spawn_later)".to_owned(),
                State::New => "not started".to_owned(),
                State::Ready => "ready".to_owned(),
                State::Running => "running".to_owned(),
                State::Done => "done".to_owned(),
                State::Parked => match h.timer.get().map(|k| k.0) {
                    Some(d) => format!(
                        "waiting on {} ({:.3}s left)",
                        h.waiting_on.get(),
                        d.saturating_duration_since(now).as_secs_f64()
                    ),
                    None => format!("waiting on {}", h.waiting_on.get()),
                },
            };
            // The root was not spawned: its site would be this file.
            let origin = if h.is_root() {
                "the thread's root".to_owned()
            } else {
                format!("spawned at {}", h.spawn_site)
            };
            let _ = writeln!(
                out,
                "#{} {:<12} {:<40} {origin}",
                h.id,
                h.name.as_deref().unwrap_or("-"),
                state,
            );
        };
        let _ = writeln!(
            out,
            "hub {}: {} coroutines",
            self.remote.hub_id,
            self.live_tasks()
        );
        describe(&self.root.0, &mut out);
        for (_, t) in self.tasks.borrow().iter() {
            describe(t.header(), &mut out);
        }
        out
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Unfinished coroutines are leaked, not unwound: their destructors
        // would run during thread-local destruction, when moss itself is
        // gone. Their stacks stay mapped (and unused) for the process's life.
        for t in self.tasks.get_mut().drain() {
            // SAFETY: the hub loop is not running (we are in its destructor),
            // so nothing else references the coroutine cell.
            if let Some(c) = unsafe { &mut *t.header().coroutine.get() }.take() {
                std::mem::forget(c);
            }
        }
        if let Some(range) = self.altstack.take() {
            crate::sys::signal::remove_altstack(range);
        }
    }
}
