//! A coroutine's control block and its life cycle.
//!
//! ```text
//!            spawn                 first resume binds a stack
//!   ─────────────────▶ New ────────────────────────────────┐
//!                       │  kill before start                ▼
//!                       └──────────────▶ Done ◀──────── Running ◀───┐
//!                                         ▲   body returned │ │      │ resume
//!                                         │   or unwound    │ │ park │
//!                                         └─────────────────┘ ▼      │
//!                                                           Parked ──┤
//!                                              wake / timer / cancel │
//!                                                           Ready ───┘
//!                                          (yield_now: Running → Ready)
//! ```
//!
//! * `New`: spawned, closure and control block only, no stack. It sits in the
//!   run queue (or waits for its `spawn_later` timer).
//! * `Ready`: in the run queue, suspended.
//! * `Running`: the hub resumed it; exactly one task (or the root) per hub.
//! * `Parked`: suspended at a blocking point; `park_seq` identifies this wait,
//!   so a wake meant for an earlier wait is ignored.
//! * `Done`: the result is in the task's slot; the stack went back to the pool.
//!
//! The root (the thread's own stack) has a control block too; it is never
//! `New` or `Done`, and "resuming" it means returning from the hub loop that
//! runs on its stack.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::rc::Rc;
use std::sync::Mutex;

use corosensei::{Coroutine, Yielder};

use crate::cancel::{Cancel, Cancelled};
use crate::sys::stack::Stack;
use crate::timer::TimerKey;

/// The corosensei coroutine type every task runs on.
pub(crate) type Coro = Coroutine<(), (), (), Stack>;

/// The slab key reserved for the root's control block.
pub(crate) const ROOT_KEY: u32 = u32::MAX;

/// A coroutine's identity, unique within the process.
///
/// ```
/// let h = moss_runtime::spawn(|| moss_runtime::current().id());
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

/// See the module docs for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    New,
    Ready,
    Running,
    Parked,
    Done,
}

/// How a park ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// Somebody woke this wait (the condition may hold; re-check it).
    Notified,
    /// The park's own deadline passed.
    TimedOut,
    /// A `kill` or an enclosing `timeout` wants this coroutine to unwind.
    /// The cancellation stays pending until it is delivered.
    Cancelled,
}

/// The control block shared by the hub, the coroutine and its `JoinHandle`.
pub(crate) struct Header {
    pub id: CoroutineId,
    pub key: Cell<u32>,
    pub name: Option<Rc<str>>,
    pub stack_size: usize,
    pub spawn_site: &'static Location<'static>,
    pub state: Cell<State>,
    /// What a parked task waits on, for `dump`.
    pub waiting_on: Cell<&'static str>,
    pub park_seq: Cell<u64>,
    pub wakeup: Cell<Wakeup>,
    pub timer: Cell<Option<TimerKey>>,
    /// A requested cancellation not yet delivered.
    pub cancel: Cell<Option<Cancel>>,
    /// A kill was requested; later kills are no-ops ("delivered once").
    pub killed: Cell<bool>,
    /// A non-unwinding wait (`park`, `wait_raw`) reported the pending
    /// cancellation to a caller that fails its call instead of unwinding (a
    /// monkey hook): `timeout` then reports `Elapsed` even if its closure
    /// returns. Cleared when a cancellation is delivered.
    pub cancel_seen: Cell<bool>,
    /// The first waiter for this task to finish (the usual single `join`).
    pub joiner: Cell<Option<Token>>,
    /// Further waiters (a `kill` and a `join` at once, say).
    /// Boxed so the rare case costs the header one word, not three.
    #[allow(clippy::box_collection)]
    pub more_joiners: Cell<Option<Box<Vec<Token>>>>,
    /// Bound on first resume, taken back when the body returns.
    pub coroutine: UnsafeCell<Option<Coro>>,
    pub yielder: Cell<*const Yielder<(), ()>>,
    /// Lowest address of the bound stack's guard page (one page), for the
    /// overflow handler; 0 while no stack is bound.
    pub guard: Cell<usize>,
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
            stack_size,
            spawn_site,
            state: Cell::new(State::New),
            waiting_on: Cell::new(""),
            park_seq: Cell::new(0),
            wakeup: Cell::new(Wakeup::Notified),
            timer: Cell::new(None),
            cancel: Cell::new(None),
            killed: Cell::new(false),
            cancel_seen: Cell::new(false),
            joiner: Cell::new(None),
            more_joiners: Cell::new(None),
            coroutine: UnsafeCell::new(None),
            yielder: Cell::new(std::ptr::null()),
            guard: Cell::new(0),
        }
    }

    /// Registers `t` to be woken when this task finishes.
    pub(crate) fn add_joiner(&self, t: Token) {
        match self.joiner.get() {
            None => self.joiner.set(Some(t)),
            // The same context re-registering for its next wait.
            Some(old) if old.key == t.key && old.id == t.id => self.joiner.set(Some(t)),
            Some(_) => {
                let mut more = self.more_joiners.take().unwrap_or_default();
                more.push(t);
                self.more_joiners.set(Some(more));
            }
        }
    }

    pub(crate) fn token(&self) -> Token {
        Token {
            key: self.key.get(),
            id: self.id.0,
            seq: self.park_seq.get(),
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
    /// Completes a task that never ran, as killed, dropping its closure.
    fn finish_unstarted(&self, err: Option<io::Error>);
}

/// The typed side a `JoinHandle` reads.
pub(crate) trait JoinSlot<T> {
    fn header(&self) -> &Header;
    fn take(&self) -> Option<Result<T, JoinError>>;
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
#[repr(C)]
pub(crate) struct TaskCell<F, T> {
    header: Header,
    slot: UnsafeCell<Slot<F, T>>,
}

impl<F, T> TaskCell<F, T>
where
    F: FnOnce() -> T,
{
    pub(crate) fn new(header: Header, f: F) -> TaskCell<F, T> {
        TaskCell {
            header,
            slot: UnsafeCell::new(Slot::Pending(f)),
        }
    }

    fn replace(&self, new: Slot<F, T>) -> Slot<F, T> {
        // SAFETY: the slot is only accessed through this method and `take`,
        // which never hold a reference across a call that could re-enter
        // them: the hub is single threaded and both swap the value out at once.
        unsafe { std::mem::replace(&mut *self.slot.get(), new) }
    }
}

impl<F, T> Task for TaskCell<F, T>
where
    F: FnOnce() -> T,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(&self) {
        let Slot::Pending(f) = self.replace(Slot::Running) else {
            unreachable!("a task body runs once")
        };
        let result = match catch_unwind(AssertUnwindSafe(f)) {
            // A kill that a non-unwinding wait (a monkey hook) reported as a
            // failed call, with no moss blocking point after it to deliver
            // it: the coroutine ended because of the kill, so say so.
            Ok(_)
                if self.header.cancel.get() == Some(Cancel::Kill)
                    && self.header.cancel_seen.get() =>
            {
                Err(JoinError::new(&self.header, Repr::Killed))
            }
            Ok(v) => Ok(v),
            Err(payload) => Err(JoinError::from_payload(&self.header, payload)),
        };
        self.replace(Slot::Done(result));
    }

    fn finish_unstarted(&self, err: Option<io::Error>) {
        let e = match err {
            Some(e) => JoinError::new(&self.header, Repr::Spawn(e)),
            None => JoinError::new(&self.header, Repr::Killed),
        };
        // Dropping the closure runs user destructors: do it after the slot
        // holds its final value.
        let old = self.replace(Slot::Done(Err(e)));
        drop(old);
    }
}

impl<F, T> JoinSlot<T> for TaskCell<F, T>
where
    F: FnOnce() -> T,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn take(&self) -> Option<Result<T, JoinError>> {
        match self.replace(Slot::Taken) {
            Slot::Done(r) => Some(r),
            other => {
                self.replace(other);
                None
            }
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

impl Task for RootTask {
    fn header(&self) -> &Header {
        &self.0
    }
    fn run(&self) {
        unreachable!("the root is never resumed as a coroutine")
    }
    fn finish_unstarted(&self, _: Option<io::Error>) {}
}

/// A panic payload made `Sync`, so that `JoinError` can be sent and shared
/// like any error.
struct Payload(Mutex<Box<dyn Any + Send>>);

enum Repr {
    Panic(Payload),
    Killed,
    Spawn(io::Error),
}

/// Why a coroutine did not return a value: it panicked, it was killed, or its
/// stack could not be allocated.
///
/// ```
/// let h = moss_runtime::spawn(|| -> u32 { panic!("boom") });
/// let err = h.join().unwrap_err();
/// assert!(err.is_panic());
/// assert!(err.to_string().contains("boom"));
/// ```
pub struct JoinError(Box<ErrorInner>);

struct ErrorInner {
    id: CoroutineId,
    name: Option<String>,
    message: Option<String>,
    repr: Repr,
}

impl JoinError {
    fn new(h: &Header, repr: Repr) -> JoinError {
        JoinError(Box::new(ErrorInner {
            id: h.id,
            name: h.name.as_deref().map(str::to_owned),
            message: None,
            repr,
        }))
    }

    fn from_payload(h: &Header, payload: Box<dyn Any + Send>) -> JoinError {
        if payload.is::<Cancelled>() {
            return JoinError::new(h, Repr::Killed);
        }
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        let mut e = JoinError::new(h, Repr::Panic(Payload(Mutex::new(payload))));
        e.0.message = message;
        e
    }

    /// The coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0.repr, Repr::Panic(_))
    }

    /// The coroutine was killed (by [`JoinHandle::kill`](crate::JoinHandle::kill)),
    /// before it started or at a blocking point.
    pub fn is_killed(&self) -> bool {
        matches!(self.0.repr, Repr::Killed)
    }

    /// The id of the coroutine that failed.
    pub fn id(&self) -> CoroutineId {
        self.0.id
    }

    /// The panic payload, to re-raise with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the error is not a panic (check [`is_panic`](Self::is_panic)).
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self.0.repr {
            Repr::Panic(p) => p.0.into_inner().unwrap_or_else(|e| e.into_inner()),
            _ => panic!("JoinError::into_panic called on an error that is not a panic: {self}"),
        }
    }

    /// The payload if it is a panic, or the error back.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, JoinError> {
        if self.is_panic() {
            Ok(self.into_panic())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.name {
            Some(n) => write!(f, "coroutine '{n}' (#{})", self.0.id)?,
            None => write!(f, "coroutine #{}", self.0.id)?,
        }
        match &self.0.repr {
            Repr::Panic(_) => match &self.0.message {
                Some(m) => write!(f, " panicked: {m}"),
                None => write!(f, " panicked"),
            },
            Repr::Killed => write!(f, " was killed"),
            Repr::Spawn(e) => write!(f, " could not start: {e}"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.repr {
            Repr::Spawn(e) => Some(e),
            _ => None,
        }
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
