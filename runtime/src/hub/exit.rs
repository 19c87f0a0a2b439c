//! A hub's end: what happens to its coroutines when its thread exits.
//!
//! ```text
//!  thread body returns
//!        │
//!        ▼
//!  Rust thread-local destructors run ─── moss works as usual in them: the
//!        │                                hub is alive (a `thread_local!`
//!        │                                value whose Drop spawns, sleeps,
//!        ▼                                joins or does I/O just does it)
//!  pthread-key destructors run: the hub's owner key (registered at its
//!  creation) ─▶ shutdown():
//!        │        repeat: every coroutine that never ran is dropped unrun
//!        │                (killed), every other one is killed (a kill that
//!        │                stays pending until it has finished), and the hub
//!        │                loop runs until all are done,
//!        │        until no coroutine is left, or the rest can never make
//!        │        progress (nothing can wake them: they are leaked)
//!        ▼
//!  the hub is freed (its epoll fd, eventfd and altstack closed, free stacks
//!  to the process-wide pool); the thread-local hub pointer is null again
//! ```
//!
//! Background coroutines (`Builder::background`) are killed like the others.
//!
//! Why a kill: a coroutine blocked in `Queue::get` or `Mutex::lock` on an
//! object shared with other threads must leave that wait list, or the next
//! hand-off (a `put`, an `unlock`) would go to a waiter that never runs, and
//! be lost. Unwinding it runs its destructors, gives back anything it was
//! handed, and returns its stack to the pool. A coroutine that catches its
//! `Cancelled` is unwound again at its next blocking point; a wait it enters
//! while unwinding fails early if it can fail (a sleep ends), and keeps
//! waiting if it cannot (a lock, an untimed get). Coroutines spawned while
//! the hub shuts down get the same pending kill: they run until their first
//! blocking point. A coroutine that can never make progress (waiting on
//! something no thread can signal) is leaked, with its stack: it is in no
//! wait list another thread could hand something to (a wait that another
//! thread could end keeps the shutdown waiting instead).
//!
//! Why this order: the owner is a pthread key, whose destructors run after
//! every Rust thread-local destructor, so moss keeps working in those (the
//! alternative, freeing the hub from a Rust thread-local, aborts when a
//! later-destroyed thread-local calls moss). Its cost: a coroutine killed at
//! thread exit runs its destructors after the thread's other thread-locals
//! are gone (`LocalKey::with` panics there, `try_with` reports it). Threads
//! moss runs itself (`run_per_core`) shut their hub down before returning,
//! while the thread-locals still live.
//!
//! After the shutdown, a moss call (from another pthread-key destructor)
//! makes a fresh hub, owned by the key again: glibc calls the key's
//! destructor again in its next round (at most four rounds, then the hub is
//! leaked). A thread that exits by `exit(3)` (the main thread returning from
//! `main`) runs no pthread-key destructors: its coroutines end with the
//! process.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{HUB, Hub, Until};
use crate::task::{State, Task, Wakeup};

/// The process-wide pthread key whose per-thread value owns the thread's
/// hub, or -1 for none. Made once per process (a forked child that copied
/// it half made makes its own: `ForkSafeOnce`).
static OWNER_KEY: AtomicI64 = AtomicI64::new(-1);
static OWNER_KEY_MADE: crate::sys::atfork::ForkSafeOnce = crate::sys::atfork::ForkSafeOnce::new();

/// The owner key (created on first use); `None` if the process has no keys
/// left (then hubs are leaked at thread exit instead).
fn owner_key() -> Option<libc::pthread_key_t> {
    OWNER_KEY_MADE.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; `hub_exit` has the signature
        // pthread key destructors need and never unwinds.
        if unsafe { libc::pthread_key_create(&mut key, Some(hub_exit)) } == 0 {
            OWNER_KEY.store(i64::from(key), Ordering::Release);
        }
    });
    let key = OWNER_KEY.load(Ordering::Acquire);
    (key >= 0).then_some(key as libc::pthread_key_t)
}

/// Makes the hub at `p` (just created, boxed) the one the owner key frees
/// at this thread's exit.
pub(super) fn own(p: *mut Hub) {
    if let Some(key) = owner_key() {
        // In a forked child, the inherited hub is replaced here by the
        // child's own, or `hub_exit` finds it is no longer this thread's hub
        // and leaves it.
        // SAFETY: setting this thread's value of a key we created; `p` stays
        // valid until `hub_exit` frees it (above).
        unsafe { libc::pthread_setspecific(key, p.cast()) };
    }
}

thread_local! {
    /// The owner key's destructor has run on this thread: its Rust
    /// thread-locals (std's among them) are gone. `const`, no destructor:
    /// readable to the very end.
    static EXITED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is past its Rust thread-local destruction (a hub
/// made now must not use std's thread-locals, `std::thread::current()`
/// panics).
pub(crate) fn thread_exited() -> bool {
    EXITED.with(Cell::get)
}

/// The owner key's destructor: shuts the hub down and frees it.
extern "C" fn hub_exit(p: *mut libc::c_void) {
    EXITED.with(|e| e.set(true));
    let p = p.cast::<Hub>();
    // A panic must not leave an `extern "C"` function; one here (a bug, or
    // the hub loop's "would block forever" in a context that cannot have it)
    // leaks the hub instead of freeing it.
    let r = catch_unwind(AssertUnwindSafe(|| {
        if HUB.with(Cell::get) != p.cast_const() {
            return false; // not this thread's hub (a forked child's leftover)
        }
        // SAFETY: `p` is this thread's live hub (checked above).
        unsafe { &*p }.shutdown();
        true
    }));
    if let Ok(true) = r {
        HUB.with(|h| h.set(std::ptr::null()));
        // SAFETY: `p` came from `Box::into_raw` in `Hub::create` and is freed
        // only here, once; the thread-local no longer points at it. Its
        // coroutines are done, or leaked by `Hub`'s destructor.
        drop(unsafe { Box::from_raw(p) });
    }
}

impl Hub {
    /// Kills every coroutine of this hub and runs them until they are done
    /// (see the module docs). Runs on the root, outside the hub loop. The
    /// hub stays usable afterwards.
    pub(crate) fn shutdown(&self) {
        debug_assert!(!self.in_coroutine(), "shutdown runs on the root");
        self.exiting.set(true);
        loop {
            let tasks: Vec<Rc<dyn Task>> =
                self.tasks.borrow().iter().map(|(_, t)| t.clone()).collect();
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                let h = t.header();
                if h.state.is(State::New) {
                    h.state.kill_unstarted();
                    if let Some(k) = h.timer.take() {
                        self.timers.borrow_mut().cancel(k);
                    }
                    // Its closure's destructors run here; one that panics
                    // (reported by the panic hook) must not keep the other
                    // coroutines from being killed.
                    let _ = catch_unwind(AssertUnwindSafe(|| self.finish_unstarted(&t, None)));
                } else if h.state.request_exit_kill() {
                    self.wake_parked(&t, Wakeup::Cancelled);
                }
            }
            if !self.run_until(Until::Empty, false) {
                break; // the rest can never make progress: leaked
            }
        }
        self.exiting.set(false);
    }
}
