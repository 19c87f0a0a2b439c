//! Stack-overflow reports.
//!
//! A SIGSEGV/SIGBUS handler, installed once per process on first hub creation
//! with `SA_ONSTACK`, asks the scheduler (the `describe` function given to
//! [`install`]) whether the faulting address lies in the guard page of a
//! stack it runs on this thread. If so, the scheduler writes one line — e.g.
//! `moss: coroutine 'NAME' (#ID) has overflowed its stack of N KiB` — into a
//! [`Report`], the handler writes it with `write(2)` and aborts. Any other
//! fault goes to the handler that was installed before ours (std's own
//! overflow handler for thread stacks, or the default action).
//!
//! The handler runs on the thread's alternate signal stack: std installs one
//! on the threads it creates; [`install`] installs one on a thread without
//! (the caller frees it with [`remove_altstack`]).
//!
//! Async-signal safety: the handler formats into a stack buffer and calls
//! `write` and `abort`; it allocates nothing and takes no lock. `describe`
//! must obey the same rules (plain loads of thread-local and task data).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Answers the handler's question for a fault at `addr`: if it overflowed a
/// stack the scheduler knows, write the message into the report, return true.
pub(crate) type Describe = fn(addr: usize, out: &mut Report) -> bool;

static INSTALL: super::atfork::ForkSafeOnce = super::atfork::ForkSafeOnce::new();
/// The `Describe` function, as an address (0 until installed).
static DESCRIBE: AtomicUsize = AtomicUsize::new(0);
static PREV_SEGV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static PREV_BUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

const ALTSTACK_SIZE: usize = 64 * 1024;

/// Installs the process-wide handler (once, with `describe`) and this
/// thread's altstack if it has none; returns the altstack it installed, for
/// [`remove_altstack`].
pub(crate) fn install(describe: Describe) -> Option<(usize, usize)> {
    INSTALL.call_once(|| {
        DESCRIBE.store(describe as usize, Ordering::Release);
        install_for(libc::SIGSEGV, &PREV_SEGV);
        install_for(libc::SIGBUS, &PREV_BUS);
    });
    ensure_altstack()
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
        // Installed already (by the process this one was forked from, which
        // did not finish `install`): the previous action is recorded, and
        // chaining to ourselves would loop.
        let ours = !prev.load(Ordering::Acquire).is_null();
        if !ours && libc::sigaction(sig, &sa, old) == 0 {
            prev.store(old, Ordering::Release);
        } else {
            drop(Box::from_raw(old));
        }
    }
}

fn ensure_altstack() -> Option<(usize, usize)> {
    // SAFETY: querying the current altstack with a null new-stack pointer only
    // writes `old`; a new altstack is a fresh private mapping we own.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut old) != 0 {
            return None;
        }
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return None; // std (or someone) already installed one
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
            return None;
        }
        let st = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: ALTSTACK_SIZE,
        };
        if libc::sigaltstack(&st, std::ptr::null_mut()) == 0 {
            Some((p as usize, ALTSTACK_SIZE))
        } else {
            libc::munmap(p, ALTSTACK_SIZE);
            None
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

/// A fixed buffer for formatting without allocation (in a signal handler).
pub(crate) struct Report {
    data: [u8; 512],
    len: usize,
}

impl Report {
    /// Appends bytes (silently truncated at the buffer's end).
    pub(crate) fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.data.len() - self.len);
        self.data[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    /// Appends `v` in decimal.
    pub(crate) fn push_num(&mut self, mut v: u64) {
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
    let describe = DESCRIBE.load(Ordering::Acquire);
    if describe != 0 {
        // SAFETY: a non-zero `DESCRIBE` was stored from a `Describe` fn
        // pointer in `install`.
        let describe: Describe = unsafe { std::mem::transmute::<usize, Describe>(describe) };
        let mut report = Report {
            data: [0; 512],
            len: 0,
        };
        if describe(addr, &mut report) {
            // SAFETY: write(2) and abort(3) are async-signal-safe; the buffer
            // is a valid local array of `report.len` initialised bytes.
            unsafe {
                libc::write(2, report.data.as_ptr().cast(), report.len);
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
