//! Greenlets: raw symmetric coroutines, no hub involved, as in the Python
//! `greenlet` package.
//!
//! Any greenlet can `switch` to any other of its thread, passing a value; the
//! switch returns the value passed when somebody switches back. A greenlet
//! whose function returns passes its return value to its *parent* (the
//! greenlet that created it), as if the parent had been switched to.
//!
//! corosensei coroutines are asymmetric (resume/suspend), so switching is a
//! trampoline: the thread's root greenlet drives, and a non-root greenlet
//! that switches suspends to the driver with the target, which then resumes
//! the target. A switch therefore costs two stack switches.
//!
//! Values of different types live in separate families: `Greenlet<u32>` and
//! `Greenlet<String>` never meet, each family has its own root.
//!
//! Each coroutine, and each thread's root, has its own families: the root
//! greenlet of a family is the coroutine (or thread root) itself, and which
//! greenlet runs is tracked per coroutine. So greenlets a coroutine uses
//! never mix with those of the coroutine (or root) that was running a
//! greenlet when the hub resumed it. A suspended greenlet may be switched
//! to from anywhere on its thread; one that is running (in another
//! coroutine's chain of switches) may not: that panics in the caller.
//!
//! ```
//! use moss::greenlet::{self, Greenlet};
//! let ping = Greenlet::new(|mut n: u32| {
//!     let root = greenlet::current::<u32>().parent().unwrap();
//!     while n < 5 { n = root.switch(n + 1); }
//!     n * 100
//! });
//! let mut v = 0;
//! let mut trace = vec![];
//! while !ping.is_dead() { v = ping.switch(v + 1); trace.push(v); }
//! assert_eq!(trace, [2, 4, 500]);
//! ```
//!
//! Handles are `!Send`:
//! ```compile_fail,E0277
//! let g = moss::greenlet::Greenlet::new(|v: u32| v);
//! std::thread::spawn(move || g.switch(1));
//! ```

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;

use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::hub::Hub;
use crate::stack_pool::DEFAULT_STACK_SIZE;
use crate::sys::stack::Stack;
use crate::task::Header;

/// What flows into a greenlet when it is resumed.
enum In<T: 'static> {
    Value(T),
    /// Unwind with `GreenletExit`.
    Throw,
    /// The greenlet this one threw has died: `throw` returns.
    ThrowDone,
}

/// What a non-root greenlet hands the driver when it suspends.
enum Out<T: 'static> {
    Switch(Greenlet<T>, T),
    Throw(Greenlet<T>),
}

/// How a greenlet body ended.
enum End<T: 'static> {
    Value(T),
    Thrown,
    Panic(Box<dyn Any + Send>),
}

type GCoro<T> = Coroutine<In<T>, Out<T>, End<T>, Stack>;
type Body<T> = Box<dyn FnOnce(T) -> T>;

/// Unwinding payload of `throw`.
struct GreenletExit;

struct Inner<T: 'static> {
    coro: RefCell<Option<GCoro<T>>>,
    f: RefCell<Option<Body<T>>>,
    parent: Option<Greenlet<T>>,
    yielder: Cell<*const Yielder<In<T>, Out<T>>>,
    /// The usable part `[lo, hi)` of its stack once started: a greenlet
    /// suspends only from there.
    stack: Cell<(usize, usize)>,
    /// The guard region of its stack once started (for the overflow report).
    guard: Cell<(usize, usize)>,
    /// Resumed and not suspended since (on some context's chain of
    /// switches): it cannot be resumed again.
    running: Cell<bool>,
    dead: Cell<bool>,
    root: bool,
}

impl<T> Inner<T> {
    fn new(f: Option<Body<T>>, parent: Option<Greenlet<T>>) -> Inner<T> {
        Inner {
            coro: RefCell::new(None),
            root: parent.is_none(),
            f: RefCell::new(f),
            parent,
            yielder: Cell::new(std::ptr::null()),
            stack: Cell::new((0, 0)),
            guard: Cell::new((0, 0)),
            running: Cell::new(false),
            dead: Cell::new(false),
        }
    }
}

/// A handle to a greenlet (cheap to clone, `!Send`).
pub struct Greenlet<T: 'static> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for Greenlet<T> {
    fn clone(&self) -> Self {
        Greenlet {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Greenlet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Greenlet")
            .field("root", &self.inner.root)
            .field("dead", &self.inner.dead.get())
            .finish()
    }
}

/// Per-context (coroutine or thread root), per-type state: the root greenlet
/// and the running one.
struct Family<T: 'static> {
    root: Greenlet<T>,
    current: RefCell<Greenlet<T>>,
}

/// The families of one context, by value type (a handful at most: a list).
/// Kept with the context's coroutine-locals (`local.rs`), freed with them
/// when the coroutine ends.
#[derive(Default)]
pub(crate) struct Families(RefCell<Vec<(TypeId, Rc<dyn Any>)>>);

thread_local! {
    /// The hub context (coroutine header) that is driving non-root greenlets
    /// right now, or null: moss blocking calls must not suspend that
    /// coroutine from a greenlet's stack.
    static DRIVER_OWNER: Cell<*const Header> = const { Cell::new(std::ptr::null()) };
    /// The guard region of the innermost greenlet running on this thread,
    /// or `(0, 0)`: read by the stack-overflow report, in a signal handler
    /// (a `const` thread-local without a destructor: a plain load).
    static RUNNING_GUARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Whether `addr` is in the guard region of the innermost greenlet running
/// on this thread (a stack overflow there). Async-signal-safe.
pub(crate) fn in_running_guard(addr: usize) -> bool {
    let (lo, hi) = RUNNING_GUARD.with(Cell::get);
    lo <= addr && addr < hi
}

/// The usable stack size of a greenlet.
pub(crate) const STACK_SIZE: usize = DEFAULT_STACK_SIZE;

/// The running context's family of `T`, made on first use.
fn family<T: 'static>() -> Rc<Family<T>> {
    let any = crate::local::with_greenlet_families(|fams| {
        let key = TypeId::of::<T>();
        let mut fams = fams.0.borrow_mut();
        if let Some((_, f)) = fams.iter().find(|(k, _)| *k == key) {
            return f.clone();
        }
        let root = Greenlet {
            inner: Rc::new(Inner::<T>::new(None, None)),
        };
        let f: Rc<dyn Any> = Rc::new(Family {
            current: RefCell::new(root.clone()),
            root,
        });
        fams.push((key, f.clone()));
        f
    });
    any.downcast::<Family<T>>()
        .expect("a family is keyed by its type")
}

/// Whether `h`, the running context, is a coroutine that drives greenlets
/// now: the caller runs in one of them, and suspending the coroutine from
/// the greenlet's stack is impossible ([`cannot_block`]). A thread's root
/// may block in its greenlets (the hub loop then runs on their stack).
#[inline]
pub(crate) fn drives_greenlets(h: &Header) -> bool {
    let owner = DRIVER_OWNER.with(|o| o.get());
    !owner.is_null() && std::ptr::eq(owner, h) && !h.is_root()
}

/// The panic of a blocking call in a greenlet driven by a coroutine. The
/// caller checks before it changes anything (it queues no waiter, arms no
/// timer), so catching the panic leaves the coroutine sound.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn cannot_block() -> ! {
    panic!(
        "moss: a greenlet started from a coroutine cannot block on moss calls; \
         block in the coroutine itself, or use greenlets from the thread's root"
    )
}

/// Whether the caller is a greenlet driven by the running coroutine (see
/// [`drives_greenlets`]).
pub(crate) fn in_coroutine_driven_greenlet() -> bool {
    let owner = DRIVER_OWNER.with(|o| o.get());
    !owner.is_null()
        && Hub::try_current()
            .is_some_and(|hub| std::ptr::eq(owner, hub.current_header()) && hub.in_coroutine())
}

/// The running greenlet of family `T`: the one the running coroutine (or
/// thread root) switched to, or that coroutine's root greenlet.
pub fn current<T: 'static>() -> Greenlet<T> {
    family::<T>().current.borrow().clone()
}

impl<T: 'static> Greenlet<T> {
    /// A new greenlet that will run `f` on the first switch to it. Its parent
    /// is the greenlet running now.
    pub fn new(f: impl FnOnce(T) -> T + 'static) -> Greenlet<T> {
        Greenlet {
            inner: Rc::new(Inner::new(Some(Box::new(f)), Some(current::<T>()))),
        }
    }

    /// The parent (the creator); `None` for a root greenlet.
    pub fn parent(&self) -> Option<Greenlet<T>> {
        self.inner.parent.clone()
    }

    /// Whether the greenlet has finished (returned, panicked or was thrown).
    pub fn is_dead(&self) -> bool {
        self.inner.dead.get()
    }

    fn ptr_eq(&self, other: &Greenlet<T>) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Transfers control to this greenlet with `v`. The first switch starts
    /// its function with `v`; later ones return `v` from the `switch` it is
    /// suspended in. Returns the value that the next switch back to the
    /// caller carries (or the return value of a child that finished).
    ///
    /// # Panics
    /// If the target is dead, or running: switched to by another coroutine
    /// (or the thread's root) and not suspended since. A panic inside any
    /// greenlet of the family surfaces from the root greenlet's `switch`
    /// (the greenlet dies).
    #[track_caller]
    pub fn switch(&self, v: T) -> T {
        let fam = family::<T>();
        let me = fam.current.borrow().clone();
        if self.ptr_eq(&me) {
            return v;
        }
        assert!(!self.is_dead(), "moss::greenlet: switch to a dead greenlet");
        self.assert_not_running();
        if me.inner.root {
            drive(&fam, Out::Switch(self.clone(), v))
        } else {
            me.suspend_to_driver(Out::Switch(self.clone(), v))
        }
    }

    /// Kills the greenlet by unwinding it from where it is suspended
    /// (destructors run); a greenlet that never started just dies. Returns
    /// to the caller afterwards.
    ///
    /// # Panics
    /// If the target is running: the caller itself, or a greenlet that
    /// another coroutine switched to and that has not suspended since.
    #[track_caller]
    pub fn throw(&self) {
        if self.is_dead() || self.inner.root {
            return;
        }
        let fam = family::<T>();
        let me = fam.current.borrow().clone();
        assert!(
            !self.ptr_eq(&me),
            "moss::greenlet: a greenlet cannot throw itself; return from its function instead"
        );
        self.assert_not_running();
        if self.inner.coro.borrow().is_none() {
            self.inner.f.borrow_mut().take();
            self.inner.dead.set(true);
            return;
        }
        if me.inner.root {
            drive_throw(&fam, self.clone());
        } else {
            match me.suspend_to_driver_raw(Out::Throw(self.clone())) {
                In::ThrowDone | In::Value(_) => {}
                In::Throw => resume_unwind(Box::new(GreenletExit)),
            }
        }
    }

    /// From a running non-root greenlet: hand `out` to the driver and wait to
    /// be resumed.
    fn suspend_to_driver(&self, out: Out<T>) -> T {
        match self.suspend_to_driver_raw(out) {
            In::Value(v) => v,
            In::Throw => resume_unwind(Box::new(GreenletExit)),
            In::ThrowDone => unreachable!("only a thrower is resumed with ThrowDone"),
        }
    }

    /// A greenlet running somewhere up this thread's stacks cannot be
    /// resumed (it is not suspended).
    #[track_caller]
    fn assert_not_running(&self) {
        assert!(
            !self.inner.running.get(),
            "moss::greenlet: switch to a greenlet that is running: another coroutine (or \
             the thread's root) switched to it and it has not switched away since"
        );
    }

    fn suspend_to_driver_raw(&self, out: Out<T>) -> In<T> {
        // The family's `current` of the running context is `self`; that this
        // code runs on `self`'s stack is what makes the suspend below sound:
        // checked, not assumed (a yielder used from another stack would
        // return into frames that are gone).
        let probe = 0u8;
        let sp = std::ptr::from_ref(&probe) as usize;
        let (lo, hi) = self.inner.stack.get();
        assert!(
            self.inner.running.get() && lo <= sp && sp < hi,
            "moss::greenlet: a switch from a greenlet that is not the one running here"
        );
        let y = self.inner.yielder.get();
        // SAFETY: `self` has started (its stack range is set) and is running
        // (resumed, not suspended since), and we execute on its stack (both
        // checked above), so the yielder corosensei gave its body is alive and
        // this suspend returns to the `resume` that runs it.
        unsafe { (*y).suspend(out) }
    }

    /// Resumes this greenlet's coroutine with `input`, starting it if needed.
    fn resume(&self, input: In<T>) -> CoroutineResult<Out<T>, End<T>> {
        let mut slot = self.inner.coro.borrow_mut();
        if slot.is_none() {
            let stack = Hub::current()
                .stacks
                .borrow_mut()
                .take(STACK_SIZE)
                .unwrap_or_else(|e| panic!("moss::greenlet: cannot allocate a stack: {e}"));
            let f = self
                .inner
                .f
                .borrow_mut()
                .take()
                .expect("unstarted greenlet has its function");
            self.inner.stack.set(stack.usable());
            self.inner.guard.set(stack.guard_range());
            let me = self.inner.clone();
            *slot = Some(Coroutine::with_stack(
                stack,
                move |y: &Yielder<In<T>, Out<T>>, input| {
                    me.yielder.set(y);
                    let In::Value(v) = input else {
                        return End::Thrown;
                    };
                    match catch_unwind(AssertUnwindSafe(|| f(v))) {
                        Ok(v) => End::Value(v),
                        Err(p) if p.is::<GreenletExit>() => End::Thrown,
                        Err(p) => End::Panic(p),
                    }
                },
            ));
        }
        let coro: *mut GCoro<T> = slot.as_mut().expect("bound above");
        drop(slot);
        debug_assert!(!self.inner.running.get());
        self.inner.running.set(true);
        let outer_guard = RUNNING_GUARD.with(|g| g.replace(self.inner.guard.get()));
        // SAFETY: only a driver resumes greenlets, never one that is running
        // (checked by every caller before any state changes), and it keeps
        // `self` alive for the call, so nothing else touches
        // `self.inner.coro` meanwhile (the RefCell borrow is released so the
        // greenlet may read its handle).
        let r = unsafe { (*coro).resume(input) };
        RUNNING_GUARD.with(|g| g.set(outer_guard));
        self.inner.running.set(false);
        if let CoroutineResult::Return(_) = &r {
            self.inner.dead.set(true);
            let c = self
                .inner
                .coro
                .borrow_mut()
                .take()
                .expect("finished coroutine");
            Hub::current().stacks.borrow_mut().give(c.into_stack());
        }
        r
    }
}

/// The trampoline, run by the root greenlet: performs `first`, then follows
/// switches between non-root greenlets until control comes back to the root.
fn drive<T: 'static>(fam: &Family<T>, first: Out<T>) -> T {
    let hub_ctx = Hub::try_current().map_or(std::ptr::null(), |h| h.current_header() as *const _);
    let prev_owner = DRIVER_OWNER.with(|o| o.replace(hub_ctx));
    let _restore = Restore(prev_owner);
    let (mut target, mut input) = match first {
        Out::Switch(g, v) => (g, In::Value(v)),
        Out::Throw(_) => unreachable!("root throws go through drive_throw"),
    };
    loop {
        // Any root (ours, or that of another context a greenlet came from)
        // is the driver: back to the caller of the root's `switch`.
        if target.inner.root {
            *fam.current.borrow_mut() = fam.root.clone();
            match input {
                In::Value(v) => return v,
                _ => unreachable!("the root is never thrown"),
            }
        }
        if target.inner.running.get() {
            // A parent running in another context's chain (switches check
            // their targets themselves).
            *fam.current.borrow_mut() = fam.root.clone();
            panic!(
                "moss::greenlet: a greenlet returned to its parent, which is running in \
                 another coroutine (or the thread's root)"
            );
        }
        *fam.current.borrow_mut() = target.clone();
        match target.resume(input) {
            CoroutineResult::Yield(Out::Switch(g, v)) => {
                target = g;
                input = In::Value(v);
            }
            CoroutineResult::Yield(Out::Throw(victim)) => {
                let thrower = target.clone();
                *fam.current.borrow_mut() = victim.clone();
                finish_throw(&victim);
                target = thrower;
                input = In::ThrowDone;
            }
            CoroutineResult::Return(end) => {
                let parent = target.parent().expect("non-root greenlets have a parent");
                let parent = first_live(parent);
                match end {
                    End::Value(v) => {
                        target = parent;
                        input = In::Value(v);
                    }
                    End::Thrown => unreachable!("greenlets are thrown only by finish_throw"),
                    End::Panic(p) => {
                        // The panic surfaces in the root's `switch`.
                        *fam.current.borrow_mut() = fam.root.clone();
                        resume_unwind(p);
                    }
                }
            }
        }
    }
}

/// The parent chain skipping dead greenlets (greenlet's rule).
fn first_live<T>(mut g: Greenlet<T>) -> Greenlet<T> {
    while g.is_dead() {
        match g.parent() {
            Some(p) => g = p,
            None => break,
        }
    }
    g
}

fn finish_throw<T: 'static>(victim: &Greenlet<T>) {
    if victim.is_dead() {
        return;
    }
    if victim.inner.coro.borrow().is_none() {
        victim.inner.f.borrow_mut().take();
        victim.inner.dead.set(true);
        return;
    }
    match victim.resume(In::Throw) {
        CoroutineResult::Return(End::Panic(p)) => resume_unwind(p),
        CoroutineResult::Return(_) => {}
        CoroutineResult::Yield(_) => {
            panic!("moss::greenlet: a thrown greenlet switched instead of exiting")
        }
    }
}

fn drive_throw<T: 'static>(fam: &Family<T>, victim: Greenlet<T>) {
    let hub_ctx = Hub::try_current().map_or(std::ptr::null(), |h| h.current_header() as *const _);
    let prev_owner = DRIVER_OWNER.with(|o| o.replace(hub_ctx));
    let _restore = Restore(prev_owner);
    *fam.current.borrow_mut() = victim.clone();
    let r = catch_unwind(AssertUnwindSafe(|| finish_throw(&victim)));
    *fam.current.borrow_mut() = fam.root.clone();
    if let Err(p) = r {
        resume_unwind(p);
    }
}

struct Restore(*const Header);

impl Drop for Restore {
    fn drop(&mut self) {
        DRIVER_OWNER.with(|o| o.set(self.0));
    }
}
