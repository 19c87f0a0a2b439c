//! Processes: `fork`, `_exit`, reaping, pidfds and signals to children.
//!
//! Contract for `pool::process` and `pool::pool_manager`: every process
//! syscall they need is a small function here that reports failure as
//! `io::Error`. Waits retry `EINTR` themselves.
//!
//! # fork's rules
//!
//! [`fork`] duplicates the whole address space but only the calling thread:
//!
//! * every other thread is simply absent in the child; a lock one of them
//!   held (a `Mutex`, std's stdout lock, an allocator arena lock outside
//!   glibc's own fork handling) stays locked forever there;
//! * the child inherits every open fd, including the parent hub's epoll
//!   instance and eventfd, which it must not use (the hub's
//!   `forget_after_fork`);
//! * the child should do simple work and leave with [`exit_now`], which runs
//!   no `atexit` handlers and flushes no stdio buffer duplicated from the
//!   parent.
//!
//! Libraries that take internal locks without a fork handler are called
//! inside [`without_fork`], and [`fork`] waits until no thread is in there:
//! glibc's `getaddrinfo` (its NSS modules lock their files) in a thread of
//! the parent would otherwise leave that lock held forever in the child,
//! and the child's own first lookup would wait on it for good.

use std::cell::Cell;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::RwLock;

use super::cvt::{cvt, cvt_r};

/// Which side of a [`fork`] the caller is on.
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the original process; the child's pid.
    Parent(libc::pid_t),
}

/// Held shared by the threads inside [`without_fork`], exclusively by
/// [`fork`] while it forks. std's lock prefers a waiting writer, so a fork
/// waits only for the calls already inside.
static FORK_GATE: RwLock<()> = RwLock::new(());

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` where moss's [`fork`] cannot copy it midway: a fork waits (its
/// thread blocks) until no thread runs inside. For calls into code that
/// takes locks without a fork handler, such as `getaddrinfo`. Re-entrant;
/// `f` must not wait for another thread that enters it (see
/// [`in_without_fork`]).
#[doc(hidden)]
pub fn without_fork<T>(f: impl FnOnce() -> T) -> T {
    if in_without_fork() {
        return f();
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            INSIDE.set(false);
        }
    }
    let _shared = FORK_GATE.read().unwrap_or_else(|e| e.into_inner());
    INSIDE.set(true);
    let _leave = Leave;
    f()
}

/// Whether the calling thread runs inside [`without_fork`]: a helper thread
/// that it waits for is covered by its hold and must not enter again (a
/// fork waiting between the two would wait for the caller, which waits for
/// the helper).
#[doc(hidden)]
pub fn in_without_fork() -> bool {
    INSIDE.get()
}

/// `fork(2)`, once no thread runs inside [`without_fork`].
///
/// # Safety
/// On [`Forked::Child`] the caller runs in a copy of the process that holds
/// only the calling thread (see the module docs). It must:
///
/// * call the hub's `forget_after_fork` before any other moss call, so that
///   no coroutine, stack or fd of the parent's hub is touched;
/// * not wait for a lock another thread of the parent may have held at the
///   fork, nor drop objects whose destructors act on shared kernel state
///   owned by the parent (pool sockets, pidfds, the parent's threads);
/// * leave through [`exit_now`], never by returning into code of the
///   parent's frames above the fork.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // Released on both sides: the child's copy is unlocked by its only thread.
    let _exclusive = FORK_GATE.write().unwrap_or_else(|e| e.into_inner());
    // SAFETY: fork has no memory-safety preconditions of its own; what the
    // child may do afterwards is the caller's contract above.
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends the calling process at once with `code` (`_exit(2)`): no destructors,
/// no `atexit` handlers, no stdio flushing.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// In a child just forked from process `parent`: asks the kernel to
/// SIGKILL it when the thread that forked it ends (`PR_SET_PDEATHSIG`; that
/// thread ends with its process at the latest), and ends it at once if that
/// happened already, before the request (its parent is no longer `parent`).
pub(crate) fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no
    // memory of ours; it cannot fail for a valid signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        exit_now(0);
    }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// `waitpid(pid, WNOHANG)`: `Ok(None)` while the child runs; `Ok(Some(..))`
/// reaps it (the pid may be reused afterwards).
pub(crate) fn try_wait(pid: libc::pid_t) -> io::Result<Option<Exit>> {
    wait(pid, libc::WNOHANG)
}

/// `waitpid(pid, 0)`: blocks the thread until the child ends, and reaps it.
pub(crate) fn wait_blocking(pid: libc::pid_t) -> io::Result<Exit> {
    loop {
        if let Some(e) = wait(pid, 0)? {
            return Ok(e);
        }
    }
}

fn wait(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<Exit>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let r = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, flags) })?;
        if r == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(Exit::Code(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(Exit::Signal(libc::WTERMSIG(status))));
        }
        // Stopped/continued reports are not requested; keep waiting.
        if flags & libc::WNOHANG != 0 {
            return Ok(None);
        }
    }
}

/// `kill(pid, sig)`. The caller guarantees `pid` is its own unreaped child
/// (so it cannot name a recycled pid).
pub(crate) fn signal(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `pidfd_open(pid, 0)` (Linux 5.3+): an fd that polls readable once the
/// process has exited, numbered 3 or above. `Unsupported`-like errors (`ENOSYS`) are returned as
/// they are, so callers can fall back to polling `waitpid`.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: the raw syscall takes two integers and returns an fd or -1.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // pidfds are created with O_CLOEXEC by the kernel.
    // SAFETY: the kernel just returned `fd` to us; nothing owns it.
    unsafe { super::fd::own(fd as RawFd) }
}

/// Whether process `pid` has ended: it no longer exists, or it is a zombie
/// waiting to be reaped (or being reaped). A recycled pid reads as alive.
pub(crate) fn is_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if let Err(e) = cvt(unsafe { libc::kill(pid, 0) }) {
        return e.raw_os_error() == Some(libc::ESRCH);
    }
    match stat(pid) {
        Ok(s) => s.ended(),
        // Gone from /proc, unless /proc itself is missing (not mounted).
        Err(e) => {
            e.kind() == std::io::ErrorKind::NotFound
                && std::path::Path::new("/proc/self/stat").exists()
        }
    }
}

/// What moss reads of `/proc/PID/stat`.
struct Stat {
    /// Field 3: `R`, `S`, ..., `Z` (zombie), `X` (dead).
    state: u8,
    /// Field 20: how many threads it has.
    num_threads: usize,
    /// Field 22: clock ticks after boot when the process started.
    start_time: u64,
}

impl Stat {
    fn ended(&self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }
}

fn stat(pid: libc::pid_t) -> io::Result<Stat> {
    let raw = std::fs::read(format!("/proc/{pid}/stat"))?;
    // "PID (COMM) STATE ...", and COMM may contain ')' and spaces.
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat");
    let rest = raw
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|i| raw.get(i + 2..))
        .ok_or_else(bad)?;
    let mut fields = rest.split(|&b| b == b' ');
    let state = *fields.next().and_then(|f| f.first()).ok_or_else(bad)?;
    let mut number = |nth| {
        let f = fields.nth(nth)?;
        std::str::from_utf8(f).ok()?.parse().ok()
    };
    // Fields 4 to 19 come before the thread count, 21 before the start time.
    let num_threads = number(16).ok_or_else(bad)?;
    let start_time = number(1).ok_or_else(bad)?;
    Ok(Stat {
        state,
        num_threads: usize::try_from(num_threads).map_err(|_| bad())?,
        start_time,
    })
}

/// How many threads this process has now, or `None` if `/proc` cannot be
/// read.
///
/// A count of 1 stays 1 until the caller itself starts a thread: no other
/// thread exists to start one.
pub(crate) fn thread_count() -> Option<usize> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    stat(me).ok().map(|s| s.num_threads)
}

/// A process identity that survives pid reuse, as one nonzero `u64` (it
/// fits an atomic in shared memory): the pid in the low 32 bits and the low
/// 32 bits of the process's start time above (0 where `/proc` cannot be
/// read). Two processes that had the same pid differ unless they started a
/// multiple of 2^32 clock ticks (497 days at 100 Hz) apart.
pub(crate) fn identity(pid: libc::pid_t) -> u64 {
    let start = stat(pid).map_or(0, |s| s.start_time);
    (start << 32) | u64::from(pid as u32)
}

/// [`identity`] of the calling process, computed once per process (a forked
/// child computes its own: the cache is tagged with the fork generation).
pub(crate) fn own_identity() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    // (generation + 1) of the cached value, 0 for none.
    static CACHED_GEN: AtomicU64 = AtomicU64::new(0);
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let generation = super::atfork::generation() + 1;
    if CACHED_GEN.load(Ordering::Acquire) == generation {
        return CACHED.load(Ordering::Relaxed);
    }
    // SAFETY: getpid has no preconditions and cannot fail.
    let id = identity(unsafe { libc::getpid() });
    CACHED.store(id, Ordering::Relaxed);
    CACHED_GEN.store(generation, Ordering::Release);
    id
}

/// Whether the process an [`identity`] names has ended: it is gone or a
/// zombie, or its pid now belongs to a process that started at another
/// time.
pub(crate) fn identity_gone(id: u64) -> bool {
    let pid = (id & 0xffff_ffff) as u32 as libc::pid_t;
    if is_gone(pid) {
        return true;
    }
    let start = id >> 32;
    start != 0 && stat(pid).is_ok_and(|s| s.start_time & 0xffff_ffff != start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_gone_sees_live_zombie_and_reaped_processes() {
        assert!(!is_gone(std::process::id() as libc::pid_t));
        // SAFETY: the child only calls `_exit`, which is async-signal-safe,
        // so forking this multithreaded test process is sound.
        let pid = match unsafe { fork() }.unwrap() {
            Forked::Child => exit_now(0),
            Forked::Parent(pid) => pid,
        };
        // Exited, not yet reaped: a zombie.
        let t = std::time::Instant::now();
        while !is_gone(pid) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "child never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(try_wait(pid).unwrap(), Some(Exit::Code(0)));
        assert!(is_gone(pid));
    }

    #[test]
    fn an_identity_tells_a_recycled_pid_from_its_holder() {
        let me = own_identity();
        assert_eq!(me & 0xffff_ffff, u64::from(std::process::id()));
        assert_ne!(me >> 32, 0, "the start time is read from /proc");
        assert_eq!(me, own_identity(), "cached");
        assert!(!identity_gone(me));
        // The same pid with another start time: the pid was recycled.
        assert!(identity_gone(me ^ (1 << 32)));
    }

    #[test]
    fn a_forked_child_counts_one_thread() {
        let here = thread_count().unwrap();
        assert!(here >= 2, "the test harness's main thread and this one");
        // SAFETY: the child only reads /proc with std (no lock another
        // thread could hold but the allocator's, which glibc resets at fork)
        // and calls `_exit`.
        let pid = match unsafe { fork() }.unwrap() {
            Forked::Child => exit_now(if thread_count() == Some(1) { 0 } else { 1 }),
            Forked::Parent(pid) => pid,
        };
        let t = std::time::Instant::now();
        let exit = loop {
            if let Some(e) = try_wait(pid).unwrap() {
                break e;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "child never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(exit, Exit::Code(0));
    }
}
