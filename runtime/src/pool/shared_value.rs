//! A value in memory shared by processes: `multiprocessing.Value`
//! ([`SharedValue`]), and the [`Plain`] types it may hold.
//!
//! # Design
//!
//! One mapping of `MAP_SHARED` memory holds a [`LockWord`], an index and
//! *two* slots for the value:
//!
//! ```text
//!   [ lock word | active: 0 or 1 | slot 0: T | slot 1: T ]
//! ```
//!
//! Every access takes the lock. A read copies the active slot; a write
//! copies the new value into the other slot, then flips `active`. So a
//! process killed in the middle of a write (the lock is then taken over by
//! the next caller, see `process_lock.rs`) leaves the last complete value
//! behind, never a torn one: a half-written `bool`, `char` or enum would be
//! undefined behaviour.
//!
//! # What may be shared
//!
//! A child forked from the creator sees the same bytes at the same address.
//! A value that points somewhere (a reference, a `&'static str` leaked by a
//! child, a pointer, an fd number) would mean something else, or nothing,
//! in another process: hence the [`Plain`] bound instead of just `Copy`.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::doorbell::Doorbell;
use super::process_lock::LockWord;
use crate::hub::Hub;
use crate::sys::shm::SharedMem;

/// Plain data: `Copy` values that mean the same in every process forked
/// from the one that made them, so they may live in a [`SharedValue`].
///
/// Implemented for the integers, floats, `bool`, `char`, `()`,
/// [`Duration`](std::time::Duration), and arrays, tuples (up to 8) and
/// `Option`s of plain types. Padding is fine (values are copied as typed
/// values, never compared as bytes).
///
/// # Safety
/// An implementor holds no reference, pointer, file descriptor, handle or
/// other value whose meaning is local to one process: its fields are plain
/// types themselves. A struct of numbers qualifies:
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// struct Point { x: f64, y: f64 }
/// // SAFETY: two floats, nothing that points anywhere.
/// unsafe impl moss::pool::Plain for Point {}
///
/// let p = moss::pool::SharedValue::new(Point { x: 1.0, y: 2.0 }).unwrap();
/// p.update(|p| p.x += 1.0);
/// assert_eq!(p.get(), Point { x: 2.0, y: 2.0 });
/// ```
///
/// A reference does not:
///
/// ```compile_fail,E0277
/// let s = moss::pool::SharedValue::new("text").unwrap(); // &str is not Plain
/// ```
pub unsafe trait Plain: Copy + Send + 'static {}

macro_rules! plain {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: a primitive value, meaningful in any process.
        unsafe impl Plain for $t {}
    )* };
}
plain!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    bool,
    char,
    (),
    std::time::Duration,
);

// SAFETY: made of plain values only.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
// SAFETY: as above.
unsafe impl<T: Plain> Plain for Option<T> {}

macro_rules! plain_tuple {
    ($($t:ident),+) => {
        // SAFETY: made of plain values only.
        unsafe impl<$($t: Plain),+> Plain for ($($t,)+) {}
    };
}
plain_tuple!(A);
plain_tuple!(A, B);
plain_tuple!(A, B, C);
plain_tuple!(A, B, C, D);
plain_tuple!(A, B, C, D, E);
plain_tuple!(A, B, C, D, E, F);
plain_tuple!(A, B, C, D, E, F, G);
plain_tuple!(A, B, C, D, E, F, G, H);

/// The fixed part of the mapping.
#[repr(C)]
struct Head {
    lock: LockWord,
    /// Which slot holds the value.
    active: AtomicU32,
}

/// A `T` in memory shared by a parent and the children it forks after
/// creating it: `multiprocessing.Value`. `Send + Sync`; share it with an
/// `Arc` captured by the child's closure.
///
/// Every call takes the value's own lock (a coroutine waiting for it parks),
/// so each one is atomic: [`update`](Self::update) is a read-modify-write
/// no other process can interleave with (Python's `with v.get_lock():
/// v.value += 1`). A process killed in the middle of a call never leaves a
/// torn value (see the module docs).
///
/// ```
/// use std::sync::Arc;
/// use moss::pool::{Process, SharedValue};
///
/// let hits = Arc::new(SharedValue::new(0u32).unwrap());
/// let children: Vec<_> = (0..3)
///     .map(|_| {
///         let hits = hits.clone();
///         Process::new(move || for _ in 0..100 { hits.update(|n| *n += 1) })
///             .start()
///             .unwrap()
///     })
///     .collect();
/// for c in children {
///     assert_eq!(c.join().unwrap(), 0);
/// }
/// assert_eq!(hits.get(), 300);
/// ```
pub struct SharedValue<T: Plain> {
    mem: SharedMem,
    /// Byte offsets of the two slots.
    slots: [usize; 2],
    bell: Doorbell,
    /// The context inside `update`'s closure ([`context`]; thread 0 for
    /// none): a call from there would wait for itself forever.
    updating: [AtomicU64; 2],
    _value: PhantomData<fn(T) -> T>,
}

impl<T: Plain> SharedValue<T> {
    /// A shared value holding `v`.
    ///
    /// Fails with `InvalidInput` for a type aligned to more than a page.
    pub fn new(v: T) -> io::Result<SharedValue<T>> {
        if align_of::<T>() > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SharedValue: a type aligned to more than 4096 bytes cannot be placed in shared memory",
            ));
        }
        let first = size_of::<Head>().next_multiple_of(align_of::<T>());
        let second = first + size_of::<T>().next_multiple_of(align_of::<T>());
        let len = second + size_of::<T>();
        let s: SharedValue<T> = SharedValue {
            mem: SharedMem::new(len)?,
            slots: [first, second],
            bell: Doorbell::new()?,
            updating: [AtomicU64::new(0), AtomicU64::new(0)],
            _value: PhantomData,
        };
        // SAFETY: slot 0 is in the mapping, aligned for `T` (the mapping is
        // page aligned and `align_of::<T>()` divides the offset), and nobody
        // else can see it yet.
        unsafe { s.slot(0).write(v) };
        Ok(s)
    }

    fn head(&self) -> &Head {
        // SAFETY: the mapping starts with a `Head` (page aligned, zeroed: a
        // free lock, slot 0 active), lives as long as `self`, and the head is
        // only accessed through atomics.
        unsafe { &*self.mem.as_ptr().cast::<Head>() }
    }

    /// Slot `i` (0 or 1): in bounds and aligned for `T` (see `new`).
    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: the offset is inside the mapping (see `new`).
        unsafe { self.mem.as_ptr().add(self.slots[i as usize]).cast::<T>() }
    }

    /// Runs `f` with the value, under the lock; `f` returns the new value
    /// to store (if any) and a result.
    fn with_lock<R>(&self, f: impl FnOnce(T) -> (Option<T>, R)) -> R {
        let (thread, coroutine) = context();
        assert!(
            self.updating[0].load(Ordering::SeqCst) != thread
                || self.updating[1].load(Ordering::SeqCst) != coroutine,
            "moss: a SharedValue was used inside its own update closure (it would wait for itself forever)"
        );
        let head = self.head();
        head.lock.lock_until(&self.bell, None).expect("no deadline");
        let _unlock = Unlock(self);
        let active = head.active.load(Ordering::SeqCst);
        // SAFETY: the active slot holds a complete `T` (written by `new`, or
        // by a write that finished before it was made active), and no process
        // writes it: writers write the other slot, under the lock we hold.
        let current = unsafe { self.slot(active).read() };
        let (new, r) = f(current);
        if let Some(v) = new {
            let other = 1 - active;
            // SAFETY: the inactive slot is in bounds and aligned, and only
            // the lock holder (us) touches it.
            unsafe { self.slot(other).write(v) };
            head.active.store(other, Ordering::SeqCst);
        }
        r
    }

    /// The value now.
    pub fn get(&self) -> T {
        self.with_lock(|v| (None, v))
    }

    /// Stores `v`.
    pub fn set(&self, v: T) {
        self.with_lock(|_| (Some(v), ()));
    }

    /// Changes the value in place, atomically for every process, and
    /// returns what `f` returns (`v.update(|n| *n += 1)`). `f` runs holding
    /// the value's lock: it may block (others wait for it), and if it panics
    /// the value is left unchanged. Using the same `SharedValue` inside `f`
    /// panics (it would wait for itself).
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with_lock(|mut v| {
            let (thread, coroutine) = context();
            self.updating[1].store(coroutine, Ordering::SeqCst);
            self.updating[0].store(thread, Ordering::SeqCst);
            let _done = Updating(&self.updating[0]);
            let r = f(&mut v);
            (Some(v), r)
        })
    }
}

/// Unlocks a [`SharedValue`]'s lock when dropped.
struct Unlock<'a, T: Plain>(&'a SharedValue<T>);

impl<T: Plain> Drop for Unlock<'_, T> {
    fn drop(&mut self) {
        self.0.head().lock.unlock(&self.0.bell);
    }
}

/// Clears a `SharedValue`'s `updating` mark when dropped.
struct Updating<'a>(&'a AtomicU64);

impl Drop for Updating<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// The calling context within this process: a number for its thread
/// (never 0), and the running coroutine's id, or 0 on the thread's root
/// (with a hub or without one: a root that makes its hub meanwhile is still
/// the same context).
fn context() -> (u64, u64) {
    thread_local! {
        static THREAD: Cell<u64> = const { Cell::new(0) };
    }
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let thread = THREAD.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    });
    let coroutine = Hub::try_current()
        .filter(|h| h.in_coroutine())
        .map_or(0, |h| h.current_header().id.as_u64());
    (thread, coroutine)
}

impl<T: Plain + fmt::Debug> fmt::Debug for SharedValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SharedValue");
        // Like std's Mutex: never wait for the lock to print.
        let head = self.head();
        if head.lock.try_lock() {
            let _unlock = Unlock(self);
            // SAFETY: as in `with_lock`: the active slot holds a complete
            // `T`, and we hold the lock.
            let v = unsafe { self.slot(head.active.load(Ordering::SeqCst)).read() };
            d.field("value", &v);
        } else {
            d.field("value", &format_args!("<locked>"));
        }
        d.finish()
    }
}
