//! The hub: one scheduler per OS thread.
//!
//! A hub owns everything that runs coroutines on its thread: the task table
//! and run queue, the timers, the reactor (epoll) and the stack pool. It is
//! created on the thread's first moss call and lives until the thread exits.
//! Its parts:
//!
//! * `run.rs` — the loop (`run_until`): resume ready tasks, poll I/O and
//!   the cross-thread queue, fire timers; the module header draws it.
//! * `park.rs` — parking and waking: how a context (a coroutine, or the
//!   root) leaves the CPU at a blocking point and how it gets it back.
//! * `remote.rs` — the part other threads touch: the cross-thread wake-up
//!   queue and its eventfd.
//! * `dump.rs` — `moss::dump`.
//! * `exit.rs` — the end: its coroutines are killed when the thread exits,
//!   then the hub is freed.
//! * `fork.rs` — a forked child: it abandons the hub it inherited and
//!   never runs or polls it.
//!
//! A context's life cycle and its cancellation state are owned by
//! `task/state.rs`; the hub changes them only through its transitions.

mod dump;
mod exit;
mod fork;
mod park;
mod remote;
mod run;

pub(crate) use exit::thread_exited;
pub(crate) use fork::{forked_away, forked_coroutine_returned, left_in_child};
pub(crate) use park::Mode;
pub(crate) use remote::Remote;
pub(crate) use run::Until;

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use slab::Slab;

use crate::reactor::poller::Reactor;
use crate::stack_pool::StackPool;
use crate::sys::signal::Report;
use crate::task::{CoroutineId, Header, ROOT_KEY, RootTask, Task};
use crate::timer::{Action, Timers};
use run::RunQueue;

/// Tasks resumed between two polls of I/O and timers when tasks keep yielding.
const BATCH: u32 = 64;

/// Ids are handed out to hubs in blocks so spawning touches no shared counter.
// From 1: no coroutine has id 0 (`Token::NONE` relies on it).
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);
const ID_BLOCK: u64 = 4096;
static NEXT_HUB_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Hub {
    pub(crate) tasks: RefCell<Slab<Rc<dyn Task>>>,
    run_queue: RunQueue,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) reactor: Reactor,
    pub(crate) remote: Arc<Remote>,
    /// What the blocked-hub monitor reads (`monitor.rs`).
    pub(crate) watch: Arc<crate::monitor::Watch>,
    /// Hub loops running on the root's stack (more than one when the loop
    /// ran a destructor that blocked): for the monitor.
    loop_depth: Cell<u32>,
    pub(crate) stacks: RefCell<StackPool>,
    pub(crate) root: Rc<RootTask>,
    /// The running task's header, or the root's. Right after a task
    /// yields, while the hub loop only picks the task it switches to next,
    /// still the yielding task's (alive: the loop holds it).
    current: Cell<*const Header>,
    next_id: Cell<u64>,
    id_end: Cell<u64>,
    /// Live background tasks (counted in `tasks`, ignored by `run`/`wait`).
    background: Cell<usize>,
    /// Tasks resumed (or fast yields) since the last poll.
    since_poll: Cell<u32>,
    /// Operations the running context may still complete without parking
    /// before it yields (`coop.rs`); refilled at every switch into a task.
    budget: Cell<u32>,
    /// When a spent budget last made the hub poll (`coop.rs`).
    forced_poll: Cell<Instant>,
    /// Waiters of `wait()` called from coroutines.
    pub(crate) idle_waiters: RefCell<Vec<crate::task::Token>>,
    next_scope: Cell<u64>,
    /// An alternate signal stack this hub installed (freed on drop).
    altstack: Cell<Option<(usize, usize)>>,
    /// The root's park (by sequence number) that ends when its entry in the
    /// run queue comes up (`yield_now` on the root).
    root_turn: Cell<Option<u64>>,
    /// Infallible waits that keep waiting with a cancellation they could not
    /// take (the thread was unwinding): woken once it no longer is.
    deferred: RefCell<Vec<crate::task::Token>>,
    /// How many contexts are in a park that began while the thread was
    /// unwinding (see `TaskState::unwinding_alone`).
    unwinding_parks: Cell<u32>,
    /// The coarse clock `dump` measures waits with (see `dump.rs`).
    pub(crate) clock: dump::Clock,
    /// When (on `clock`) an idle hub that only other threads could wake next
    /// asks whether any other thread is left (`run.rs`).
    alone_check_at: Cell<u32>,
    /// The hub is shutting down (thread exit): new coroutines get a pending
    /// kill (see `exit.rs`).
    exiting: Cell<bool>,
    /// The fork generation this hub was made in (see `fork.rs`).
    generation: u64,
}

thread_local! {
    /// This thread's hub, or null. A `const` thread-local without a
    /// destructor: it is never "destroyed", so moss calls work in every
    /// thread-local destructor, and the signal handler can read it. The hub
    /// it points at is owned by a pthread key (see `exit.rs`).
    static HUB: Cell<*const Hub> = const { Cell::new(std::ptr::null()) };

    /// The id of this thread's root, 0 until first asked for. Kept apart
    /// from the hub so that a plain thread has an identity (an `RLock`
    /// owner) without one, and the root keeps it once its hub exists (also
    /// the fresh hub of a forked child: the same root goes on).
    static ROOT_ID: Cell<u64> = const { Cell::new(0) };
}

/// The id of this thread's root (allocated on first use; needs no hub).
fn root_id() -> CoroutineId {
    let id = ROOT_ID.with(Cell::get);
    if id != 0 {
        return CoroutineId(id);
    }
    // One id off the block counter: blocks need not be aligned.
    let id = NEXT_ID_BLOCK.fetch_add(1, Ordering::Relaxed);
    ROOT_ID.with(|r| r.set(id));
    CoroutineId(id)
}

/// The id of the running context (a coroutine, or the thread's root),
/// without creating a hub: it cannot fail, also on a plain thread whose hub
/// could not be created (no fds left).
#[inline]
pub(crate) fn current_id() -> CoroutineId {
    match Hub::try_current() {
        Some(hub) => hub.current_header().id,
        None => root_id(),
    }
}

impl Hub {
    fn new() -> io::Result<Hub> {
        // First: registers the atfork handler (before this hub exists).
        let generation = crate::sys::atfork::generation();
        // Never on 0-2 (closed stdio): a `println!` would write into the
        // eventfd, and a file opened to be the new stdin would get 3+.
        let (reactor, waker) = crate::sys::fd::above_stdio(|| {
            let reactor = Reactor::new()?;
            let waker = reactor.new_waker()?;
            io::Result::Ok((reactor, waker))
        })?;
        let hub_id = NEXT_HUB_ID.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(waker);
        let remote = Arc::new(Remote::new(hub_id, waker.clone()));
        let first = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
        let root = Rc::new(RootTask(Header::new_root(root_id())));
        Ok(Hub {
            tasks: RefCell::new(Slab::new()),
            run_queue: RunQueue::default(),
            timers: RefCell::new(Timers::default()),
            reactor,
            remote,
            stacks: RefCell::new(StackPool::default()),
            root,
            current: Cell::new(std::ptr::null()),
            next_id: Cell::new(first),
            id_end: Cell::new(first + ID_BLOCK),
            background: Cell::new(0),
            since_poll: Cell::new(0),
            budget: Cell::new(crate::coop::BUDGET),
            forced_poll: Cell::new(Instant::now()),
            idle_waiters: RefCell::new(Vec::new()),
            next_scope: Cell::new(1),
            altstack: Cell::new(None),
            root_turn: Cell::new(None),
            deferred: RefCell::new(Vec::new()),
            unwinding_parks: Cell::new(0),
            clock: dump::Clock::new(),
            alone_check_at: Cell::new(0),
            loop_depth: Cell::new(0),
            watch: crate::monitor::Watch::register(waker),
            exiting: Cell::new(false),
            generation,
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
            // `HUB` is cleared before the hub is freed at thread exit, after
            // its shutdown: no coroutine or hub loop that could hold the
            // reference runs then.
            // SAFETY: so a non-null `HUB` points at this thread's live, boxed
            // (never moved) hub, used only on this thread.
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
        // SAFETY: just allocated, never moved; see `current`.
        let hub = unsafe { &*p };
        hub.current.set(&hub.root.0);
        // Published only once complete: installing the signal handler and
        // the owner key may wait on a lock (a `Once`), and under the monkey
        // hooks such a wait asks this thread's hub whether it can park.
        hub.altstack
            .set(crate::sys::signal::install(describe_fault));
        exit::own(p);
        HUB.with(|h| h.set(p));
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

    /// The header of whatever runs now: a coroutine or the root.
    #[inline]
    pub(crate) fn current_header(&self) -> &Header {
        // `current` points at the root's header (owned by the hub), at the
        // header of the running task, which the task slab keeps alive until
        // it is done (it is reset before a finished task is released), or at
        // that of a task that just yielded, which the hub loop holds.
        // SAFETY: so it points at a live header.
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
        if self.current_header().is_root() && self.context_running() {
            // The root, running, now has a coroutine it could block.
            self.watch.company(&self.root.0);
        }
        if h.background {
            self.background.set(self.background.get() + 1);
        }
        if self.exiting.get() {
            // It runs until its first blocking point (see `exit.rs`).
            h.state.request_exit_kill();
        }
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

    /// Live tasks that `run` and `wait` wait for (not background ones).
    pub(crate) fn foreground_tasks(&self) -> usize {
        self.live_tasks() - self.background.get()
    }

    /// A background task left the table.
    pub(super) fn background_done(&self) {
        self.background.set(self.background.get() - 1);
    }
}

/// The stack-overflow report for a fault at `addr` (the SIGSEGV handler's
/// question, see `sys/signal.rs`): if `addr` is in the guard page of the
/// coroutine running on this thread, or of the greenlet running innermost,
/// writes the one-line message and returns true.
///
/// Async-signal-safe: reads the hub pointer from a `const` thread-local (a
/// plain TLS load, no lazy initialisation) and the running task's header
/// fields; allocates nothing, takes no lock.
fn describe_fault(addr: usize, out: &mut Report) -> bool {
    let Some(hub) = Hub::try_current() else {
        return false;
    };
    let h = hub.current_header();
    let lo = h.guard.get();
    let hi = lo + crate::sys::stack::page_size();
    let size = if !h.is_root() && lo <= addr && addr < hi {
        out.push(b"moss: coroutine ");
        h.stack_size()
    } else if crate::greenlet::in_running_guard(addr) {
        // Named after the coroutine (or root) that runs it.
        out.push(b"moss: a greenlet of coroutine ");
        crate::greenlet::STACK_SIZE
    } else {
        return false;
    };
    match &h.name {
        Some(n) => {
            out.push(b"'");
            out.push(n.as_bytes());
            out.push(b"' ");
        }
        None => out.push(b"<unnamed> "),
    }
    out.push(b"(#");
    out.push_num(h.id.0);
    out.push(b") has overflowed its stack of ");
    out.push_num((size / 1024) as u64);
    out.push(b" KiB\n");
    true
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Before any control block is freed: the monitor may be reading one.
        self.watch.retire();
        // What is left after `shutdown` can never make progress: leaked, not
        // unwound (that would need the hub loop that is going away). Their
        // stacks stay mapped (and unused) for the process's life.
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
