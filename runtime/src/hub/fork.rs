//! A hub in a forked child: the child never runs or touches its parent's.
//!
//! `fork` copies the whole address space but only the calling thread. The
//! copy of that thread's hub looks alive in the child, but nothing of it
//! belongs there: its coroutines are the parent's (their side effects would
//! happen twice), and its epoll instance and eventfd are the *same kernel
//! objects* as the parent's (an epoll fd inherited over `fork` names the
//! parent's instance): a child polling it takes edge-triggered events the
//! parent waits for, and a child registering or deregistering fds changes
//! the parent's interest list. So:
//!
//! ```text
//!   fork() (libc's: moss's Process and ProcessPool, std's Command when it
//!   forks, a user's libc::fork)
//!     └─ child handler (pthread_atfork, async-signal-safe): the fork
//!        generation moves on, this thread's hub pointer is cleared
//!
//!   in the child                       the parent's hub (copy, leaked)
//!   ────────────                       ─────────────────────────────
//!   the context that forked goes on:   never polled, never resumed; its
//!   a coroutine or the root, now the   coroutines never run; its epoll fd,
//!   root of no hub at all; its next    eventfd and memory are left as they
//!   moss call makes a fresh hub        are (never closed, never freed)
//!   (hooks of `moss::monkey` block
//!   the thread until then)
//! ```
//!
//! Guards, for code that still holds a reference to the parent's hub (a
//! frame below the forking call that resumes in the child): that hub's
//! reactor refuses to register, deregister or poll, a wake-up sent to any
//! hub of the parent (an `Unparker` of another thread's hub, copied in a
//! wait list) is dropped instead of written to its eventfd, and its loop
//! ends the child with a message rather than run the parent's coroutines.
//!
//! # A coroutine that forks
//!
//! It keeps running in the child on its own stack, as the root of the
//! child's fresh hub: coroutines it spawns there run when it blocks, as a
//! thread's root does. Its function cannot return to the frames it was
//! started from (they are the parent's hub loop), so when it returns in
//! the child, the child runs the coroutines it spawned until they are done
//! and exits with `_exit`: status 0, or [`PANIC_EXIT_CODE`] (101) if the
//! coroutine panicked. A `kill` or `timeout` aimed at it in the parent does
//! not follow it into the child, and the parent's `JoinHandle`s, copied,
//! never finish there.
//!
//! [`PANIC_EXIT_CODE`]: crate::pool::PANIC_EXIT_CODE
//!
//! Not detected: a child made without libc's `fork` handlers (a raw
//! `clone` or `syscall(SYS_fork)`).

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{HUB, Hub, Until};
use crate::sys::{atfork, process};
use crate::task::Header;

impl Hub {
    /// In a freshly forked child: abandons the hub this thread inherited
    /// (see the module docs), so that the next moss call on this thread
    /// creates a fresh one. Called by the atfork child handler for every
    /// fork libc makes, and again by moss's own fork paths (harmless).
    /// Async-signal-safe: one store to a `const` thread-local.
    pub(crate) fn forget_after_fork() {
        HUB.with(|h| h.set(std::ptr::null()));
    }

    /// Whether this hub was made by another process (a forked child's copy
    /// of its parent's hub).
    #[inline]
    pub(crate) fn inherited(&self) -> bool {
        self.generation != atfork::generation()
    }

    /// The loop of an inherited hub was entered in a forked child: a frame
    /// that held the parent's hub across the fork resumed. Running it would
    /// run the parent's coroutines and poll the parent's epoll instance, so
    /// the child ends here.
    #[cold]
    pub(crate) fn refuse_inherited(&self) -> ! {
        left_in_child(b"run its loop");
    }
}

/// Ends a forked child whose code reached the parent's hub (`what` it was
/// asked to do): a message on stderr (a raw write: no lock of the parent's
/// threads), then `_exit` with [`crate::pool::PANIC_EXIT_CODE`].
#[cold]
pub(crate) fn left_in_child(what: &[u8]) -> ! {
    let parts: [&[u8]; 3] = [
        b"moss: in a forked child, the parent's hub was asked to ",
        what,
        b"; its coroutines and its epoll instance belong to the parent. The \
          forking context has a fresh hub in the child (see the fork section of \
          moss's README); the child exits.\n",
    ];
    for p in parts {
        let _ = crate::sys::fd::write(2, p, false);
    }
    process::exit_now(crate::pool::PANIC_EXIT_CODE)
}

/// Whether the coroutine whose header is `h`, running its own code now,
/// was forked away from its hub: in a forked child the coroutine that
/// called `fork` goes on, but the thread's hub is no longer the one that
/// runs it (see the module docs).
#[inline]
pub(crate) fn forked_away(h: &Header) -> bool {
    Hub::try_current().is_none_or(|hub| !std::ptr::eq(hub.current_header(), h))
}

/// The function of a coroutine that forked returned in the child (see the
/// module docs): runs what it spawned there, then ends the child.
#[cold]
pub(crate) fn forked_coroutine_returned(panicked: bool) -> ! {
    if let Some(hub) = Hub::try_current() {
        // As `moss::wait` on a root; a panic must not unwind into the
        // frames of the parent's hub below.
        let _ = catch_unwind(AssertUnwindSafe(|| hub.run_until(Until::NoTasks, false)));
    }
    process::exit_now(if panicked {
        crate::pool::PANIC_EXIT_CODE
    } else {
        0
    })
}
