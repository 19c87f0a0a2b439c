//! Name resolution hook: `getaddrinfo` runs off the hub.
//!
//! On a thread with a hub, the arguments are copied into a job that a
//! helper thread (one per lookup, named `moss-getaddrinfo`) runs through
//! the real `getaddrinfo`; the caller parks and the helper wakes it with an
//! [`Unparker`](moss_runtime::park::Unparker). The result list is
//! allocated by libc as usual, so the caller frees it with the ordinary
//! `freeaddrinfo`. If the caller is cancelled while waiting it returns
//! `EAI_SYSTEM` with errno `ECANCELED`, and the helper frees the late
//! result itself. If no thread can be started, the lookup runs inline.

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::{Arc, Mutex};

use libc::addrinfo;
use moss_runtime::park::{self, Unparker, Wakeup};
use moss_runtime::sys::{in_without_fork, without_fork};

use super::{patched, real};

/// The finished lookup: return code, errno, result list (as an address).
type Outcome = (c_int, c_int, usize);

#[derive(Default)]
struct State {
    /// `None` while the lookup runs.
    out: Option<Outcome>,
    /// The caller gave up: the helper must free the list.
    abandoned: bool,
    /// Wakes the caller's current wait (renewed before each park).
    waker: Option<Unparker>,
}

/// Copies the hints fields getaddrinfo reads (the pointers must be null).
fn copy_hints(h: *const addrinfo) -> Option<addrinfo> {
    // SAFETY: a non-null `h` points at an addrinfo (the caller's contract).
    let h = (!h.is_null()).then(|| unsafe { &*h })?;
    Some(addrinfo {
        ai_flags: h.ai_flags,
        ai_family: h.ai_family,
        ai_socktype: h.ai_socktype,
        ai_protocol: h.ai_protocol,
        ai_addrlen: 0,
        ai_addr: std::ptr::null_mut(),
        ai_canonname: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    })
}

fn run_real(node: Option<&CStr>, service: Option<&CStr>, hints: Option<&addrinfo>) -> Outcome {
    let mut res: *mut addrinfo = std::ptr::null_mut();
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    let h = hints.map_or(std::ptr::null(), |h| h as *const addrinfo);
    // SAFETY: valid C strings / hints or null, and a valid out-pointer.
    let r = unsafe { real::getaddrinfo()(p(node), p(service), h, &mut res) };
    (r, real::errno(), res as usize)
}

/// Hook for `getaddrinfo(3)`.
///
/// # Safety
/// As `getaddrinfo(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    if !patched() || !park::can_park() || res.is_null() {
        // SAFETY: forwarded unchanged (no fork copies it midway).
        return without_fork(|| unsafe { real::getaddrinfo()(node, service, hints, res) });
    }
    // SAFETY: non-null strings are NUL-terminated (the caller's contract).
    let own = |s: *const c_char| (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_owned());
    let (node_c, service_c, hints_c): (Option<CString>, Option<CString>, Option<addrinfo>) =
        (own(node), own(service), copy_hints(hints));
    let shared = Arc::new(Mutex::new(State::default()));
    // A caller inside `without_fork` (moss's resolver) covers the helper.
    let gated = in_without_fork();
    let job = {
        let shared = shared.clone();
        let hints_c = hints_c.map(SendHints);
        move || {
            let real = || {
                run_real(
                    node_c.as_deref(),
                    service_c.as_deref(),
                    hints_c.as_ref().map(|h| &h.0),
                )
            };
            let out = if gated { real() } else { without_fork(real) };
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            if st.abandoned {
                drop(st);
                if out.0 == 0 && out.2 != 0 {
                    // SAFETY: the list came from the real getaddrinfo and
                    // the caller abandoned it: we own it.
                    unsafe { libc::freeaddrinfo(out.2 as *mut addrinfo) };
                }
                return;
            }
            st.out = Some(out);
            let waker = st.waker.take();
            drop(st);
            if let Some(w) = waker {
                w.unpark();
            }
        }
    };
    let spawned = real::keep_errno(|| {
        std::thread::Builder::new()
            .name("moss-getaddrinfo".into())
            .spawn(job)
    });
    if spawned.is_err() {
        // SAFETY: forwarded unchanged (no fork copies it midway).
        return without_fork(|| unsafe { real::getaddrinfo()(node, service, hints, res) });
    }
    loop {
        {
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((r, e, list)) = st.out {
                // SAFETY: `res` is a non-null out-pointer (checked above).
                unsafe { *res = list as *mut addrinfo };
                if r == libc::EAI_SYSTEM {
                    real::set_errno(e);
                }
                return r;
            }
            st.waker = Some(park::unparker());
        }
        if real::keep_errno(|| park::park(None, "getaddrinfo (monkey)")) == Wakeup::Cancelled {
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((r, _, list)) = st.out.take()
                && r == 0
                && list != 0
            {
                // SAFETY: the list came from the real getaddrinfo and is
                // not handed to the caller.
                unsafe { libc::freeaddrinfo(list as *mut addrinfo) };
            }
            st.abandoned = true;
            st.waker = None;
            real::set_errno(libc::ECANCELED);
            return libc::EAI_SYSTEM;
        }
    }
}

/// Hints holding only null pointers, so they may cross threads.
struct SendHints(addrinfo);
// SAFETY: `copy_hints` nulls every pointer field; the rest is plain data.
unsafe impl Send for SendHints {}

hook_addresses!(getaddrinfo);
