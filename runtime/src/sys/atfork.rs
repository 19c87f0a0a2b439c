//! Fork generations: telling state made by this process from state a forked
//! child inherited from its parent.
//!
//! `fork` copies every thread-shared object (a pool's queue, its counts, its
//! locks) but only the calling thread. A pool whose worker threads were
//! started in the parent therefore looks alive in the child, with workers
//! that do not exist there and maybe a lock held forever by one of them.
//!
//! Contract: [`generation`] is a process-wide number that a
//! `pthread_atfork` child handler increments in every child made by libc's
//! `fork` (moss's `Process`, `ProcessPool` workers, std's `Command` when it
//! forks). An object that owns threads records the generation it was made
//! in; when a caller sees another generation, the object was inherited and
//! must be rebuilt from scratch, never locked or joined (its old state is
//! leaked: its locks may be held by threads that are gone). The handler is
//! registered on the first call of [`generation`], before any such object
//! exists (a hub calls it first thing). The handler also makes the forking
//! thread forget its hub (the hub's `fork.rs`: a child never runs or polls
//! its parent's hub). Children made by a raw `clone`/`syscall(SYS_fork)`
//! run no atfork handler and are not detected.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: ForkSafeOnce = ForkSafeOnce::new();

extern "C" fn in_child() {
    // Async-signal-safe: one atomic add and one thread-local store, no
    // lock, no allocation.
    GENERATION.fetch_add(1, Ordering::Relaxed);
    crate::hub::Hub::forget_after_fork();
}

/// The fork generation of this process: 0 in the original process, and a
/// different number in each forked child (see the module docs).
pub(crate) fn generation() -> u64 {
    REGISTER.call_once(|| {
        // Failure (ENOMEM) leaves children undetected, which is the state
        // before this existed.
        // SAFETY: registers a handler that only touches an atomic and a
        // `const` thread-local; a null prepare and parent handler are allowed.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    GENERATION.load(Ordering::Relaxed)
}

/// A one-time initialisation that a `fork` cannot leave stuck.
///
/// std's `Once` and `OnceLock` record "running" while a thread runs the
/// initialiser; in a child forked at that moment the state stays "running"
/// forever (the thread is not copied) and the child's first call waits for
/// ever. Here the state is the pid of the process whose thread runs it: a
/// caller of another process (the child) takes the initialisation over
/// and runs it itself, so the initialiser must be harmless to run again
/// in a child (creating a key, registering a handler). Callers of the
/// process that runs it wait for it with `sched_yield` (never a futex: a
/// hook of `moss::monkey` could try to park on this thread's hub, which may
/// be what is being made).
pub(crate) struct ForkSafeOnce(AtomicU64);

/// The state of a completed [`ForkSafeOnce`].
const DONE: u64 = u64::MAX;

impl ForkSafeOnce {
    pub(crate) const fn new() -> ForkSafeOnce {
        ForkSafeOnce(AtomicU64::new(0))
    }

    /// Runs `f` unless it ran (or runs) already in this process; returns
    /// once it has completed.
    #[inline]
    pub(crate) fn call_once(&self, f: impl FnOnce()) {
        if self.0.load(Ordering::Acquire) != DONE {
            self.call_slow(f);
        }
    }

    #[cold]
    fn call_slow(&self, f: impl FnOnce()) {
        let me = u64::from(std::process::id());
        let mut f = Some(f);
        loop {
            let state = self.0.load(Ordering::Acquire);
            if state == DONE {
                return;
            }
            if state == me {
                std::thread::yield_now(); // another thread of ours runs it
                continue;
            }
            // Not started, or started by the process this one was forked
            // from (whose thread is not here to finish it).
            if self
                .0
                .compare_exchange(state, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // An initialiser that panics leaves it not started: the
                // next caller runs it (as std's `OnceLock`), instead of
                // every caller of this process waiting for ever.
                struct Unstarted<'a>(&'a AtomicU64);
                impl Drop for Unstarted<'_> {
                    fn drop(&mut self) {
                        self.0.store(0, Ordering::Release);
                    }
                }
                let unstarted = Unstarted(&self.0);
                (f.take().expect("runs once"))();
                std::mem::forget(unstarted);
                self.0.store(DONE, Ordering::Release);
                return;
            }
        }
    }
}

/// A value made once per process, as std's `OnceLock` makes it, that a
/// `fork` cannot leave stuck (see `ForkSafeOnce`): a child forked while
/// another thread was making it makes its own, so the initialiser must be
/// harmless to run again in a child; the half-made value is leaked. Meant
/// for statics: the value is never dropped. Public (hidden) for moss-io.
pub struct ForkSafeOnceLock<T> {
    once: ForkSafeOnce,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> ForkSafeOnceLock<T> {
    #[allow(clippy::new_without_default)] // for statics
    pub const fn new() -> ForkSafeOnceLock<T> {
        ForkSafeOnceLock {
            once: ForkSafeOnce::new(),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, made by `f` if no thread of this process made it yet
    /// (a caller of this process that finds another thread making it
    /// waits for that).
    #[inline]
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        self.once.call_once(|| {
            let v = f();
            // A reference is handed out only once `call_once` has
            // returned, after which it never runs again here, nor in a
            // child forked later.
            // SAFETY: the one initialising caller of this process writes
            // the slot; no reference to it exists in this process yet.
            unsafe { (*self.value.get()).write(v) };
        });
        // SAFETY: `call_once` returned: the initialisation completed in
        // this process (its write is ordered before by `DONE`'s
        // release/acquire), and the slot is never written again.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}

// SAFETY: as std's `OnceLock`: the value is written by one thread and then
// shared (`Sync` needs `T: Sync`) and may be made on any thread (`Send`).
unsafe impl<T: Send + Sync> Sync for ForkSafeOnceLock<T> {}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::ForkSafeOnceLock;

    /// A child forked while another thread runs the initialiser makes its
    /// own value instead of waiting for ever for a thread it does not have
    /// (std's `OnceLock` hangs the child here); the parent keeps its own.
    #[test]
    fn a_child_forked_during_the_initialisation_makes_its_own_value() {
        static CELL: ForkSafeOnceLock<u32> = ForkSafeOnceLock::new();
        let (inside_tx, inside) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            *CELL.get_or_init(|| {
                inside_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                1
            })
        });
        inside.recv().unwrap();
        // SAFETY: the child only runs `get_or_init` with an initialiser
        // that neither allocates nor locks, then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let v = *CELL.get_or_init(|| 2);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if v == 2 { 0 } else { 1 }) };
        }
        assert!(pid > 0);
        let mut status = 0;
        let t = Instant::now();
        // SAFETY: polls our own child; `status` is a valid out-pointer.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
            if t.elapsed() > Duration::from_secs(20) {
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("the child waited for the parent's initialiser");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        go.send(()).unwrap();
        assert_eq!(maker.join().unwrap(), 1);
        assert_eq!(*CELL.get_or_init(|| 3), 1);
    }

    /// An initialiser that panics leaves the value unmade: the next caller
    /// makes it (instead of waiting for ever).
    #[test]
    fn a_panicking_initialiser_lets_the_next_caller_make_the_value() {
        static CELL: ForkSafeOnceLock<u32> = ForkSafeOnceLock::new();
        let r = std::thread::spawn(|| *CELL.get_or_init(|| panic!("no value"))).join();
        assert!(r.is_err());
        assert_eq!(*CELL.get_or_init(|| 4), 4);
        assert_eq!(*CELL.get_or_init(|| 5), 4);
    }
}
