//! The hub loop.
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
//!   └─────────┤ nothing ready, no timer, no I/O waiter, and no cross-thread │
//!             │ waker or no other thread: "would block forever"             │
//!             └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! The loop runs on the root (the thread's own stack) whenever the root blocks
//! on a moss call; coroutines always suspend back into it. There is no
//! separate hub stack: a coroutine-to-coroutine switch is suspend + resume.
//! A coroutine's stack is bound when it first runs and returned to the pool
//! as soon as its body returns.

use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;

use super::{BATCH, Hub};
use crate::stack_pool::DEFAULT_STACK_SIZE;
use crate::task::{
    Header, LinkRunner, State, Task, TaskCell, Thin, Token, Wakeup, header_of, into_thin,
    may_unwind,
};
use crate::timer::Action;

/// When the root's hub loop returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// The root was woken (its park or yield ended).
    RootReady,
    /// No task of this hub is left but background ones.
    NoTasks,
    /// No task at all is left (the hub shuts down).
    Empty,
}

/// FIFO of ready tasks: a ring of slots, its capacity a power of two (an
/// index wraps with a mask), grown by doubling when full. A task is kept
/// as a thin pointer to its header (see `Thin`), owning one count of its
/// `Rc`.
///
/// # Invariants
/// The ring is only accessed through these methods, none of which calls
/// out to code that could touch the queue again (no user code, no drops of
/// tasks: `pop` moves the task out, `push` writes a slot), so no two
/// references to it are ever alive at once. The hub is `!Sync` (one
/// thread).
#[derive(Default)]
pub(super) struct RunQueue(std::cell::UnsafeCell<Ring>);

#[derive(Default)]
struct Ring {
    /// `len` tasks from `head` on (wrapping), each from `Thin::into_raw`;
    /// the other slots hold null or stale pointers, never read. Empty or a
    /// power of two long, and not empty while `len > 0`.
    slots: Vec<*const Header>,
    /// `slots.len() - 1` once there are slots (an index wraps with it).
    mask: usize,
    head: usize,
    len: usize,
}

impl Ring {
    /// The slot `i` (any number: it wraps), of a ring that has slots.
    #[inline(always)]
    fn slot(&mut self, i: usize) -> &mut *const Header {
        debug_assert!(self.slots.len().is_power_of_two());
        debug_assert_eq!(self.mask, self.slots.len() - 1);
        let i = i & self.mask;
        // SAFETY: the ring has slots (the caller's promise), a power of two
        // of them, and `mask` is their number less one (the type's
        // invariants): masked with it, `i` is one of them.
        unsafe { self.slots.get_unchecked_mut(i) }
    }

    /// The task in the live slot `i`, moved out (the slot is then stale).
    #[inline(always)]
    fn take(&mut self, i: usize) -> Thin {
        let p = *self.slot(i);
        // SAFETY: a live slot holds a pointer from `Thin::into_raw`, read
        // once: the caller makes the slot stale.
        unsafe { Thin::from_raw(NonNull::new_unchecked(p.cast_mut())) }
    }

    #[inline(always)]
    fn push(&mut self, t: Thin) {
        if self.len == self.slots.len() {
            self.grow();
        }
        let i = self.head + self.len;
        *self.slot(i) = t.into_raw().as_ptr();
        self.len += 1;
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<Thin> {
        if self.len == 0 {
            return None;
        }
        let head = self.head;
        let t = self.take(head);
        self.head = (head + 1) & self.mask;
        self.len -= 1;
        Some(t)
    }

    /// `push(t)` then `pop()` in one step: the task that runs next (`t`
    /// itself if the ring is empty).
    #[inline(always)]
    fn rotate(&mut self, t: Thin) -> Thin {
        if self.len == 0 {
            return t;
        }
        let head = self.head;
        let next = self.take(head);
        // The front slot if the ring is full (`head + len` wraps to it):
        // taken just now.
        *self.slot(head + self.len) = t.into_raw().as_ptr();
        self.head = (head + 1) & self.mask;
        next
    }

    /// Doubles the ring (at least 64 slots), its tasks in order from slot 0.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(64);
        let mut slots: Vec<*const Header> = Vec::with_capacity(cap);
        for k in 0..self.len {
            let i = self.head + k;
            slots.push(*self.slot(i));
        }
        slots.resize(cap, std::ptr::null());
        self.slots = slots;
        self.mask = cap - 1;
        self.head = 0;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        while let Some(t) = self.pop() {
            drop(t);
        }
    }
}

impl RunQueue {
    #[inline]
    pub(super) fn push(&self, t: Rc<dyn Task>) {
        self.push_thin(into_thin(t));
    }

    #[inline]
    pub(super) fn push_thin(&self, t: Thin) {
        // SAFETY: see the type's invariants: no other reference is alive.
        unsafe { (*self.0.get()).push(t) }
    }

    #[inline]
    pub(super) fn pop(&self) -> Option<Thin> {
        // SAFETY: see the type's invariants.
        unsafe { (*self.0.get()).pop() }
    }

    /// Queues `t` and takes the front: the task to run next.
    #[inline]
    pub(super) fn rotate(&self, t: Thin) -> Thin {
        // SAFETY: see the type's invariants.
        unsafe { (*self.0.get()).rotate(t) }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        // SAFETY: see the type's invariants.
        unsafe { (*self.0.get()).len == 0 }
    }
}

/// One more hub loop on the root's stack while alive (also when the loop
/// panics).
struct Nested<'a>(&'a std::cell::Cell<u32>);

impl<'a> Nested<'a> {
    fn enter(depth: &'a std::cell::Cell<u32>) -> Nested<'a> {
        depth.set(depth.get() + 1);
        Nested(depth)
    }
}

impl Drop for Nested<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Hub {
    /// Runs the loop on the root stack until `done()` holds. When nothing can
    /// ever make progress: panics if `strict`, else returns false.
    pub(crate) fn run_until(&self, until: Until, strict: bool) -> bool {
        debug_assert!(!self.in_coroutine(), "the hub loop runs on the root only");
        if self.inherited() {
            self.refuse_inherited();
        }
        // The monitor: the loop blocks nobody; the root after it does if
        // the hub has coroutines, unless this loop ran inside another (a
        // destructor run by the loop blocked). After a panic here nobody
        // is blamed.
        self.watch.switch_to(std::ptr::null());
        let r = {
            let _depth = Nested::enter(&self.loop_depth);
            self.run_loop(until, strict)
        };
        let blame_root = self.loop_depth.get() == 0 && self.live_tasks() > 0;
        self.watch.switch_to(if blame_root {
            &self.root.0
        } else {
            std::ptr::null()
        });
        r
    }

    fn run_loop(&self, until: Until, strict: bool) -> bool {
        // The common case (a parked root) gets a loop of its own, with the
        // test inlined.
        match until {
            Until::RootReady => self.run_loop_with(|| !self.root.0.state.is(State::Parked), strict),
            Until::NoTasks => self.run_loop_with(|| self.foreground_tasks() == 0, strict),
            Until::Empty => self.run_loop_with(|| self.live_tasks() == 0, strict),
        }
    }

    #[inline(always)]
    fn run_loop_with(&self, done: impl Fn() -> bool, strict: bool) -> bool {
        loop {
            if done() {
                return true;
            }
            if let Some(mut t) = self.run_queue.pop() {
                loop {
                    let yielded = self.resume(t);
                    if done() {
                        if let Some(t) = yielded {
                            self.yielded_aside(t);
                        }
                        return true;
                    }
                    // BATCH resumes (or fast yields) since the last poll, or
                    // a context that spent its budget: poll before going on.
                    if self.since_poll.get() >= BATCH {
                        if let Some(t) = yielded {
                            self.yielded_aside(t);
                        }
                        break;
                    }
                    t = match yielded {
                        // To the back of the queue, and the front runs.
                        Some(t) => self.run_queue.rotate(t),
                        None => match self.run_queue.pop() {
                            Some(t) => t,
                            None => break,
                        },
                    };
                }
            }
            // Nobody runs while the loop polls (the last task resumed
            // still counts as running until here: see `resume`).
            self.watch.switch_to(std::ptr::null());
            if !self.deferred.borrow().is_empty() {
                self.wake_deferred();
            }
            let timeout = if !self.run_queue.is_empty() {
                Some(Duration::ZERO)
            } else {
                match self.timers.borrow().next_deadline() {
                    Some(d) => Some(d.saturating_duration_since(Instant::now())),
                    None if self.reactor.has_waiters() || self.remote.has_items() => None,
                    None => match self.until_alone_check() {
                        Some(d) => Some(d),
                        None if strict => self.block_forever(),
                        None => return false,
                    },
                }
            };
            self.poll_once(timeout);
        }
    }

    /// Wakes the infallible waits that deferred a cancellation, once no
    /// context of this thread is unwinding (they then take it).
    #[cold]
    fn wake_deferred(&self) {
        if !may_unwind() {
            return;
        }
        let waits = std::mem::take(&mut *self.deferred.borrow_mut());
        for t in waits {
            self.wake(t, Wakeup::Cancelled);
        }
    }

    #[cold]
    fn block_forever(&self) -> ! {
        panic!(
            "moss: this operation would block forever: the {} is waiting on '{}', and no \
             coroutine is runnable, no timer is pending, no I/O is awaited and nothing on \
             another thread can wake this hub ({} coroutines blocked). What each one waits \
             on:\n{}",
            if self.in_coroutine() {
                "coroutine"
            } else {
                "root"
            },
            self.current_header().waiting_on.get(),
            self.live_tasks(),
            self.dump(),
        )
    }

    /// For a hub about to sleep with nothing ready, no timer, no I/O waiter
    /// and no wake-up queued: how long it may sleep before it looks again
    /// whether anything could still wake it, or `None` if nothing can.
    ///
    /// Only an `Unparker` could: every live one holds a clone of `remote`
    /// (the hub holds one more). Every `moss::sync` waiter holds one, and
    /// whether another thread can still reach that object is unknowable; but
    /// with no other thread in the process, nothing can use it: this
    /// thread's coroutines are all parked, other processes reach it only
    /// through fds (I/O waiters), and signals through moss's eventfd (one
    /// too). The thread count is read at most once per `ALONE_CHECK_MS`, so
    /// a hub that other threads wake often does not read `/proc` per sleep,
    /// and a hub whose last other thread ended finds out within that time.
    fn until_alone_check(&self) -> Option<Duration> {
        const ALONE_CHECK_MS: u32 = 1000;
        let no_unparker = Arc::strong_count(&self.remote) == 1;
        // With the Release of the decrement that dropped the last clone: a
        // wake-up pushed before that `Unparker` was dropped is seen below.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        if no_unparker && !self.remote.has_items() {
            return None;
        }
        let now = self.clock.stamp();
        let left = self.alone_check_at.get().wrapping_sub(now);
        if left > 0 && left <= ALONE_CHECK_MS {
            return Some(Duration::from_millis(left.into()));
        }
        if self.alone() {
            return None;
        }
        self.alone_check_at.set(now.wrapping_add(ALONE_CHECK_MS));
        Some(Duration::from_millis(ALONE_CHECK_MS.into()))
    }

    /// No other thread exists that could wake this hub (the monitor's only
    /// reads), and none left a wake-up behind before it ended (read after
    /// the count: a thread's last push happens before its exit).
    #[cold]
    fn alone(&self) -> bool {
        // Read before the count: a monitor that starts or ends in between
        // makes the count look too high, never too low.
        let monitor = usize::from(crate::monitor::thread_alive());
        crate::sys::process::thread_count() == Some(1 + monitor) && !self.remote.has_items()
    }

    /// Runs one task until it parks, yields or returns; returns it if it
    /// yielded (for the caller to queue).
    ///
    /// The blocked-hub monitor sees the task as running from the switch in
    /// until the loop's next switch or poll (a task that yielded or parked
    /// is alive until then: it is in the queue or the task table), or until
    /// it finishes (its header may be freed from then on).
    #[inline(always)]
    fn resume(&self, t: Thin) -> Option<Thin> {
        self.since_poll.set(self.since_poll.get() + 1);
        let h = t.header();
        // The cell is only touched here, in `resume_other`, `switch_into`
        // and `returned` (on the hub loop, root stack) and in
        // `finish_unstarted` (a task that never ran), never by the task's code.
        // SAFETY: so no other reference to it is alive now.
        let started = unsafe { (*h.coroutine.get()).is_some() };
        // A started task, ready: the hot path. The root, a task not
        // started yet and a task killed while queued go the long way.
        if started && h.state.is(State::Ready) {
            self.switch_into(t)
        } else {
            self.resume_other(t.into_rc())
        }
    }

    /// A task that yielded does not run next after all: it is queued, and
    /// the loop is the root's again (see `switch_into`).
    #[inline(never)]
    fn yielded_aside(&self, t: Thin) {
        self.current.set(&self.root.0);
        self.run_queue.push_thin(t);
    }

    /// `resume` of the root (its turn in the queue), a task that has not
    /// started, or one that finished while queued.
    #[cold]
    #[inline(never)]
    fn resume_other(&self, t: Rc<dyn Task>) -> Option<Thin> {
        // After a yield (see `switch_into`).
        self.current.set(&self.root.0);
        let h = header_of(&t);
        if h.is_root() {
            // The root queued itself in `yield_now`: its turn ends that park
            // (unless something else ended it first).
            if let Some(seq) = self.root_turn.take() {
                h.state.wake(seq, Wakeup::Notified);
            }
            return None;
        }
        match h.state.get() {
            State::New => {}
            State::Done => return None, // killed while queued
            s => unreachable!("resume of a task in state {s:?}"),
        }
        // SAFETY: as in `resume`.
        let coro = unsafe { &mut *h.coroutine.get() };
        if coro.is_none() {
            let stack = self.stacks.borrow_mut().take(h.stack_size());
            let stack = match stack {
                Ok(s) => s,
                Err(e) => {
                    self.finish_unstarted(&t, Some(e));
                    return None;
                }
            };
            *coro = Some(bind(&t, stack));
        }
        self.switch_into(into_thin(t))
    }

    /// Switches into `t`, a task with a coroutine, until it parks, yields
    /// or returns; returns it if it yielded.
    #[inline(always)]
    fn switch_into(&self, t: Thin) -> Option<Thin> {
        let h = t.header();
        // SAFETY: as in `resume`; both callers checked that the cell holds
        // a coroutine (or bound one), and nothing touched it since.
        let c = unsafe { (*h.coroutine.get()).as_mut().unwrap_unchecked() };
        h.state.resume();
        self.budget.set(crate::coop::BUDGET);
        debug_assert!(
            self.current_header().is_root() || self.current_header().state.is(State::Ready)
        );
        self.current.set(h);
        self.watch.switch_to(h);
        let r = c.resume(());
        match r {
            // It yielded: queued again by the caller, no refcount traffic.
            // It stays `current` while the loop only picks the next task
            // (which replaces it), else the caller makes the root current
            // again (`yielded_aside`).
            CoroutineResult::Yield(()) if h.state.is(State::Ready) => Some(t),
            // It parked.
            CoroutineResult::Yield(()) => {
                self.current.set(&self.root.0);
                drop(t);
                None
            }
            CoroutineResult::Return(()) => {
                self.current.set(&self.root.0);
                self.returned(t.into_rc());
                None
            }
        }
    }

    /// The body of `t` returned: its stack goes back to the pool, the task
    /// is finished.
    #[inline(never)]
    fn returned(&self, t: Rc<dyn Task>) {
        // Its header may be freed from now on.
        self.watch.switch_to(std::ptr::null());
        // SAFETY: as in `resume`; the coroutine is over.
        let coro = unsafe { &mut *header_of(&t).coroutine.get() };
        let stack = coro.take().expect("coroutine present").into_stack();
        self.stacks.borrow_mut().give(stack);
        self.finish(&t);
    }

    /// Marks `t` done, releases its slab entry and wakes its joiners.
    pub(crate) fn finish(&self, t: &Rc<dyn Task>) {
        t.header().state.complete();
        self.release(t);
    }

    /// The rest of `finish` for a task already `Done`: releases its slab
    /// entry and timer, wakes its joiners.
    fn release(&self, t: &Rc<dyn Task>) {
        // Its control block may be freed from now on.
        self.watch.before_free();
        let h = t.header();
        if let Some(k) = h.timer.take() {
            self.timers.borrow_mut().cancel(k);
        }
        if self
            .tasks
            .borrow_mut()
            .try_remove(h.key.get() as usize)
            .is_some()
            && h.background
        {
            self.background_done();
        }
        self.wake_joiners(h);
        if !self.idle_waiters.borrow().is_empty() {
            let waiters = std::mem::take(&mut *self.idle_waiters.borrow_mut());
            for w in waiters {
                self.wake(w, Wakeup::Notified);
            }
        }
    }

    /// Wakes (and forgets) the waiters for `h` to finish: its joiners.
    pub(crate) fn wake_joiners(&self, h: &Header) {
        let j = h.joiner.replace(Token::NONE);
        if j != Token::NONE {
            self.wake(j, Wakeup::Notified);
        }
        if let Some(more) = h.more_joiners.take() {
            for j in *more {
                self.wake(j, Wakeup::Notified);
            }
        }
    }

    /// Completes a task that never ran (killed before its start, or no
    /// stack: `err`), then starts its link callbacks, if it has any, in a
    /// coroutine of their own (named "link"; if that one cannot get a stack
    /// either, they are dropped without running).
    ///
    /// Its closure's destructors run in the caller when it is a running
    /// context (a coroutine, or the root outside the hub loop), where they
    /// may block like any code. Called by the hub loop itself (the task got
    /// no stack), where nothing can block, they run in a coroutine of their
    /// own (named "unstarted", its stack bound now), which then finishes the
    /// task: either way it has no result until its destructors are over (a
    /// join or a link meanwhile waits for them), then its joiners wake. If
    /// not even that coroutine can have a stack, the closure and the links
    /// are leaked (a destructor that blocked in the loop would break the
    /// hub).
    pub(crate) fn finish_unstarted(&self, t: &Rc<dyn Task>, err: Option<std::io::Error>) {
        // Done first: the destructors may run the hub loop (a blocking call
        // on the root); the loop must skip this task, still in the run queue.
        t.header().state.complete();
        // SAFETY: the task never ran: nothing uses its coroutine cell.
        if let Some(mut c) = unsafe { &mut *t.header().coroutine.get() }.take() {
            // A hub coroutine bound at its spawn (below), killed before its
            // start: its initial closure holds a clone of `t`.
            c.force_unwind();
            self.stacks.borrow_mut().give(c.into_stack());
        }
        let closure = t.take_unstarted();
        // Ends `t` also when a destructor unwinds (a panic, a kill).
        let mut end = ReleaseUnstarted {
            task: t.clone(),
            err,
            run_links: true,
        };
        if self.context_running() {
            return closure();
        }
        let stack = self.stacks.borrow_mut().take(DEFAULT_STACK_SIZE);
        let Ok(stack) = stack else {
            std::mem::forget(closure);
            end.run_links = false;
            return;
        };
        let site = t.header().spawn_site;
        let drops = self.helper_task(
            "unstarted",
            site,
            Box::new(move || {
                let _end = end;
                closure();
            }),
        );
        // SAFETY: `drops` was made just now: nothing else refers to its
        // coroutine cell yet.
        unsafe { *drops.header().coroutine.get() = Some(bind(&drops, stack)) };
        self.spawn(drops, None);
    }

    /// A coroutine of the hub's own, named `name`, running `f` on a default
    /// stack; `site` is the spawn site of the task it serves.
    fn helper_task(
        &self,
        name: &str,
        site: &'static std::panic::Location<'static>,
        f: LinkRunner,
    ) -> Rc<dyn Task> {
        let h = Header::new(
            self.new_id(),
            Some(Rc::from(name)),
            DEFAULT_STACK_SIZE,
            site,
        );
        Rc::new(TaskCell::new(h, f))
    }

    /// Polls I/O and the cross-thread queue, waiting at most `timeout`
    /// (`None`: until an event), then fires due timers.
    pub(crate) fn poll_once(&self, timeout: Option<Duration>) {
        self.since_poll.set(0);
        let sleeping = timeout != Some(Duration::ZERO);
        if sleeping || self.reactor.has_registrations() {
            let mut timeout = timeout;
            if sleeping && !self.remote.begin_sleep() {
                timeout = Some(Duration::ZERO);
            }
            self.reactor.poll(self, timeout);
            if sleeping {
                self.remote.end_sleep();
            }
        }
        for t in self.remote.drain() {
            self.wake(t, Wakeup::Notified);
        }
        self.clock.tick();
        if self.watch.dump_wanted() {
            self.watch.answer_dumps(|| self.dump());
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
                    if let Some(t) = self.task(tok.key, tok.id)
                        && t.header().state.request_timeout(scope)
                    {
                        self.wake_parked(&t, Wakeup::Cancelled);
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
}

/// The end of [`Hub::finish_unstarted`] once the closure's destructors are
/// over (or unwound): stores the result, wakes the joiners, starts the link
/// callbacks (or leaks them: `run_links` false, no stack to run them on).
struct ReleaseUnstarted {
    task: Rc<dyn Task>,
    err: Option<std::io::Error>,
    run_links: bool,
}

impl Drop for ReleaseUnstarted {
    fn drop(&mut self) {
        let hub = Hub::current();
        let links = self.task.finish_unstarted(self.err.take());
        hub.release(&self.task);
        let Some(f) = links else { return };
        if !self.run_links {
            return std::mem::forget(f);
        }
        let link = hub.helper_task("link", self.task.header().spawn_site, f);
        hub.spawn(link, None);
    }
}

/// The coroutine that runs `t`'s body on `stack`.
fn bind(t: &Rc<dyn Task>, stack: crate::sys::stack::Stack) -> crate::task::Coro {
    t.header().guard.set(stack.guard_range().0);
    let body = t.clone();
    corosensei::Coroutine::with_stack(stack, move |y, ()| {
        body.header().yielder.set(y);
        body.run();
    })
}
