//! Thread join hook: `pthread_join`, where `std::thread::JoinHandle::join`
//! (and `moss::thread`'s join, for its last step) blocks.
//!
//! From a context that can park (a coroutine, or the running root of a
//! thread with a hub) the join is cooperative, as moss's own thread join
//! is: if the thread has already ended it is joined at once
//! (`pthread_tryjoin_np`); otherwise a helper thread (one per waiting join,
//! named `moss-join`) runs the real `pthread_join` and wakes the caller
//! through an [`Unparker`], while the caller parks and its hub runs others.
//! The return value is copied to the caller only once it is back, so the
//! helper never writes into a coroutine's stack.
//!
//! `pthread_join` cannot fail with a cancellation (std would panic on an
//! error), so a `kill` or `timeout` of the joining coroutine does not end
//! the join: it keeps waiting and the cancellation is delivered at the next
//! moss blocking point after it. If no helper thread can be started (the
//! thread limit, no memory), the caller polls `pthread_tryjoin_np` with
//! growing naps on hub timers in between (1 ms doubling to 50 ms,
//! `moss_runtime::backoff`): the hub keeps running, and the end of the
//! thread is noticed up to one nap late. Everywhere else the real
//! `pthread_join` blocks the thread as before.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use moss_runtime::backoff::Backoff;
use moss_runtime::park::{self, Unparker};

use super::{patched, real};

const WHAT: &str = "thread join (monkey)";

#[derive(Default)]
struct State {
    /// The helper's result: return code and the thread's exit value.
    out: Option<(c_int, usize)>,
    /// Wakes the caller's current wait (renewed before each park).
    waker: Option<Unparker>,
}

/// Hook for `pthread_join(3)`.
///
/// # Safety
/// As `pthread_join(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_join(thread: libc::pthread_t, retval: *mut *mut c_void) -> c_int {
    if !patched() || !park::can_park() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::pthread_join()(thread, retval) };
    }
    // SAFETY: the caller's thread and out-pointer; this joins only a thread
    // that has already ended, else returns EBUSY without touching either.
    let r = unsafe { libc::pthread_tryjoin_np(thread, retval) };
    if r != libc::EBUSY {
        return r;
    }
    let shared = Arc::new(Mutex::new(State::default()));
    let theirs = shared.clone();
    let job = move || {
        let mut v: *mut c_void = std::ptr::null_mut();
        // SAFETY: joins the caller's thread, which nobody else joins: the
        // caller waits for us and returns our result as its own.
        let r = unsafe { real::pthread_join()(thread, &mut v) };
        let mut st = theirs.lock().unwrap_or_else(|e| e.into_inner());
        st.out = Some((r, v as usize));
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.unpark();
        }
    };
    let spawned = real::keep_errno(|| {
        std::thread::Builder::new()
            .name("moss-join".into())
            .spawn(job)
    });
    if spawned.is_err() {
        return join_napping(thread, retval);
    }
    real::keep_errno(|| {
        loop {
            {
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((r, v)) = st.out {
                    if r == 0 && !retval.is_null() {
                        // SAFETY: a non-null `retval` is the caller's
                        // writable out-pointer.
                        unsafe { *retval = v as *mut c_void };
                    }
                    return r;
                }
                st.waker = Some(park::unparker());
            }
            park_join(None);
        }
    })
}

/// A join cannot fail: a cancellation only makes this a spurious wake-up,
/// and later parks ignore it (see the module docs).
fn park_join(until: Option<std::time::Instant>) {
    if park::cancel_pending() {
        park::park_shielded(until, WHAT);
    } else {
        park::park(until, WHAT);
    }
}

/// The join without a helper thread: `pthread_tryjoin_np` with growing
/// naps in between.
fn join_napping(thread: libc::pthread_t, retval: *mut *mut c_void) -> c_int {
    let mut naps = Backoff::new();
    real::keep_errno(|| {
        loop {
            // SAFETY: as in `pthread_join`: joins only a thread that has
            // ended, else returns EBUSY without touching either argument.
            let r = unsafe { libc::pthread_tryjoin_np(thread, retval) };
            if r != libc::EBUSY {
                return r;
            }
            park_join(Some(naps.next_wake(None)));
        }
    })
}

hook_addresses!(pthread_join);
