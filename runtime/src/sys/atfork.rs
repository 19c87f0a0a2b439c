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

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

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
        // SAFETY: registers a handler that only touches an atomic; a null
        // prepare and parent handler are allowed. Failure (ENOMEM) leaves
        // children undetected, which is the state before this existed.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    GENERATION.load(Ordering::Relaxed)
}
