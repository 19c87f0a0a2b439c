//! A coroutine's control block ([`Header`]), the typed cell that holds its
//! closure and result ([`TaskCell`]), and the error a failed join returns.
//!
//! The life cycle and the cancellation state live in [`state`]: a context's
//! [`TaskState`] changes only through the transitions named there.
//!
//! The root (the thread's own stack) has a control block too; it is never
//! `New` or `Done`, and "resuming" it means returning from the hub loop that
//! runs on its stack.
//!
//! # Links
//!
//! `JoinHandle::link` callbacks live in the [`TaskCell`] next to the result
//! they are given. A coroutine that ran calls them itself, on its own stack,
//! after its body returned and before its result is stored: its joiners wake
//! only once every callback has run, and a callback may block like any
//! coroutine code. A coroutine that never ran (killed before its start, or no
//! stack) has no stack to call them on: [`Task::finish_unstarted`] hands them
//! back, with a copy of the error, for the hub to run in a coroutine of their
//! own. A callback registered on a finished task runs at once, in the caller.
//! A panicking callback is caught (the panic hook reports it) and the other
//! callbacks still run.

mod error;
mod state;

pub use error::{Cancelled, JoinError};
pub use state::Wakeup;
pub(crate) use state::{Cancel, Seen, State, TaskState, may_unwind};

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::ptr::NonNull;
use std::rc::Rc;

use corosensei::{Coroutine, Yielder};

use crate::sys::stack::Stack;
use crate::timer::TimerKey;
use error::Repr;

/// The corosensei coroutine type every task runs on.
pub(crate) type Coro = Coroutine<(), (), (), Stack>;

/// The slab key reserved for the root's control block.
pub(crate) const ROOT_KEY: u32 = u32::MAX;

/// A coroutine's identity, unique within the process.
///
/// ```
/// let h = moss::spawn(|| moss::current().id());
/// let id = h.id();
/// assert_eq!(h.join().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CoroutineId(pub(crate) u64);

impl CoroutineId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CoroutineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a waker points: a task (by slab key and id) and the wait it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub key: u32,
    pub id: u64,
    pub seq: u64,
}

impl Token {
    /// No waiter (no coroutine has id 0): an empty `Header::joiner` without
    /// the eight bytes an `Option` would add to every control block.
    pub(crate) const NONE: Token = Token {
        key: 0,
        id: 0,
        seq: 0,
    };
}

/// The control block shared by the hub, the coroutine and its `JoinHandle`.
pub(crate) struct Header {
    pub id: CoroutineId,
    pub key: Cell<u32>,
    pub name: Option<Rc<str>>,
    /// In bytes (at most `MAX_STACK_SIZE`, so a `u32`: it shares a word with
    /// `parked_at`); read through [`Header::stack_size`].
    stack_size: u32,
    pub spawn_site: &'static Location<'static>,
    /// A background coroutine: `run` and `wait` do not wait for it.
    pub background: bool,
    /// Its `JoinHandle` is gone: nobody can read the result, which the
    /// coroutine then drops itself, on its own stack, where a destructor may
    /// block (see `TaskCell::run`).
    pub detached: Cell<bool>,
    /// Life cycle and cancellation: changed only through its transitions.
    pub state: TaskState,
    /// What a parked task waits on, for `dump`.
    pub waiting_on: Cell<&'static str>,
    /// When its current park began, on the hub's coarse clock (for `dump`).
    pub parked_at: Cell<u32>,
    pub timer: Cell<Option<TimerKey>>,
    /// The first waiter for this task to finish (the usual single `join`),
    /// or `Token::NONE`.
    pub joiner: Cell<Token>,
    /// Further waiters (a `kill` and a `join` at once, say).
    /// Boxed so the rare case costs the header one word, not three.
    #[allow(clippy::box_collection)]
    pub more_joiners: Cell<Option<Box<Vec<Token>>>>,
    /// Bound on first resume (or at its spawn, for the hub's own
    /// "unstarted" coroutines), taken back when the body returns.
    pub coroutine: UnsafeCell<Option<Coro>>,
    /// What the coroutine suspends with (set when its body starts). Null
    /// for the root, and while the coroutine drives greenlets (it cannot
    /// suspend then: see `greenlet.rs`), so one test tells the hub's
    /// `yield_now` that it may switch.
    pub yielder: Cell<*const Yielder<(), ()>>,
    /// Lowest address of the bound stack's guard page (one page), for the
    /// overflow handler; 0 while no stack is bound.
    pub guard: Cell<usize>,
    /// Coroutine-local values and greenlet families (`local.rs` owns the
    /// pointer): null until the coroutine first uses a local or a greenlet.
    /// No drop glue: the map is freed at the
    /// end of the body, or leaked with a coroutine that never ends.
    pub locals: Cell<*mut crate::local::LocalMap>,
    /// Turns a pointer to this header, made from an `Rc` of its task by
    /// [`into_thin`], back into that `Rc` (the run queue keeps tasks
    /// as thin pointers).
    revive: Revive,
}

/// See [`Header::revive`].
type Revive = unsafe fn(NonNull<Header>) -> Rc<dyn Task>;

/// The [`Revive`] of a task type `X` (`repr(C)` with its header first).
///
/// # Safety
/// `h` comes from [`into_thin`] of an `Rc<dyn Task>` made from an
/// `Rc<X>`, and is revived once.
unsafe fn revive<X: Task + 'static>(h: NonNull<Header>) -> Rc<dyn Task> {
    // SAFETY: the caller's promise: `h` is the data pointer of an `Rc<X>`
    // unsized into an `Rc<dyn Task>` and turned into a raw pointer whose
    // count it owns (`X` puts its header first, at the data pointer).
    unsafe { Rc::<X>::from_raw(h.as_ptr().cast::<X>()) }
}

/// A task queued as a thin pointer to its header, owning one count of its
/// `Rc` (given back when dropped).
pub(crate) struct Thin(NonNull<Header>);

impl Thin {
    /// The task's header.
    #[inline(always)]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `self` owns a count of the task's `Rc`, so the header
        // (first in the task) is alive while `self` is.
        unsafe { self.0.as_ref() }
    }

    /// The task's `Rc` again.
    #[inline]
    pub(crate) fn into_rc(self) -> Rc<dyn Task> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` owns the count and is never dropped: the pointer is
        // revived once.
        unsafe { (me.header().revive)(me.0) }
    }

    /// The pointer, for a container that keeps it (see [`Thin::from_raw`]);
    /// the count stays owned.
    #[inline(always)]
    pub(crate) fn into_raw(self) -> NonNull<Header> {
        std::mem::ManuallyDrop::new(self).0
    }

    /// A pointer from [`Thin::into_raw`] again.
    ///
    /// # Safety
    /// `p` comes from `into_raw` and is made into a `Thin` once.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(p: NonNull<Header>) -> Thin {
        Thin(p)
    }
}

impl Drop for Thin {
    fn drop(&mut self) {
        // SAFETY: `self` owns the count and goes away now: the pointer is
        // revived once.
        drop(unsafe { (self.header().revive)(self.0) });
    }
}

/// Makes `t` a [`Thin`] (no count changes).
#[inline(always)]
pub(crate) fn into_thin(t: Rc<dyn Task>) -> Thin {
    let p = Rc::into_raw(t).cast::<Header>().cast_mut();
    // SAFETY: `Rc::into_raw` never returns null; the data pointer of every
    // task is its header (see `header_of`).
    Thin(unsafe { NonNull::new_unchecked(p) })
}

impl Header {
    pub(crate) fn new(
        id: CoroutineId,
        name: Option<Rc<str>>,
        stack_size: usize,
        spawn_site: &'static Location<'static>,
    ) -> Header {
        Header {
            id,
            key: Cell::new(ROOT_KEY),
            name,
            stack_size: u32::try_from(stack_size).expect("stack sizes are at most 1 GiB"),
            spawn_site,
            background: false,
            detached: Cell::new(false),
            state: TaskState::new(),
            waiting_on: Cell::new(""),
            parked_at: Cell::new(0),
            timer: Cell::new(None),
            joiner: Cell::new(Token::NONE),
            more_joiners: Cell::new(None),
            coroutine: UnsafeCell::new(None),
            yielder: Cell::new(std::ptr::null()),
            guard: Cell::new(0),
            locals: Cell::new(std::ptr::null_mut()),
            // Replaced by `TaskCell::new`.
            revive: revive::<RootTask>,
        }
    }

    /// The control block of a thread's root: running from the start.
    pub(crate) fn new_root(id: CoroutineId) -> Header {
        Header {
            state: TaskState::new_root(),
            ..Header::new(id, Some(Rc::from("main")), 0, Location::caller())
        }
    }

    /// The size of the stack it runs on, in bytes.
    pub(crate) fn stack_size(&self) -> usize {
        self.stack_size as usize
    }

    /// Registers `t` to be woken when this task finishes.
    pub(crate) fn add_joiner(&self, t: Token) {
        let old = self.joiner.get();
        // None yet, or the same context re-registering for its next wait.
        if old == Token::NONE || (old.key == t.key && old.id == t.id) {
            self.joiner.set(t);
        } else {
            let mut more = self.more_joiners.take().unwrap_or_default();
            more.push(t);
            self.more_joiners.set(Some(more));
        }
    }

    pub(crate) fn token(&self) -> Token {
        Token {
            key: self.key.get(),
            id: self.id.0,
            seq: self.state.park_seq(),
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        self.key.get() == ROOT_KEY
    }

    /// "name" or "#id", for messages.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("'{n}' (#{})", self.id),
            None => format!("#{}", self.id),
        }
    }
}

/// The type-erased task the hub schedules.
pub(crate) trait Task {
    fn header(&self) -> &Header;
    /// Runs the body to completion on the coroutine's stack, storing its result.
    fn run(&self);
    /// Takes the closure of a task that never ran; it is dropped (user
    /// destructors run) when the returned box is called or dropped. Until
    /// [`finish_unstarted`](Task::finish_unstarted) the task has no result:
    /// a join meanwhile waits for the destructors, as for any coroutine.
    fn take_unstarted(&self) -> Dropper;
    /// Completes a task that never ran, once its closure is dropped, as
    /// killed (or unable to start with `err`). Returns its link callbacks,
    /// bound to a copy of its result, for the caller to run in a coroutine
    /// of their own.
    fn finish_unstarted(&self, err: Option<io::Error>) -> Option<LinkRunner>;
}

/// The closure of a task that never ran: calling the box (or dropping it)
/// drops the closure.
pub(crate) type Dropper = Box<dyn FnOnce()>;

/// A `JoinHandle::link` callback.
pub(crate) type LinkFn<T> = Box<dyn FnOnce(&Result<T, JoinError>)>;

/// The link callbacks of a task that never ran, with their result.
pub(crate) type LinkRunner = Box<dyn FnOnce()>;

/// The typed side a `JoinHandle` reads.
/// Implemented by [`TaskCell`] only (`slot_header` relies on it).
pub(crate) trait JoinSlot<T> {
    fn take(&self) -> Option<Result<T, JoinError>>;
    /// Registers a link callback; on a finished task, calls it now.
    fn link(&self, f: LinkFn<T>);
    /// `Some(true)` once the result is stored and is a value.
    fn is_ok(&self) -> Option<bool>;
}

enum Slot<F, T> {
    Pending(F),
    Running,
    Done(Result<T, JoinError>),
    Taken,
}

/// A task with its closure and result in one allocation.
///
/// `repr(C)` with the header first, so [`header_of`] can find the header of
/// an erased task without a virtual call.
///
/// # Invariants
/// `slot` goes `Pending → Running → Done → Taken` (a task that never ran is
/// `Running` while its closure is dropped). Once it is `Done`, only [`JoinSlot::take`] changes
/// it, and only a `JoinHandle` consumed by value calls `take` (there is one
/// handle per task): so while a `&JoinHandle` is alive, a `Done` result can
/// be lent out (`link` on a finished task).
#[repr(C)]
pub(crate) struct TaskCell<F, T> {
    header: Header,
    slot: UnsafeCell<Slot<F, T>>,
    /// Link callbacks not run yet (boxed: one word while there are none).
    #[allow(clippy::box_collection)]
    links: Cell<Option<Box<Vec<LinkFn<T>>>>>,
}

impl<F, T> TaskCell<F, T>
where
    F: FnOnce() -> T,
{
    pub(crate) fn new(header: Header, f: F) -> TaskCell<F, T>
    where
        T: 'static,
        F: 'static,
    {
        TaskCell {
            header: Header {
                revive: revive::<TaskCell<F, T>>,
                ..header
            },
            slot: UnsafeCell::new(Slot::Pending(f)),
            links: Cell::new(None),
        }
    }

    /// Runs the link callbacks registered so far, and those they register.
    fn run_links(&self, result: &Result<T, JoinError>) {
        while let Some(links) = self.links.take() {
            for f in *links {
                // The finishing coroutine's own cancellation (a kill that
                // reached a blocked callback) ends that callback only.
                let _ = call_link(f, result);
            }
        }
    }

    fn replace(&self, new: Slot<F, T>) -> Slot<F, T> {
        // The slot is swapped only here (by `run`, `take_unstarted`,
        // `finish_unstarted` and `take`, which swap the value out at once and hold no reference
        // across a call); the shared looks of `is_ok` end before any call, and `link`
        // lends a `Done` result only while the task's one `JoinHandle` is
        // borrowed, when `take` (which consumes that handle) cannot run.
        // SAFETY: so no reference into the slot lives here (the hub is single
        // threaded; see the type's invariants), and this `&mut` is unique.
        unsafe { std::mem::replace(&mut *self.slot.get(), new) }
    }
}

impl<F, T: 'static> Task for TaskCell<F, T>
where
    F: FnOnce() -> T + 'static,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(&self) {
        let Slot::Pending(f) = self.replace(Slot::Running) else {
            unreachable!("a task body runs once")
        };
        let r = catch_unwind(AssertUnwindSafe(f));
        if crate::hub::forked_away(&self.header) {
            // It forked, and this is the child: the frames it would return
            // to are its parent's hub loop (see the hub's `fork.rs`).
            crate::hub::forked_coroutine_returned(r.is_err());
        }
        // A kill that a non-unwinding wait (a monkey hook) reported as a
        // failed call, with no moss blocking point after it to deliver it:
        // the coroutine ended because of the kill (returning the failure, or
        // panicking on it: std code that unwraps), so say so. A panic that
        // was unwinding already when the kill was seen is reported as such.
        let kill_seen = match self.header.state.pending() {
            Some(Cancel::Kill) => self.header.state.seen(),
            _ => Seen::No,
        };
        let result = match r {
            Ok(_) if kill_seen != Seen::No => Err(JoinError::new(&self.header, Repr::Killed)),
            Err(_) if kill_seen == Seen::Running => Err(JoinError::new(&self.header, Repr::Killed)),
            Ok(v) => Ok(v),
            Err(payload) => Err(JoinError::from_payload(&self.header, payload)),
        };
        if self.has_links() {
            // The body is over: a cancellation it never reached has nothing
            // left to cancel (a kill requested from now on still reaches a
            // blocked callback).
            self.header.state.take_cancel();
            self.run_links(&result);
        }
        // Still on the coroutine's stack, after the links (which may use
        // them): its locals' destructors may block.
        let result = if !self.header.locals.get().is_null() {
            crate::local::end(&self.header, result)
        } else {
            result
        };
        if self.header.detached.get() {
            match result {
                // Nothing to drop (spawn-and-forget of a plain value).
                Ok(_) if !std::mem::needs_drop::<T>() => {}
                r => drop_detached(r),
            }
        } else {
            self.replace(Slot::Done(result));
        }
    }

    fn take_unstarted(&self) -> Dropper {
        // `Running` while the closure is dropped: no result yet.
        let old = self.replace(Slot::Running);
        Box::new(move || drop(old))
    }

    fn finish_unstarted(&self, err: Option<io::Error>) -> Option<LinkRunner> {
        let error = |err: Option<&io::Error>| match err {
            Some(e) => JoinError::new(&self.header, Repr::Spawn(copy_io_error(e))),
            None => JoinError::new(&self.header, Repr::Killed),
        };
        let runner = self.links.take().map(|links| {
            let result = Err(error(err.as_ref()));
            Box::new(move || {
                for f in *links {
                    let _ = call_link(f, &result);
                }
            }) as LinkRunner
        });
        // The closure is gone (`take_unstarted`): nothing is dropped here.
        self.replace(Slot::Done(Err(error(err.as_ref()))));
        runner
    }
}

impl<F, T> TaskCell<F, T> {
    fn has_links(&self) -> bool {
        let links = self.links.take();
        let some = links.is_some();
        self.links.set(links);
        some
    }
}

/// Drops the result of a coroutine whose `JoinHandle` is gone, on the
/// coroutine's own stack before it ends: its destructor may block like any
/// coroutine code (the hub loop, which would otherwise free it, runs while
/// the root is parked and must not run user code that parks). A panic (or a
/// cancellation of the coroutine) out of that destructor is caught: nobody
/// is left to report it to but the panic hook, which has.
#[cold]
#[inline(never)]
fn drop_detached<T>(result: Result<T, JoinError>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(result)));
}

/// Calls one link callback, catching its panic (the panic hook has reported
/// it). Returns the payload if it was a cancellation (of whoever runs the
/// callback), for the caller to deliver or drop.
fn call_link<T>(
    f: LinkFn<T>,
    result: &Result<T, JoinError>,
) -> Option<Box<dyn std::any::Any + Send>> {
    match catch_unwind(AssertUnwindSafe(move || f(result))) {
        Ok(()) => None,
        Err(p) if p.is::<Cancelled>() => Some(p),
        Err(_) => None,
    }
}

/// An equal `io::Error` (they are not `Clone`): the same OS error, or the
/// same kind and message.
fn copy_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl<F, T> JoinSlot<T> for TaskCell<F, T>
where
    F: FnOnce() -> T,
{
    fn take(&self) -> Option<Result<T, JoinError>> {
        match self.replace(Slot::Taken) {
            Slot::Done(r) => Some(r),
            other => {
                self.replace(other);
                None
            }
        }
    }

    fn link(&self, f: LinkFn<T>) {
        // If the slot is `Done`, nothing changes it while the caller's
        // `&JoinHandle` lives, even if the callback re-enters this task's
        // methods through that handle (see the type's invariants).
        // SAFETY: so this shared look stays valid while used: for `Done` as
        // above, otherwise the reference ends before any call.
        if let Slot::Done(r) = unsafe { &*self.slot.get() } {
            // Finished: call it now. A cancellation of the caller that
            // reached a blocked callback goes on to the caller.
            if let Some(p) = call_link(f, r) {
                resume_unwind(p);
            }
            return;
        }
        let mut links = self.links.take().unwrap_or_default();
        links.push(f);
        self.links.set(Some(links));
    }

    fn is_ok(&self) -> Option<bool> {
        // SAFETY: a short shared look, no call while the reference lives
        // (the hub is single threaded: nothing else runs meanwhile).
        match unsafe { &*self.slot.get() } {
            Slot::Done(r) => Some(r.is_ok()),
            _ => None,
        }
    }
}

/// The root's control block (it has no body). `repr(C)`: see [`TaskCell`].
#[repr(C)]
pub(crate) struct RootTask(pub Header);

/// The header of an erased task, without a virtual call.
#[inline]
pub(crate) fn header_of(t: &Rc<dyn Task>) -> &Header {
    // SAFETY: every `Task` implementor (`TaskCell`, `RootTask`) is `repr(C)`
    // with its `Header` as the first field, so the data pointer of the trait
    // object points at a valid `Header` that lives as long as `t`.
    unsafe { &*(Rc::as_ptr(t) as *const Header) }
}

/// The header of a task seen through its `JoinHandle`, without a virtual
/// call.
#[inline]
pub(crate) fn slot_header<T>(t: &Rc<dyn JoinSlot<T>>) -> &Header {
    // SAFETY: `TaskCell` is the only `JoinSlot` implementor; it is
    // `repr(C)` with its `Header` first (see `header_of`), so the data
    // pointer points at a valid `Header` that lives as long as `t`.
    unsafe { &*(Rc::as_ptr(t) as *const Header) }
}

impl Task for RootTask {
    fn header(&self) -> &Header {
        &self.0
    }
    fn run(&self) {
        unreachable!("the root is never resumed as a coroutine")
    }
    fn take_unstarted(&self) -> Dropper {
        Box::new(|| ())
    }
    fn finish_unstarted(&self, _: Option<io::Error>) -> Option<LinkRunner> {
        None
    }
}

#[cfg(test)]
mod tests {
    /// A spawned-but-not-started coroutine costs its control block: keep it
    /// within a 256-byte allocation (with the `Rc` counts) for 1e6 spawns.
    #[test]
    fn task_cell_fits_256_bytes() {
        let size = std::mem::size_of::<super::TaskCell<fn() -> u64, u64>>();
        assert!(size + 16 <= 256, "TaskCell is {size} bytes");
    }
}
