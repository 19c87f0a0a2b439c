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
use crate::sys::stack::{Stack, stack_pointer};
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
    /// Unwind this greenlet, whose last handle is gone (see `collect`).
    Collect(Greenlet<T>),
}

/// How a greenlet body ended.
enum End<T: 'static> {
    Value(T),
    Thrown,
    Panic(Payload),
}

type Payload = Box<dyn Any + Send>;

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

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        // A coroutine still here is suspended (a finished one gave its
        // stack back): one abandoned mid-unwind, or never collected. Dropping
        // it would force-unwind its stack, a second unwind if it is inside a
        // destructor: it is leaked with its stack instead.
        if let Some(c) = self.coro.get_mut().take() {
            std::mem::forget(c);
        }
    }
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
///
/// When the last handle of a greenlet suspended mid-body is dropped, the
/// greenlet is unwound as by [`throw`](Self::throw) (its destructors run)
/// and its stack is reused. Children keep their parent alive. A greenlet
/// that keeps a handle to itself where only it can reach it (on its own
/// stack, say a `greenlet::current()` temporary alive across its `switch`)
/// is never collected: bind the target first (`let root = ...;
/// root.switch(v)`). One whose destructors switch away while it is unwound
/// is abandoned: never resumed, its stack leaked.
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
    /// The root's driver loop (`drive`, `drive_throw`) is active.
    driving: Cell<bool>,
    /// Suspended greenlets whose last handle the driver loop dropped: it
    /// unwinds them before it hands control back (see `collect`).
    graveyard: RefCell<Vec<Greenlet<T>>>,
}

impl<T: 'static> Family<T> {
    /// Sets the running greenlet. The one replaced is dropped outside the
    /// borrow (its drop may collect it, which uses the family).
    fn set_current(&self, g: Greenlet<T>) {
        let old = self.current.replace(g);
        drop(old);
    }

    /// Unwinds the greenlets in the graveyard (from the driver loop, with
    /// no greenlet running), then makes the root current.
    fn bury(&self) {
        loop {
            let next = self.graveyard.borrow_mut().pop();
            let Some(victim) = next else { return };
            // Its one failure (a destructor switched away while it was
            // unwound) abandons it; nobody is left to tell.
            let _ = finish_throw(self, &victim);
            self.set_current(self.root.clone());
        }
    }
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
            driving: Cell::new(false),
            graveyard: RefCell::new(Vec::new()),
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
            match Greenlet::suspend_to_driver(me, Out::Switch(self.clone(), v)) {
                In::Value(v) => v,
                In::Throw => resume_unwind(Box::new(GreenletExit)),
                In::ThrowDone => unreachable!("only a thrower is resumed with ThrowDone"),
            }
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
            if let Err(p) = drive_throw(&fam, self.clone()) {
                resume_unwind(p);
            }
        } else {
            match Greenlet::suspend_to_driver(me, Out::Throw(self.clone())) {
                In::ThrowDone | In::Value(_) => {}
                In::Throw => resume_unwind(Box::new(GreenletExit)),
            }
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

    /// From the running non-root greenlet `me`: hands `out` to the driver
    /// and waits to be resumed. `me` is dropped before the suspend, so no
    /// handle of ours stays on its stack meanwhile (a suspended greenlet
    /// whose handles are all gone is collected: see `collect`).
    fn suspend_to_driver(me: Greenlet<T>, out: Out<T>) -> In<T> {
        // The running context's `current` is `me`; that this code runs on
        // `me`'s stack is what makes the suspend below sound: checked, not
        // assumed (a yielder used from another stack would return into
        // frames that are gone).
        let sp = stack_pointer();
        let (lo, hi) = me.inner.stack.get();
        assert!(
            me.inner.running.get() && lo <= sp && sp < hi,
            "moss::greenlet: a switch from a greenlet that is not the one running here"
        );
        let y = me.inner.yielder.get();
        drop(me);
        // `me` has started (its stack range is set) and is running (resumed,
        // not suspended since), and we execute on its stack (both checked
        // above). Nothing here touches `me` afterwards.
        // SAFETY: so the yielder corosensei gave its body, which lives on this
        // stack below us, is alive, and this suspend returns to the `resume`
        // that runs it.
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
            // Weak: the body must not keep its own greenlet alive (a
            // greenlet whose handles are all gone is collected).
            let me = Rc::downgrade(&self.inner);
            *slot = Some(Coroutine::with_stack(
                stack,
                move |y: &Yielder<In<T>, Out<T>>, input| {
                    me.upgrade()
                        .expect("the driver holds a greenlet it resumes")
                        .yielder
                        .set(y);
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
        // Only a driver resumes greenlets, never one that is running (checked
        // by every caller before any state changes); the RefCell borrow is
        // released so the greenlet may read its handle.
        // SAFETY: the driver keeps `self` alive for the call and nothing else
        // touches `self.inner.coro` meanwhile (above), so `coro` is valid and
        // not aliased while it runs.
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
    let _driving = Driving::enter(fam);
    let (mut target, mut input) = match first {
        Out::Switch(g, v) => (g, In::Value(v)),
        Out::Throw(_) | Out::Collect(_) => unreachable!("root throws go through drive_throw"),
    };
    loop {
        fam.bury();
        // Any root (ours, or that of another context a greenlet came from)
        // is the driver: back to the caller of the root's `switch`.
        if target.inner.root {
            fam.set_current(fam.root.clone());
            fam.bury();
            match input {
                In::Value(v) => return v,
                _ => unreachable!("the root is never thrown"),
            }
        }
        if target.inner.running.get() {
            // A parent running in another context's chain (switches check
            // their targets themselves).
            fam.set_current(fam.root.clone());
            fam.bury();
            panic!(
                "moss::greenlet: a greenlet returned to its parent, which is running in \
                 another coroutine (or the thread's root)"
            );
        }
        fam.set_current(target.clone());
        match target.resume(input) {
            CoroutineResult::Yield(Out::Switch(g, v)) => {
                target = g;
                input = In::Value(v);
            }
            CoroutineResult::Yield(Out::Throw(victim)) => {
                if let Err(p) = finish_throw(fam, &victim) {
                    // The panic surfaces in the root's `switch`; the thrower
                    // stays suspended.
                    fam.set_current(fam.root.clone());
                    fam.bury();
                    resume_unwind(p);
                }
                input = In::ThrowDone;
            }
            CoroutineResult::Yield(Out::Collect(victim)) => {
                // Its one failure abandons it (see `bury`).
                let _ = finish_throw(fam, &victim);
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
                        fam.set_current(fam.root.clone());
                        fam.bury();
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

/// The driver's part of a `throw` (or a collection): resumes `victim` with
/// `Throw` until it has exited, finishing the throws and collections it
/// asks for while it unwinds. Returns the first panic of its unwinding (or
/// of a greenlet it threw); with `current` left on `victim`.
fn finish_throw<T: 'static>(fam: &Family<T>, victim: &Greenlet<T>) -> Result<(), Payload> {
    if victim.is_dead() {
        return Ok(());
    }
    if victim.inner.coro.borrow().is_none() {
        victim.inner.f.borrow_mut().take();
        victim.inner.dead.set(true);
        return Ok(());
    }
    let mut first_panic = None;
    let mut input = In::Throw;
    loop {
        fam.set_current(victim.clone());
        match victim.resume(input) {
            CoroutineResult::Return(End::Panic(p)) => return Err(first_panic.unwrap_or(p)),
            CoroutineResult::Return(_) => return first_panic.map_or(Ok(()), Err),
            CoroutineResult::Yield(Out::Throw(other)) => {
                if let Err(p) = finish_throw(fam, &other) {
                    first_panic.get_or_insert(p);
                }
                input = In::ThrowDone;
            }
            CoroutineResult::Yield(Out::Collect(other)) => {
                let _ = finish_throw(fam, &other);
                input = In::ThrowDone;
            }
            CoroutineResult::Yield(Out::Switch(..)) => {
                // Suspended mid-unwind: resuming it again (another throw, or
                // a forced unwind when its coroutine is dropped) would be a
                // second unwind inside a destructor, which aborts. It is
                // abandoned: dead for everyone, its stack leaked.
                victim.inner.dead.set(true);
                return Err(Box::new(
                    "moss::greenlet: a thrown greenlet switched instead of exiting",
                ));
            }
        }
    }
}

/// A `throw` (or a collection) by the root greenlet: the victim's first
/// panic, if any.
fn drive_throw<T: 'static>(fam: &Family<T>, victim: Greenlet<T>) -> Result<(), Payload> {
    let _driving = Driving::enter(fam);
    let r = finish_throw(fam, &victim);
    fam.set_current(fam.root.clone());
    drop(victim);
    fam.bury();
    r
}

/// Unwinds a suspended greenlet whose last handle is gone (Python's
/// greenlet does the same when one is garbage collected): right away when
/// the caller is a running greenlet or a root outside its driver loop, else
/// (a handle dropped by the driver loop itself) by the driver before it
/// hands control back. If it switches away while it unwinds, it is
/// abandoned (see `finish_throw`).
fn collect<T: 'static>(victim: Greenlet<T>) {
    let fam = family::<T>();
    let me = fam.current.borrow().clone();
    if me.inner.root && !fam.driving.get() {
        let _ = drive_throw(&fam, victim);
    } else if !me.inner.root && me.inner.running.get() {
        match Greenlet::suspend_to_driver(me, Out::Collect(victim)) {
            In::ThrowDone | In::Value(_) => {}
            In::Throw => unreachable!("a greenlet waiting for a collection is not thrown"),
        }
    } else {
        fam.graveyard.borrow_mut().push(victim);
    }
}

impl<T: 'static> Drop for Greenlet<T> {
    fn drop(&mut self) {
        // The last handle of a greenlet suspended mid-body: nothing could
        // ever resume it. (Its body holds no handle to itself; a greenlet
        // that keeps one on its own stack, or in a value only it can reach,
        // is never collected.)
        let i = &self.inner;
        if Rc::strong_count(i) != 1 || i.root || i.dead.get() || i.running.get() {
            return;
        }
        if i.coro.try_borrow().map_or(true, |c| c.is_none()) {
            return; // never started: dropping the closure is all
        }
        collect(Greenlet { inner: i.clone() });
    }
}

/// The root's driver loop is active: the DRIVER_OWNER of the thread and the
/// family's `driving` flag, restored on exit. The driving context's
/// `yielder` is null meanwhile (the hub's fast `yield_now` tests only it;
/// see `Header::yielder`), restored on exit.
struct Driving<'a, T: 'static> {
    fam: &'a Family<T>,
    owner: *const Header,
    was_driving: bool,
    /// The driving context's header (null without a hub) and its yielder.
    ctx: *const Header,
    yielder: *const corosensei::Yielder<(), ()>,
}

impl<'a, T: 'static> Driving<'a, T> {
    fn enter(fam: &'a Family<T>) -> Driving<'a, T> {
        let ctx = Hub::try_current().map(|h| h.current_header());
        let yielder = ctx.map_or(std::ptr::null(), |h| h.yielder.replace(std::ptr::null()));
        let ctx = ctx.map_or(std::ptr::null(), |h| h as *const Header);
        Driving {
            fam,
            owner: DRIVER_OWNER.with(|o| o.replace(ctx)),
            was_driving: fam.driving.replace(true),
            ctx,
            yielder,
        }
    }
}

impl<T: 'static> Drop for Driving<'_, T> {
    fn drop(&mut self) {
        self.fam.driving.set(self.was_driving);
        DRIVER_OWNER.with(|o| o.set(self.owner));
        if !self.ctx.is_null() {
            // This guard lives on the driving context's stack (or on that
            // of one of its greenlets), so that context has not finished.
            // SAFETY: so its header, kept alive by the hub while its body
            // runs, is alive; only its `Cell` is set (one thread).
            unsafe { (*self.ctx).yielder.set(self.yielder) };
        }
    }
}
