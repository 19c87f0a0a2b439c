//! Coroutine-local storage: [`coroutine_local!`](crate::coroutine_local)
//! and [`CoroutineLocal`], gevent's `gevent.local`.
//!
//! # Where the values live
//!
//! ```text
//!   coroutine's control block ──▶ locals: one pointer, null until the
//!                                 coroutine first touches a local
//!                                      │
//!                                      ▼
//!                                 LocalMap: [(key, Rc<value>), ...]
//!                                 in order of initialisation
//!   thread's root ──────────────▶ a LocalMap of the thread (no hub needed)
//! ```
//!
//! A key is the address of the `static` the macro declares. A coroutine
//! that never uses a local costs its control block one null pointer (no
//! drop glue) and its end one test of it.
//!
//! # Soundness
//!
//! The macro expands to safe code only: a `static` holding the
//! initialiser. Inside, `with` never holds a reference into a map while
//! user code runs: it clones the value's `Rc` out, releases the map, and
//! only then calls the initialiser or the caller's closure. So
//!
//! * an initialiser or closure may use any other local (or the same one),
//!   block, be killed, or panic;
//! * a value stays alive while a `with` closure uses it, even if its
//!   coroutine ends meanwhile. That can happen only on another stack: a
//!   greenlet suspended inside `with` and resumed later by another
//!   coroutine. Greenlets have no locals of their own; they see those of
//!   the coroutine (or root) that runs them at the time of the access.
//!
//! The one raw pointer is the control block's: the map is allocated on a
//! coroutine's first access and freed by `end`, on that coroutine's stack
//! after its body, when nothing can reach it any more.

//! # The end of a coroutine
//!
//! When a coroutine's body has returned (or unwound: killed, timed out,
//! panicked), still on its own stack, its map is *closed* and its values
//! are dropped one by one, newest first. A destructor may block (it runs in
//! the coroutine) and may use the locals not dropped yet. A local accessed
//! once the map is closed (dropped already, or never initialised) gets a
//! fresh value from its initialiser for the duration of that `with`,
//! dropped right after: there is no panic, and nothing outlives the
//! coroutine. A destructor that panics or is killed does not stop the
//! others; `join` reports the first such panic if the body itself returned
//! a value. A thread's root does the same at thread exit, from a
//! thread-local destructor. A coroutine still alive when its thread exits
//! is killed then, and drops its values as it ends; one that can never end
//! (left waiting on something nothing can signal) keeps its values: they
//! are leaked with its stack, never dropped.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::greenlet::Families;
use crate::hub::Hub;
use crate::task::{Header, JoinError};

/// Declares coroutine-local statics: each coroutine (and each thread's
/// root) has its own value, created by the initialiser on its first access
/// in that coroutine and dropped when the coroutine ends, however it ends.
/// gevent's `gevent.local`.
///
/// ```
/// use std::cell::Cell;
/// moss::coroutine_local! {
///     /// The request this coroutine serves.
///     static REQUEST_ID: Cell<u64> = Cell::new(0);
/// }
///
/// REQUEST_ID.with(|v| v.set(7)); // the root's value
/// let h = moss::spawn(|| {
///     let before = REQUEST_ID.get(); // this coroutine's own value
///     REQUEST_ID.set(42);
///     (before, REQUEST_ID.get())
/// });
/// assert_eq!(h.join().unwrap(), (0, 42));
/// assert_eq!(REQUEST_ID.get(), 7);
/// ```
///
/// Several statics may be declared in one invocation; attributes and
/// visibility are kept. The initialiser is an expression evaluated once per
/// coroutine that uses the local (it may call moss functions, even block).
#[macro_export]
macro_rules! coroutine_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])*
        $vis static $name: $crate::CoroutineLocal<$t> = $crate::CoroutineLocal::new({
            fn init() -> $t {
                $init
            }
            init
        });
        $crate::coroutine_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $crate::coroutine_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
}

/// A coroutine-local value, declared with
/// [`coroutine_local!`](crate::coroutine_local); see there.
///
/// Which value `with` sees: the running coroutine's; on a thread's root (or
/// on a thread without coroutines), the root's; in a greenlet, that of the
/// coroutine or root running the greenlet.
pub struct CoroutineLocal<T: 'static> {
    init: fn() -> T,
}

impl<T: 'static> CoroutineLocal<T> {
    /// Used by [`coroutine_local!`](crate::coroutine_local): a local whose
    /// values come from `init`.
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> CoroutineLocal<T> {
        CoroutineLocal { init }
    }

    /// Calls `f` with the current coroutine's value, creating it first if
    /// this coroutine has not used it yet.
    ///
    /// If the initialiser panics or is cancelled (`kill`, `timeout`), the
    /// unwind passes through and nothing is stored: the next access runs it
    /// again. If the initialiser itself initialised this local (through a
    /// nested `with`), that value is kept and the outer one dropped.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let key = self.key();
        if let Some(v) = current_map(|m| m.get(key)) {
            return f(downcast(&v));
        }
        let fresh: Rc<dyn Any> = Rc::new((self.init)());
        // The context may have changed while the initialiser ran (a
        // greenlet resumed by another coroutine): store it where we are now.
        match current_map(|m| m.insert(key, fresh.clone())) {
            Stored::Ours => f(downcast(&fresh)),
            // A nested initialisation won; `fresh` is dropped at the end,
            // outside any borrow of the map.
            Stored::Existing(v) => f(downcast(&v)),
            // The map is closed (its coroutine or thread is ending): a
            // temporary value, dropped when `f` returns.
            Stored::Closed => {
                let _depth = TemporaryDepth::enter();
                let r = f(downcast(&fresh));
                drop(fresh);
                r
            }
        }
    }

    fn key(&'static self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

/// The value of a key: always of the key's own type (a key is the address
/// of one `static CoroutineLocal<T>`).
fn downcast<T: 'static>(v: &Rc<dyn Any>) -> &T {
    v.downcast_ref::<T>()
        .expect("a coroutine-local key holds a value of its own type")
}

/// How deep temporaries nest on this thread: a destructor that uses its own
/// local after the map closed makes a temporary, whose destructor makes
/// another, ...; that recursion is stopped with a panic instead of a stack
/// overflow.
struct TemporaryDepth;

const MAX_TEMPORARY_DEPTH: u32 = 16;

thread_local! {
    static TEMPORARY_DEPTH: Cell<u32> = const { Cell::new(0) };
}

impl TemporaryDepth {
    fn enter() -> TemporaryDepth {
        let d = TEMPORARY_DEPTH.with(|d| d.replace(d.get() + 1));
        if d >= MAX_TEMPORARY_DEPTH {
            TEMPORARY_DEPTH.with(|d| d.set(d.get() - 1));
            panic!(
                "moss::coroutine_local: a value's destructor keeps using its own local after \
                 the coroutine's locals were dropped"
            );
        }
        TemporaryDepth
    }
}

impl Drop for TemporaryDepth {
    fn drop(&mut self) {
        TEMPORARY_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// What [`LocalMap::insert`] did with a fresh value.
enum Stored {
    Ours,
    /// The key had a value already: this one.
    Existing(Rc<dyn Any>),
    /// The map is closed: nothing stored.
    Closed,
}

impl<T: 'static> CoroutineLocal<Cell<T>> {
    /// The current coroutine's value (a copy).
    pub fn get(&'static self) -> T
    where
        T: Copy,
    {
        self.with(Cell::get)
    }

    /// Sets the current coroutine's value.
    pub fn set(&'static self, v: T) {
        self.with(|c| c.set(v))
    }

    /// Replaces the current coroutine's value, returning the old one.
    pub fn replace(&'static self, v: T) -> T {
        self.with(|c| c.replace(v))
    }

    /// Takes the current coroutine's value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(Cell::take)
    }
}

impl<T: 'static> CoroutineLocal<RefCell<T>> {
    /// Calls `f` with a shared borrow of the current coroutine's value.
    ///
    /// # Panics
    /// If the value is mutably borrowed (by an enclosing `with_borrow_mut`).
    pub fn with_borrow<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.with(|c| f(&c.borrow()))
    }

    /// Calls `f` with a mutable borrow of the current coroutine's value.
    ///
    /// # Panics
    /// If the value is borrowed already (by an enclosing `with_borrow*`).
    pub fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with(|c| f(&mut c.borrow_mut()))
    }

    /// Sets the current coroutine's value.
    pub fn set(&'static self, v: T) {
        self.with(|c| *c.borrow_mut() = v)
    }

    /// Takes the current coroutine's value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(RefCell::take)
    }
}

impl<T: 'static> fmt::Debug for CoroutineLocal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoroutineLocal").finish_non_exhaustive()
    }
}

/// One context's values, in order of initialisation, and its greenlet
/// families.
#[derive(Default)]
pub(crate) struct LocalMap {
    entries: RefCell<Vec<(usize, Rc<dyn Any>)>>,
    /// Being (or done being) torn down: nothing new is stored.
    closed: Cell<bool>,
    /// Which greenlet of each family this context runs (`greenlet.rs`).
    /// Not values: they stay usable until the map is freed.
    greenlets: Families,
}

impl LocalMap {
    fn get(&self, key: usize) -> Option<Rc<dyn Any>> {
        let entries = self.entries.borrow();
        entries.iter().find(|e| e.0 == key).map(|e| e.1.clone())
    }

    /// Stores `v` under `key` unless the map is closed or `key` is present
    /// already.
    fn insert(&self, key: usize, v: Rc<dyn Any>) -> Stored {
        if let Some(existing) = self.get(key) {
            return Stored::Existing(existing);
        }
        if self.closed.get() {
            return Stored::Closed;
        }
        self.entries.borrow_mut().push((key, v));
        Stored::Ours
    }

    /// Closes the map and drops its values, newest first, each outside any
    /// borrow of the map (a destructor may use the others). Returns the
    /// first panic a destructor raised.
    fn destroy(&self) -> Option<Box<dyn Any + Send>> {
        self.closed.set(true);
        let mut first_panic = None;
        loop {
            let last = self.entries.borrow_mut().pop();
            let Some((_, value)) = last else { break };
            if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
                first_panic.get_or_insert(p);
            }
        }
        // Give the buffer back; the closed, empty map stays for late users.
        drop(std::mem::take(&mut *self.entries.borrow_mut()));
        first_panic
    }
}

/// The end of a coroutine that used locals (on its own stack, after its
/// body returned `result`): drops them and frees its map. The first panic
/// of a destructor becomes the result if the body returned a value.
#[cold]
#[inline(never)]
pub(crate) fn end<T>(h: &Header, result: Result<T, JoinError>) -> Result<T, JoinError> {
    let p = h.locals.get();
    if p.is_null() {
        return result;
    }
    // The destructors `destroy` runs may use the map through `current_map`
    // meanwhile, which only ever lends it to code that runs no user code.
    // SAFETY: a non-null `locals` came from `Box::into_raw` in `current_map`
    // and is freed only below; no `&mut` to it exists while this `&` lives.
    let first_panic = unsafe { &*p }.destroy();
    h.locals.set(std::ptr::null_mut());
    // SAFETY: as above; nothing refers to the map any more: `locals` is
    // null, and this coroutine runs no user code after its end.
    drop(unsafe { Box::from_raw(p) });
    match first_panic {
        Some(payload) if result.is_ok() => Err(JoinError::from_payload(h, payload)),
        _ => result,
    }
}

/// A thread's root map: leaked (a few words per thread that uses root
/// locals), so that it stays reachable from every thread-local destructor;
/// [`RootGuard`] empties it at thread exit.
struct RootGuard(&'static LocalMap);

impl Drop for RootGuard {
    fn drop(&mut self) {
        // A panicking destructor must not escape a thread-local destructor
        // (the process would abort); the panic hook has reported it.
        drop(self.0.destroy());
    }
}

thread_local! {
    static ROOT_MAP: Cell<Option<&'static LocalMap>> = const { Cell::new(None) };
    static ROOT_GUARD: RefCell<Option<RootGuard>> = const { RefCell::new(None) };
}

/// The root's map of this thread, made on first use.
fn root_map() -> &'static LocalMap {
    if let Some(m) = ROOT_MAP.with(Cell::get) {
        return m;
    }
    let map: &'static LocalMap = Box::leak(Box::default());
    // The guard's slot is gone once thread-local destruction has passed
    // it: then no value stored could ever be dropped, so the map is closed
    // from the start (accesses get temporaries).
    let guarded = ROOT_GUARD
        .try_with(|g| {
            let Ok(mut g) = g.try_borrow_mut() else {
                return false;
            };
            *g = Some(RootGuard(map));
            true
        })
        .unwrap_or(false);
    if !guarded {
        map.closed.set(true);
    }
    ROOT_MAP.with(|m| m.set(Some(map)));
    map
}

/// Runs `f` on the running context's greenlet families (see
/// `greenlet.rs`); `f` must run no user code.
pub(crate) fn with_greenlet_families<R>(f: impl FnOnce(&Families) -> R) -> R {
    current_map(|m| f(&m.greenlets))
}

/// Runs `f` on the running context's map: the current coroutine's (made
/// on first use), or the thread root's. `f` must run no user code: the map
/// may not be freed while it is lent.
#[inline]
fn current_map<R>(f: impl FnOnce(&LocalMap) -> R) -> R {
    if let Some(hub) = Hub::try_current()
        && hub.in_coroutine()
    {
        let h = hub.current_header();
        let mut p = h.locals.get();
        if p.is_null() {
            p = Box::into_raw(Box::<LocalMap>::default());
            h.locals.set(p);
        }
        // SAFETY: `p` is this running coroutine's map, from `Box::into_raw`
        // above; only `end` frees it, on this coroutine's stack once its
        // body is over (and never while `f` runs: `f` runs no user code).
        return f(unsafe { &*p });
    }
    f(root_map())
}
