//! Stack-overflow reports.
//!
//! A SIGSEGV/SIGBUS handler, installed once per process on first hub creation
//! with `SA_ONSTACK`, checks whether the faulting address lies in the guard
//! page of the coroutine running on this thread. If so it writes one line —
//! `moss: coroutine 'NAME' (#ID) has overflowed its stack of N KiB` — with
//! `write(2)` only, and aborts. Any other fault goes to the handler that was
//! installed before ours (std's own overflow handler for thread stacks, or the
//! default action).
//!
//! The handler runs on the thread's alternate signal stack: std installs one
//! on the threads it creates; a hub created on a thread without one installs
//! its own (freed when the hub is dropped).
//!
//! Async-signal safety: the handler reads the hub pointer from a `const`
//! thread-local (a plain TLS load, no lazy initialisation), then the running
//! task's header fields, formats into a stack buffer, and calls `write` and
//! `abort`. It allocates nothing and takes no lock.

use std::mem::MaybeUninit;
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::hub::Hub;

static INSTALL: Once = Once::new();
static PREV_SEGV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static PREV_BUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

const ALTSTACK_SIZE: usize = 64 * 1024;

/// Installs the process-wide handler (once) and this thread's altstack if it
/// has none.
pub(crate) fn install(hub: &Hub) {
    INSTALL.call_once(|| {
        install_for(libc::SIGSEGV, &PREV_SEGV);
        install_for(libc::SIGBUS, &PREV_BUS);
    });
    ensure_altstack(hub);
}

fn install_for(sig: libc::c_int, prev: &AtomicPtr<libc::sigaction>) {
    // SAFETY: zeroed sigaction is a valid "no handler" value; we fill the
    // fields sigaction(2) reads, and keep the previous action in a leaked box
    // that lives for the rest of the process (the handler reads it).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        let old = Box::into_raw(Box::new(
            MaybeUninit::<libc::sigaction>::zeroed().assume_init(),
        ));
        if libc::sigaction(sig, &sa, old) == 0 {
            prev.store(old, Ordering::Release);
        } else {
            drop(Box::from_raw(old));
        }
    }
}

fn ensure_altstack(hub: &Hub) {
    // SAFETY: querying the current altstack with a null new-stack pointer only
    // writes `old`.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut old) != 0 {
            return;
        }
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return; // std (or someone) already installed one
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            ALTSTACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return;
        }
        let st = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: ALTSTACK_SIZE,
        };
        if libc::sigaltstack(&st, std::ptr::null_mut()) == 0 {
            hub.set_altstack((p as usize, ALTSTACK_SIZE));
        } else {
            libc::munmap(p, ALTSTACK_SIZE);
        }
    }
}

/// Disables and frees an altstack installed by [`install`].
pub(crate) fn remove_altstack((addr, len): (usize, usize)) {
    // SAFETY: the altstack at `addr` was installed by this thread's hub and
    // we are not on it (we run in the hub's destructor, not in a handler);
    // disabling it before unmapping leaves no dangling altstack.
    unsafe {
        let st = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        if libc::sigaltstack(&st, std::ptr::null_mut()) == 0 {
            libc::munmap(addr as *mut libc::c_void, len);
        }
    }
}

/// A fixed buffer for formatting without allocation.
struct Buf {
    data: [u8; 512],
    len: usize,
}

impl Buf {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.data.len() - self.len);
        self.data[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_num(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..]);
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(hub) = Hub::try_current() {
        let h = hub.current_header();
        let lo = h.guard.get();
        let hi = lo + crate::sys::stack::page_size();
        if !h.is_root() && addr >= lo && addr < hi {
            let mut b = Buf {
                data: [0; 512],
                len: 0,
            };
            b.push(b"moss: coroutine ");
            match &h.name {
                Some(n) => {
                    b.push(b"'");
                    b.push(n.as_bytes());
                    b.push(b"' ");
                }
                None => b.push(b"<unnamed> "),
            }
            b.push(b"(#");
            b.push_num(h.id.0);
            b.push(b") has overflowed its stack of ");
            b.push_num((h.stack_size / 1024) as u64);
            b.push(b" KiB\n");
            // SAFETY: write(2) and abort(3) are async-signal-safe; the buffer
            // is a valid local array of `b.len` initialised bytes.
            unsafe {
                libc::write(2, b.data.as_ptr().cast(), b.len);
                libc::abort();
            }
        }
    }
    let prev = if sig == libc::SIGSEGV {
        &PREV_SEGV
    } else {
        &PREV_BUS
    };
    let p = prev.load(Ordering::Acquire);
    // For SIG_DFL/SIG_IGN we restore the default action and return, so the
    // faulting instruction re-executes and the default action happens.
    // SAFETY: `p` is null or the leaked previous action stored at install;
    // its handler gets the arguments the kernel gave us, as it expects.
    unsafe {
        if !p.is_null() {
            let old = &*p;
            let f = old.sa_sigaction;
            if f != libc::SIG_DFL && f != libc::SIG_IGN {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(f);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
                    f(sig);
                }
                return;
            }
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}
