//! The process-wide part of `moss::signal`: moss's signal catcher, the
//! dispositions it replaced, and the doorbells that wake hubs.
//!
//! # Delivery
//!
//! ```text
//!  kernel ──▶ catcher (any thread, async-signal context)
//!               COUNTS[sig] += 1                 (the truth: a counter per signal)
//!               write 1 to every claimed bell    (an eventfd per hub that waits)
//!                     │ epoll edge
//!                     ▼
//!  hub of a waiting thread: its waiters wake, compare COUNTS with what they
//!  saw before parking, and return or park again
//! ```
//!
//! The catcher only does an atomic add and raw `write(2)`s (no lock, no
//! allocation, errno saved). A bell is never drained: every write raises a
//! fresh epoll event on the hub that registered it (a drain by one reader
//! could otherwise swallow the event before another hub's `epoll_wait` saw
//! it), and the counter would need 2^64 deliveries to saturate. A waiter
//! checks `COUNTS` before it parks and after every wake-up, so a delivery is
//! never lost: its count is raised before its bell rings.
//!
//! Bells are eventfds in a lock-free list that only grows; a thread claims a
//! free one for its hub and releases it (still open) when it exits, so the
//! catcher never writes to an fd number that was closed and reused. They are
//! numbered 3 or above, like the hub's fds, never a closed stdio number.
//!
//! # Dispositions
//!
//! `USERS[sig]` counts moss's users of a signal (live handlers, plus one
//! forever once a `wait` has used it). The first user installs the catcher
//! (`SA_SIGINFO | SA_RESTART | SA_ONSTACK`: interrupted syscalls restart,
//! and the catcher runs on the hub's alternate stack) and saves the
//! disposition it replaced; the last user restores it, absorbing a delivery
//! still pending (a signal sent while moss handled it never meets the
//! restored disposition, which may be the default action). Changes are
//! serialised by a small lock that a forked child can take over.
//!
//! # fork
//!
//! A forked child inherits the catcher but none of the parent's users,
//! hubs or bells (the eventfds are shared with the parent). The catcher
//! therefore acts only in the process that installed it (`OWNER` pid): in a
//! child it applies the saved disposition instead, and permanently: the
//! default action (a `Process` child still dies on SIGTERM), ignore, or the
//! previous handler. The child's first `moss::signal` call resets the state
//! (no users, a fresh list of bells) and takes ownership.

use std::cell::RefCell;
use std::ffi::c_int;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use moss_runtime::sys::cvt::cvt;

/// Signal numbers are 1..NSIG.
pub(crate) const NSIG: usize = 65;

/// Deliveries per signal since the process started (never reset).
static COUNTS: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
/// moss's users of each signal (see the module docs).
static USERS: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];
/// A `wait` made the catcher permanent for this signal.
static STICKY: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];
/// The owner process installed the catcher for this signal (it may have
/// restored the old disposition since): a delivery that reaches the
/// catcher with no user left was sent before the restore, and is absorbed
/// rather than forwarded (see [`restore`]).
static OURS: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];
/// The dispositions the catcher replaced.
///
/// # Invariants
/// Null or a leaked `Box<sigaction>` that is never freed or written after it
/// is published, so the catcher may read it at any time.
static PREV: [AtomicPtr<libc::sigaction>; NSIG] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; NSIG];
/// The pid whose users and bells the state describes (0: none yet).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// The registry lock: 0 when free, else the holder's pid.
static LOCK: AtomicI32 = AtomicI32::new(0);

/// One hub's doorbell: an eventfd, open for the rest of the process.
pub(crate) struct Bell {
    fd: c_int,
    claimed: AtomicBool,
    next: *const Bell,
}

/// # Invariants
/// Null or the head of a list of leaked, never freed `Bell`s; `next` and
/// `fd` never change after a bell is published.
static BELLS: AtomicPtr<Bell> = AtomicPtr::new(std::ptr::null_mut());

fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    unsafe { libc::getpid() }
}

/// The catcher installed for every signal moss handles.
extern "C" fn catcher(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the errno slot of this thread; restored before returning.
    let errno = unsafe { *libc::__errno_location() };
    let s = sig as usize;
    if s < NSIG {
        let owned = OWNER.load(Ordering::Acquire) == getpid();
        if owned && USERS[s].load(Ordering::Acquire) > 0 {
            COUNTS[s].fetch_add(1, Ordering::SeqCst);
            ring_all();
        } else if owned && OURS[s].load(Ordering::Acquire) {
            // Taken by a thread before the last user restored the old
            // disposition, run after: sent while moss handled it.
            COUNTS[s].fetch_add(1, Ordering::SeqCst);
        } else {
            forward(sig, info, ctx);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Writes 1 to every claimed bell (raw syscalls: no hook, no lock).
fn ring_all() {
    let one: u64 = 1;
    let mut p = BELLS.load(Ordering::Acquire) as *const Bell;
    // SAFETY: per BELLS' invariants every node is live forever.
    while let Some(b) = unsafe { p.as_ref() } {
        if b.claimed.load(Ordering::Acquire) {
            // SAFETY: an 8-byte write from a live u64 to an eventfd that is
            // never closed; a full counter gives EAGAIN, which is fine.
            unsafe { libc::syscall(libc::SYS_write, b.fd, (&raw const one).cast::<u8>(), 8) };
        }
        p = b.next;
    }
}

/// Applies the saved disposition of `sig` for a delivery moss does not own
/// (no user left, or a forked child), permanently.
fn forward(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let s = sig as usize;
    // SAFETY: per PREV's invariants, a non-null pointer is a complete,
    // immutable sigaction.
    let Some(prev) = (unsafe { PREV[s].load(Ordering::Acquire).as_ref() }) else {
        return;
    };
    match prev.sa_sigaction {
        libc::SIG_IGN => {
            // SAFETY: installing a valid saved action.
            unsafe { libc::sigaction(sig, prev, std::ptr::null_mut()) };
        }
        libc::SIG_DFL => {
            // SAFETY: as above; then the signal is raised again: it is
            // blocked while this handler runs and is delivered with the
            // default action as soon as the handler returns.
            unsafe {
                libc::sigaction(sig, prev, std::ptr::null_mut());
                libc::raise(sig);
            }
        }
        f => {
            // SAFETY: `f` is the handler that was installed before ours, with
            // the calling convention its flags declare.
            unsafe {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let h: extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(f);
                    h(sig, info, ctx);
                } else {
                    let h: extern "C" fn(c_int) = std::mem::transmute(f);
                    h(sig);
                }
            }
        }
    }
}

/// Deliveries of `sig` so far.
pub(crate) fn count(sig: usize) -> u64 {
    COUNTS[sig].load(Ordering::SeqCst)
}

/// The registry lock; a lock held by a thread of the parent (another pid)
/// is taken over, since that thread does not exist in this process.
struct Guard;

fn lock() -> Guard {
    let me = getpid();
    loop {
        match LOCK.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Guard,
            Err(holder)
                if holder != me
                    && LOCK
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok() =>
            {
                return Guard;
            }
            Err(_) => std::thread::yield_now(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(0, Ordering::Release);
    }
}

/// Under the lock: makes this process the owner, resetting what a forked
/// child inherited (users, permanence, bells).
fn own(_g: &Guard) -> i32 {
    let me = getpid();
    if OWNER.load(Ordering::Acquire) != me {
        for s in 0..NSIG {
            USERS[s].store(0, Ordering::Release);
            STICKY[s].store(false, Ordering::Relaxed);
            OURS[s].store(false, Ordering::Release);
        }
        // The parent's bells (shared eventfds) are left alone, leaked.
        BELLS.store(std::ptr::null_mut(), Ordering::Release);
        OWNER.store(me, Ordering::Release);
    }
    me
}

/// The owner pid, taking ownership first in a forked child.
pub(crate) fn owner() -> i32 {
    let me = getpid();
    if OWNER.load(Ordering::Acquire) == me {
        return me;
    }
    own(&lock())
}

/// Adds a user of `sig`, installing the catcher for the first one.
pub(crate) fn add_user(sig: usize) -> io::Result<()> {
    let g = lock();
    own(&g);
    counted_install(sig)
}

/// Counts a user, then installs the catcher if it is the first: counting
/// first means a delivery caught right after the install is counted, never
/// forwarded to the old disposition (which would apply it permanently).
fn counted_install(sig: usize) -> io::Result<()> {
    if USERS[sig].fetch_add(1, Ordering::AcqRel) == 0
        && let Err(e) = install(sig)
    {
        USERS[sig].fetch_sub(1, Ordering::AcqRel);
        return Err(e);
    }
    Ok(())
}

/// Makes `sig` caught for the rest of the process (a `wait` used it).
pub(crate) fn make_sticky(sig: usize) -> io::Result<()> {
    if STICKY[sig].load(Ordering::Acquire) && OWNER.load(Ordering::Acquire) == getpid() {
        return Ok(());
    }
    let g = lock();
    own(&g);
    if STICKY[sig].load(Ordering::Acquire) {
        return Ok(());
    }
    counted_install(sig)?;
    STICKY[sig].store(true, Ordering::Release);
    Ok(())
}

/// Removes a user of `sig`; the last one restores the saved disposition.
/// A no-op in a forked child for a user made by the parent.
pub(crate) fn remove_user(sig: usize, owner_pid: i32) {
    let g = lock();
    if own(&g) != owner_pid || USERS[sig].load(Ordering::Acquire) == 0 {
        return;
    }
    if USERS[sig].fetch_sub(1, Ordering::AcqRel) == 1 {
        let prev = PREV[sig].load(Ordering::Acquire);
        if !prev.is_null() {
            restore(sig as c_int, prev);
        }
    }
}

/// Puts `prev` back for `sig`, after absorbing a delivery still pending.
///
/// A signal sent before the last user went (a `kill` to the process
/// returns before any thread has taken the signal) must not meet the
/// restored disposition, which could be the default action: killing the
/// process for a signal that was sent while moss handled it. So the
/// signal is blocked on this thread, any instance pending for the process
/// or this thread is taken with a zero-timeout `sigtimedwait` and counted
/// as a delivery, then the disposition is restored and the mask put back.
/// A signal sent after this point gets the restored disposition.
fn restore(sig: c_int, prev: *const libc::sigaction) {
    // The mask change below is undone on every path.
    // SAFETY: valid pointers to sigsets owned by this frame; `prev` is a
    // complete saved sigaction (PREV's invariants).
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        let mut old = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0;
        if blocked {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // Standard signals coalesce, real-time ones queue: take all.
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == sig {
                COUNTS[sig as usize].fetch_add(1, Ordering::SeqCst);
            }
        }
        libc::sigaction(sig, prev, std::ptr::null_mut());
        if blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
}

fn install(sig: usize) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting value; every field
    // sigaction(2) reads is set below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = catcher as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: `sa.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: valid new and old action pointers.
    cvt(unsafe { libc::sigaction(sig as c_int, &sa, old.as_mut_ptr()) })?;
    OURS[sig].store(true, Ordering::Release);
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    // Already ours (left installed by a parent, or a forward in progress):
    // keep the disposition saved before it.
    if old.sa_sigaction != sa.sa_sigaction {
        let cur = PREV[sig].load(Ordering::Acquire);
        // SAFETY: a non-null saved action is complete and immutable.
        let same = unsafe { cur.as_ref() }
            .is_some_and(|c| c.sa_sigaction == old.sa_sigaction && c.sa_flags == old.sa_flags);
        if !same {
            // Leaked on purpose: a catcher running now may still read the
            // previous one (see PREV's invariants).
            PREV[sig].store(Box::into_raw(Box::new(old)), Ordering::Release);
        }
    }
    Ok(())
}

/// This thread's bell: an eventfd claimed for this thread's hub.
pub(crate) struct ThreadBell {
    pub(crate) bell: &'static Bell,
    pub(crate) owner: i32,
}

impl Bell {
    /// The eventfd (open for the rest of the process).
    pub(crate) fn fd(&self) -> c_int {
        self.fd
    }
}

impl Drop for ThreadBell {
    fn drop(&mut self) {
        self.bell.claimed.store(false, Ordering::Release);
    }
}

thread_local! {
    static MINE: RefCell<Option<ThreadBell>> = const { RefCell::new(None) };
}

/// This thread's bell for the current owner process, claimed on first use.
pub(crate) fn thread_bell() -> io::Result<&'static Bell> {
    let me = owner();
    MINE.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(tb) = m.as_ref()
            && tb.owner == me
        {
            return Ok(tb.bell);
        }
        if let Some(stale) = m.take() {
            // Inherited from the parent: not ours to release.
            std::mem::forget(stale);
        }
        let bell = claim()?;
        *m = Some(ThreadBell { bell, owner: me });
        Ok(bell)
    })
}

fn claim() -> io::Result<&'static Bell> {
    let mut p = BELLS.load(Ordering::Acquire) as *const Bell;
    // SAFETY: per BELLS' invariants every node is live forever.
    while let Some(b) = unsafe { p.as_ref() } {
        if b.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(b);
        }
        p = b.next;
    }
    // SAFETY: plain syscall; the fd is owned below.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // At 3 or above, like the hub's fds: a closed stdio number would take
    // the bell, and a `println!` would write into it.
    // SAFETY: the kernel just returned `fd` to us; nothing owns it. The
    // bell keeps it open for the rest of the process.
    let fd = unsafe { moss_runtime::sys::fd::own(fd) }?.into_raw_fd();
    let mut head = BELLS.load(Ordering::Acquire);
    let node = Box::into_raw(Box::new(Bell {
        fd,
        claimed: AtomicBool::new(true),
        next: head,
    }));
    loop {
        match BELLS.compare_exchange(head, node, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: published and never freed (BELLS' invariants).
            Ok(_) => return Ok(unsafe { &*node }),
            Err(h) => {
                head = h;
                // SAFETY: `node` is not published yet; we own it.
                unsafe { (*node).next = h };
            }
        }
    }
}

// SAFETY: `Bell` is shared by every thread and the catcher; its fields are
// an immutable fd, an atomic and an immutable pointer to another `Bell`.
unsafe impl Sync for Bell {}
