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
                (f.take().expect("runs once"))();
                self.0.store(DONE, Ordering::Release);
                return;
            }
        }
    }
}
