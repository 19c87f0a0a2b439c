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
//! moss blocking point after it. Everywhere else, or if no helper thread
//! can be started, the real `pthread_join` blocks the thread as before.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use moss_runtime::park::{self, Unparker};

use super::{patched, real};

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
        // SAFETY: forwarded unchanged.
        return unsafe { real::pthread_join()(thread, retval) };
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
            // A join cannot fail: a cancellation only makes this a
            // spurious wake-up, and later parks ignore it (see above).
            if park::cancel_pending() {
                park::park_shielded(None, "thread join (monkey)");
            } else {
                park::park(None, "thread join (monkey)");
            }
        }
    })
}
