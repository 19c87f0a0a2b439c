//! Processes and pipes: `fork`, reaping, pidfds, signals, pipes, socket
//! pairs, shared anonymous memory and `poll`.
//!
//! Contract for the portable code (`pool::process`, `pool::process_pool`,
//! `pool::process_queue`): every raw process or fd syscall they need is a
//! small safe function here that reports failure as `io::Error` and never
//! panics. Fds come back as [`OwnedFd`] with `O_CLOEXEC` set, so an `exec` in
//! some child never leaks them.
//!
//! # fork's rules
//!
//! [`fork`] duplicates the whole address space but only the calling thread:
//!
//! * every other thread is simply absent in the child; a lock one of them
//!   held (a `Mutex`, std's stdout lock, an allocator arena lock outside
//!   glibc's own fork handling) stays locked forever there;
//! * the child inherits every open fd, including the parent hub's epoll
//!   instance and eventfd, which it must not use (see
//!   `hub::forget_after_fork`);
//! * the child should do simple work and leave with [`exit_now`], which runs
//!   no `atexit` handlers and flushes no stdio buffer duplicated from the
//!   parent.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Which side of a [`fork`] the caller is on.
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the original process; the child's pid.
    Parent(libc::pid_t),
}

/// `fork(2)`. See the module docs for what holds in the child.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the child
    // runs a copy of this thread only, and callers follow the module docs'
    // rules (forget the parent's hub, leave through `exit_now`).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
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
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
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
    if unsafe { libc::kill(pid, sig) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_open(pid, 0)` (Linux 5.3+): an fd that polls readable once the
/// process has exited. `Unsupported`-like errors (`ENOSYS`) are returned as
/// they are, so callers can fall back to polling `waitpid`.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: the raw syscall takes two integers and returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    // pidfds are created with O_CLOEXEC by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A pipe `(read end, write end)`, both `O_CLOEXEC`, optionally non-blocking.
pub(crate) fn pipe(nonblocking: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected `AF_UNIX` stream socket pair, `O_CLOEXEC`, blocking.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory-safety preconditions; a
    // bad fd is reported as EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags == -1 {
            return Err(io::Error::last_os_error());
        }
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if new != flags && libc::fcntl(fd, libc::F_SETFL, new) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Grows a pipe's buffer to at least `bytes` (`F_SETPIPE_SZ`); returns the
/// new size.
pub(crate) fn set_pipe_size(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
    // SAFETY: as in `set_nonblocking`.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// `dup(fd)` with `O_CLOEXEC`.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: as in `set_nonblocking`.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the new fd is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `close(2)` on a raw fd number, for a freshly forked child dropping fds
/// it inherited but must not hold (their owners live in the parent).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: closing an fd number has no memory-safety preconditions; in
    // the child nothing else will use these numbers (their owning objects
    // belong to the parent and are never dropped here).
    unsafe { libc::close(fd) };
}

/// `read(2)`, retrying on `EINTR`.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, writable for the call.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `write(2)` (or `send(MSG_NOSIGNAL)` on sockets, so a vanished peer is an
/// `EPIPE` error rather than a `SIGPIPE`), retrying on `EINTR`.
pub(crate) fn write(fd: RawFd, buf: &[u8], socket: bool) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, readable for the call.
        let r = unsafe {
            if socket {
                libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)
            } else {
                libc::write(fd, buf.as_ptr().cast(), buf.len())
            }
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One entry of [`poll`].
pub(crate) type PollFd = libc::pollfd;

/// Builds a [`PollFd`] for `fd` waiting for readability and/or writability.
pub(crate) fn poll_fd(fd: &impl AsRawFd, read: bool, write: bool) -> PollFd {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// Whether a polled fd reported readability, hang-up or an error.
pub(crate) fn poll_readable(p: &PollFd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Whether a polled fd reported writability (or an error).
pub(crate) fn poll_writable(p: &PollFd) -> bool {
    p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// `poll(2)`, blocking the thread up to `timeout` (`None`: forever). For
/// threads without coroutines (pool managers) and for finishing a frame
/// after a cancellation. Returns the number of ready fds (0: timed out).
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as libc::c_int,
    };
    loop {
        // SAFETY: the pointer and count describe `fds`, writable for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A `MAP_SHARED | MAP_ANONYMOUS` mapping: the same physical pages in this
/// process and in every child forked after it was created.
///
/// # Invariants
/// `ptr` is the start of a live mapping of `len` bytes, page aligned and
/// zero-filled at creation, unmapped only by `Drop`.
pub(crate) struct SharedMem {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; the types placed in it are atomics,
// which are safe to share between threads (and processes).
unsafe impl Send for SharedMem {}
// SAFETY: as above.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Maps `len` zeroed bytes (`len > 0`).
    pub(crate) fn new(len: usize) -> io::Result<SharedMem> {
        // SAFETY: an anonymous shared mapping at an address the kernel picks
        // has no preconditions; failure is MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMem { ptr: p.cast(), len })
    }

    /// The start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: per the invariants, this is our live mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
