//! `Pool` and `Group`: sets of coroutines of one thread, gevent's
//! `gevent.pool.Pool` (at most N at once) and `gevent.pool.Group` (no limit).
//!
//! Both share `Members`: a table of the coroutines spawned through the set
//! (their control blocks, so `kill` works while the caller holds the
//! `JoinHandle`s), an [`Event`] set whenever the table is empty (`join`), and
//! for a `Pool` a [`Semaphore`] of free slots that `spawn` takes before it
//! spawns. Each member's closure owns a `Slot` guard; dropping it — when the
//! closure returns, panics, is killed, or is dropped unstarted — takes the
//! member out of the table and frees its slot. So a pool never has more than
//! N member closures alive, whatever happens to them.
//!
//! Pools are handles (`Clone` shares the set) and `!Send`: their coroutines
//! live on the thread that spawned them.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::Duration;

use crate::cancel::Cancelled;
use crate::coroutine::kill_task;
use crate::hub::Hub;
use crate::sync::{Event, Receiver, Semaphore, Timeout, channel};
use crate::task::Task;
use crate::{JoinHandle, spawn};

struct Members {
    /// Free slots (`Pool`), or `None` (`Group`).
    slots: Option<Semaphore>,
    size: usize,
    live: RefCell<HashMap<u64, Rc<dyn Task>>>,
    next_key: Cell<u64>,
    empty: Event,
}

/// Owned by a member's closure: leaving the set when it is dropped.
struct Slot {
    set: Rc<Members>,
    key: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let gone = self.set.live.borrow_mut().remove(&self.key);
        drop(gone);
        if let Some(s) = &self.set.slots {
            s.release();
        }
        if self.set.live.borrow().is_empty() {
            self.set.empty.set();
        }
    }
}

impl Members {
    fn new(size: Option<usize>) -> Rc<Members> {
        let empty = Event::new();
        empty.set();
        Rc::new(Members {
            slots: size.map(Semaphore::new),
            size: size.unwrap_or(usize::MAX),
            live: RefCell::new(HashMap::new()),
            next_key: Cell::new(0),
            empty,
        })
    }

    fn spawn<F, T>(self: &Rc<Self>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if let Some(s) = &self.slots {
            s.acquire();
        }
        self.spawn_in_slot(f)
    }

    /// Spawns `f` in a slot the caller already took.
    fn spawn_in_slot<F, T>(self: &Rc<Self>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        let slot = Slot {
            set: self.clone(),
            key,
        };
        let h = spawn(move || {
            let _slot = slot;
            f()
        });
        let hdr = h.header();
        let task = Hub::current()
            .task(hdr.key.get(), hdr.id.0)
            .expect("a coroutine just spawned is live");
        self.live.borrow_mut().insert(key, task);
        self.empty.clear();
        h
    }

    fn map<I, R, F>(self: &Rc<Self>, f: F, items: impl IntoIterator<Item = I>) -> Vec<R>
    where
        F: Fn(I) -> R + 'static,
        I: 'static,
        R: 'static,
    {
        let f = Rc::new(f);
        let hs: Vec<JoinHandle<R>> = items
            .into_iter()
            .map(|item| {
                let f = f.clone();
                self.spawn(move || f(item))
            })
            .collect();
        let mut out = Vec::with_capacity(hs.len());
        let mut hs = hs.into_iter();
        while let Some(h) = hs.next() {
            match h.join() {
                Ok(v) => out.push(v),
                Err(e) => {
                    for rest in hs {
                        rest.kill();
                    }
                    if e.is_panic() {
                        resume_unwind(e.into_panic());
                    }
                    panic!("moss: a map task failed: {e}");
                }
            }
        }
        out
    }

    fn imap_unordered<I, R, F>(
        self: &Rc<Self>,
        f: F,
        items: impl IntoIterator<Item = I> + 'static,
    ) -> ImapUnordered<R>
    where
        F: Fn(I) -> R + 'static,
        I: 'static,
        R: 'static,
    {
        let (tx, rx) = channel::<Result<R, Box<dyn Any + Send>>>();
        let set = self.clone();
        let f = Rc::new(f);
        let feeder = spawn(move || {
            for item in items {
                let (tx, f) = (tx.clone(), f.clone());
                set.spawn(move || match catch_unwind(AssertUnwindSafe(|| f(item))) {
                    Ok(r) => drop(tx.send(Ok(r))),
                    Err(p) if p.is::<Cancelled>() => resume_unwind(p),
                    Err(p) => drop(tx.send(Err(p))),
                });
            }
        });
        ImapUnordered { rx, feeder }
    }

    fn imap<I, R, F>(
        self: &Rc<Self>,
        f: F,
        items: impl IntoIterator<Item = I> + 'static,
    ) -> ImapOrdered<R>
    where
        F: Fn(I) -> R + 'static,
        I: 'static,
        R: 'static,
    {
        let (tx, rx) = channel::<JoinHandle<R>>();
        let set = self.clone();
        let f = Rc::new(f);
        let feeder = spawn(move || {
            for item in items {
                let f = f.clone();
                if tx.send(set.spawn(move || f(item))).is_err() {
                    return; // the iterator is gone
                }
            }
        });
        ImapOrdered { rx, feeder }
    }

    fn apply<F, T>(self: &Rc<Self>, f: F) -> T
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(e) => panic!("moss: an apply task failed: {e}"),
        }
    }

    fn apply_async<F, T, C>(self: &Rc<Self>, f: F, callback: C) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
        C: FnOnce(&T) + 'static,
    {
        self.spawn(move || {
            let v = f();
            callback(&v);
            v
        })
    }

    fn join(&self, d: Option<Duration>) -> bool {
        match d {
            None => {
                self.empty.wait();
                true
            }
            Some(d) => self.empty.wait_timeout(d),
        }
    }

    fn kill(&self) {
        let me = Hub::current().current_header().id;
        let mut tasks: Vec<Rc<dyn Task>> = self.live.borrow().values().cloned().collect();
        // The caller, if it is a member, dies last.
        tasks.sort_by_key(|t| t.header().id == me);
        for t in tasks {
            kill_task(t.header());
        }
    }

    /// Requests every member's death without waiting for it.
    fn kill_nowait(&self) {
        let tasks: Vec<Rc<dyn Task>> = self.live.borrow().values().cloned().collect();
        for t in tasks {
            crate::cancel::kill_nowait(t.header());
        }
    }

    fn len(&self) -> usize {
        self.live.borrow().len()
    }
}

/// An iterator of results in completion order; see [`Pool::imap_unordered`].
///
/// Dropping it stops spawning further items (tasks already running finish,
/// their results are discarded).
pub struct ImapUnordered<R> {
    rx: Receiver<Result<R, Box<dyn Any + Send>>>,
    feeder: JoinHandle<()>,
}

impl<R> Iterator for ImapUnordered<R> {
    type Item = R;
    /// The next result to finish; re-raises a task's panic.
    fn next(&mut self) -> Option<R> {
        match self.rx.recv() {
            Ok(Ok(r)) => Some(r),
            Ok(Err(p)) => resume_unwind(p),
            Err(_) => None, // every task and the feeder are done
        }
    }
}

impl<R> Drop for ImapUnordered<R> {
    fn drop(&mut self) {
        self.feeder.kill();
    }
}

impl<R> fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("ready", &self.rx.len())
            .finish()
    }
}

/// An iterator of results in input order; see [`Pool::imap`].
///
/// Dropping it stops spawning further items (tasks already running finish,
/// their results are discarded).
pub struct ImapOrdered<R> {
    rx: Receiver<JoinHandle<R>>,
    feeder: JoinHandle<()>,
}

impl<R> Iterator for ImapOrdered<R> {
    type Item = R;
    /// The result of the next item, waiting for it if it is still running;
    /// re-raises its panic. If its task was killed (by the pool's `kill`),
    /// the iteration ends: the items spawned since are killed too, and no
    /// further item is spawned.
    fn next(&mut self) -> Option<R> {
        let h = self.rx.recv().ok()?;
        match h.join() {
            Ok(v) => Some(v),
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(_) => {
                // Items spawned after the kill die too.
                self.feeder.kill();
                while let Ok(h) = self.rx.try_recv() {
                    h.kill();
                }
                None
            }
        }
    }
}

impl<R> Drop for ImapOrdered<R> {
    fn drop(&mut self) {
        self.feeder.kill();
    }
}

impl<R> fmt::Debug for ImapOrdered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapOrdered")
            .field("spawned", &self.rx.len())
            .finish()
    }
}

/// Kills the members of a [`Pool`] or [`Group`] when dropped: see
/// [`Group::kill_on_drop`].
#[must_use = "the members are killed when this guard is dropped"]
pub struct KillOnDrop {
    set: Rc<Members>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // This thread is unwinding (its coroutine was killed, or
            // panicked): a kill is not delivered while any context of the
            // thread unwinds, so waiting for the members' deaths here would
            // wait for ever. Request them; they are delivered once the
            // unwinding is over.
            self.set.kill_nowait();
        } else {
            self.set.kill();
        }
    }
}

impl fmt::Debug for KillOnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillOnDrop")
            .field("running", &self.set.len())
            .finish()
    }
}

/// The methods `Pool` and `Group` share, each calling the same method of
/// their `Members` (`self.set`). The caller gives, per type, the docs of the
/// first six, which differ (a pool waits for a free slot, a group never
/// waits).
macro_rules! members_api {
    ($(
        impl $ty:ident {
            $(#[$spawn:meta])* spawn;
            $(#[$map:meta])* map;
            $(#[$imap_unordered:meta])* imap_unordered;
            $(#[$imap:meta])* imap;
            $(#[$apply:meta])* apply;
            $(#[$apply_async:meta])* apply_async;
        }
    )+) => {$(
        impl $ty {
            $(#[$spawn])*
            pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
            where
                F: FnOnce() -> T + 'static,
                T: 'static,
            {
                self.set.spawn(f)
            }

            $(#[$map])*
            pub fn map<I, R, F>(&self, f: F, items: impl IntoIterator<Item = I>) -> Vec<R>
            where
                F: Fn(I) -> R + 'static,
                I: 'static,
                R: 'static,
            {
                self.set.map(f, items)
            }

            $(#[$imap_unordered])*
            pub fn imap_unordered<I, R, F>(
                &self,
                f: F,
                items: impl IntoIterator<Item = I> + 'static,
            ) -> ImapUnordered<R>
            where
                F: Fn(I) -> R + 'static,
                I: 'static,
                R: 'static,
            {
                self.set.imap_unordered(f, items)
            }

            $(#[$imap])*
            pub fn imap<I, R, F>(
                &self,
                f: F,
                items: impl IntoIterator<Item = I> + 'static,
            ) -> ImapOrdered<R>
            where
                F: Fn(I) -> R + 'static,
                I: 'static,
                R: 'static,
            {
                self.set.imap(f, items)
            }

            $(#[$apply])*
            pub fn apply<F, T>(&self, f: F) -> T
            where
                F: FnOnce() -> T + 'static,
                T: 'static,
            {
                self.set.apply(f)
            }

            $(#[$apply_async])*
            pub fn apply_async<F, T, C>(&self, f: F, callback: C) -> JoinHandle<T>
            where
                F: FnOnce() -> T + 'static,
                T: 'static,
                C: FnOnce(&T) + 'static,
            {
                self.set.apply_async(f, callback)
            }

            /// Waits until no member is running.
            pub fn join(&self) {
                self.set.join(None);
            }

            /// [`join`](Self::join) for at most `d`: true if no member is left.
            pub fn join_timeout(&self, d: Duration) -> bool {
                self.set.join(Some(d))
            }

            /// Kills every member and waits until they are gone.
            pub fn kill(&self) {
                self.set.kill();
            }

            /// Members running (or spawned and not started) now.
            pub fn len(&self) -> usize {
                self.set.len()
            }

            /// Whether no member is running.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    )+};
}

/// Runs at most `size` coroutines at once (gevent's `Pool`): [`spawn`](Self::spawn)
/// waits for a free slot.
///
/// A handle (`Clone` shares the pool), `!Send`: members run on the thread
/// that spawned them.
///
/// ```
/// use std::time::Duration;
/// use moss::pool::Pool;
/// let pool = Pool::new(5);
/// let squares = pool.map(|i: u64| { moss::sleep(Duration::from_millis(5)); i * i }, 0..20);
/// assert_eq!(squares[19], 361); // in input order
/// assert_eq!(pool.free_count(), 5);
/// ```
///
/// ```compile_fail,E0277
/// let pool = moss::pool::Pool::new(2);
/// std::thread::spawn(move || pool.join()); // Pool is !Send
/// ```
#[derive(Clone)]
pub struct Pool {
    set: Rc<Members>,
}

impl Pool {
    /// A pool of `size` slots.
    ///
    /// # Panics
    /// If `size` is 0 (nothing could ever run); use [`Group`] for no limit.
    pub fn new(size: usize) -> Pool {
        assert!(
            size >= 1,
            "moss: Pool::new(0): a pool needs at least one slot (Group has no limit)"
        );
        Pool {
            set: Members::new(Some(size)),
        }
    }

    /// [`spawn`](Self::spawn), waiting at most `d` for a free slot
    /// (`Duration::ZERO`: only if one is free now). On timeout `f` is
    /// dropped unrun.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = moss::pool::Pool::new(1);
    /// let busy = pool.spawn(|| moss::sleep(Duration::from_millis(50)));
    /// assert!(pool.spawn_timeout(Duration::ZERO, || ()).is_err());
    /// busy.join().unwrap();
    /// assert!(pool.spawn_timeout(Duration::ZERO, || ()).is_ok());
    /// ```
    pub fn spawn_timeout<F, T>(&self, d: Duration, f: F) -> Result<JoinHandle<T>, Timeout>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if let Some(s) = &self.set.slots {
            s.acquire_timeout(d)?;
        }
        Ok(self.set.spawn_in_slot(f))
    }

    /// A guard that [`kill`](Self::kill)s every member when it is dropped;
    /// see [`Group::kill_on_drop`].
    pub fn kill_on_drop(&self) -> KillOnDrop {
        KillOnDrop {
            set: self.set.clone(),
        }
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        self.set.size
    }

    /// Slots free now (a `spawn` would not wait).
    pub fn free_count(&self) -> usize {
        self.set
            .slots
            .as_ref()
            .map_or(usize::MAX, Semaphore::available_permits)
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.free_count() == 0
    }

    /// Waits until a slot is free (without taking it).
    pub fn wait_available(&self) {
        if let Some(s) = &self.set.slots {
            s.acquire();
            s.release();
        }
    }

    /// [`wait_available`](Self::wait_available) for at most `d`.
    pub fn wait_available_timeout(&self, d: Duration) -> Result<(), Timeout> {
        if let Some(s) = &self.set.slots {
            s.acquire_timeout(d)?;
            s.release();
        }
        Ok(())
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size())
            .field("running", &self.len())
            .finish()
    }
}

/// A set of coroutines without a size limit (gevent's `Group`): spawn
/// through it, then `join` or `kill` them all.
///
/// ```
/// let group = moss::pool::Group::new();
/// let hs: Vec<_> = (0..3).map(|i| group.spawn(move || i * 10)).collect();
/// group.join();
/// assert!(group.is_empty());
/// assert_eq!(moss::join_all(hs).into_iter().map(Result::unwrap).sum::<i32>(), 30);
/// ```
#[derive(Clone)]
pub struct Group {
    set: Rc<Members>,
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group {
            set: Members::new(None),
        }
    }

    /// A guard that [`kill`](Self::kill)s every member when it is dropped,
    /// including when the scope that holds it unwinds (a panic, or a
    /// `kill` or `timeout` of its coroutine). Coroutines are detached when
    /// their `JoinHandle` is dropped (as in gevent and std); spawned through
    /// a group with this guard, they cannot outlive the code that needs
    /// them, such as a connection handler's writer coroutine:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    ///
    /// let ticks = Rc::new(Cell::new(0));
    /// let t = ticks.clone();
    /// let handler = moss::spawn(move || {
    ///     let children = moss::pool::Group::new();
    ///     let _kill = children.kill_on_drop();
    ///     children.spawn(move || loop {
    ///         t.set(t.get() + 1);
    ///         moss::sleep(Duration::from_millis(1));
    ///     });
    ///     moss::sleep(Duration::from_secs(3600)); // the handler's work
    /// });
    /// while ticks.get() == 0 {
    ///     moss::yield_now();
    /// }
    /// handler.kill(); // the ticker dies with its handler
    /// let n = ticks.get();
    /// moss::sleep(Duration::from_millis(20));
    /// assert_eq!(ticks.get(), n);
    /// ```
    ///
    /// Dropped normally, the guard waits until every member has died, so a
    /// member that blocks in a destructor keeps the guard's owner waiting
    /// too. Dropped while its coroutine unwinds, it only requests the kills:
    /// they are delivered as soon as the unwinding is over (a coroutine
    /// cannot start unwinding while another one of its thread is
    /// mid-unwind).
    pub fn kill_on_drop(&self) -> KillOnDrop {
        KillOnDrop {
            set: self.set.clone(),
        }
    }
}

members_api! {
    impl Pool {
        /// Spawns `f` as a member once a slot is free (the caller waits until
        /// then, letting other coroutines run). A `kill` or `timeout` of the
        /// caller while it waits unwinds it without spawning.
        spawn;
        /// Runs `f` on every item through the pool and returns the results in
        /// input order. If a task panics, the remaining ones are killed and the
        /// panic is re-raised in the caller.
        map;
        /// Runs `f` on every item through the pool, yielding results as tasks
        /// finish. Items are spawned by a feeder coroutine as slots free up.
        ///
        /// ```
        /// use std::time::Duration;
        /// let pool = moss::pool::Pool::new(3);
        /// let it = pool.imap_unordered(|ms: u64| { moss::sleep(Duration::from_millis(ms)); ms }, [90, 10, 50]);
        /// assert_eq!(it.collect::<Vec<_>>(), [10, 50, 90]);
        /// ```
        imap_unordered;
        /// Runs `f` on every item through the pool, yielding the results in
        /// input order (gevent's `imap`): the next result as soon as it and
        /// those before it are done, while later items still run. Items are
        /// spawned by a feeder coroutine as slots free up; iterating re-raises
        /// a task's panic.
        ///
        /// ```
        /// use std::time::Duration;
        /// let pool = moss::pool::Pool::new(3);
        /// let it = pool.imap(|ms: u64| { moss::sleep(Duration::from_millis(ms)); ms }, [90, 10, 50]);
        /// assert_eq!(it.collect::<Vec<_>>(), [90, 10, 50]);
        /// ```
        imap;
        /// Runs `f` in the pool (waiting for a free slot first) and returns its
        /// result (gevent's `apply`); a panic in `f` is re-raised here. The
        /// caller waits, letting other coroutines run. If the caller is killed
        /// meanwhile, `f` goes on running as a detached member.
        ///
        /// ```
        /// let pool = moss::pool::Pool::new(2);
        /// assert_eq!(pool.apply(|| 6 * 7), 42);
        /// ```
        ///
        /// # Panics
        /// If `f` panics, or its coroutine was killed (by [`kill`](Self::kill)).
        apply;
        /// Spawns `f` in the pool (waiting for a free slot first, as gevent's
        /// `apply_async` does when the pool is full); when `f` returns,
        /// `callback(&value)` runs in the same coroutine, then its
        /// [`JoinHandle`] gives the value. A panic in `f` skips the callback; a
        /// panic in either is returned by `join`.
        ///
        /// ```
        /// use std::cell::Cell;
        /// use std::rc::Rc;
        /// let pool = moss::pool::Pool::new(2);
        /// let seen = Rc::new(Cell::new(0));
        /// let s = seen.clone();
        /// let h = pool.apply_async(|| 6 * 7, move |v| s.set(*v));
        /// assert_eq!(h.join().unwrap(), 42);
        /// assert_eq!(seen.get(), 42);
        /// ```
        apply_async;
    }
    impl Group {
        /// Spawns `f` as a member (never waits).
        spawn;
        /// [`Pool::map`] without a limit: one coroutine per item.
        map;
        /// [`Pool::imap_unordered`] without a limit.
        imap_unordered;
        /// [`Pool::imap`] without a limit: one coroutine per item, results in
        /// input order.
        imap;
        /// [`Pool::apply`] without a limit: runs `f` in a member and returns its
        /// result, re-raising its panic.
        apply;
        /// [`Pool::apply_async`] without a limit (never waits).
        apply_async;
    }
}

impl Default for Group {
    fn default() -> Group {
        Group::new()
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("running", &self.len())
            .finish()
    }
}
