//! Pipes, socket pairs and plain fd operations for the pools and processes.
//!
//! Contract for `pool::*`: each function is one syscall (or a short fixed
//! sequence) reporting failure as `io::Error`, never panicking. Fds come
//! back as [`OwnedFd`] with `O_CLOEXEC` set, so an `exec` in some child
//! never leaks them, and numbered 3 or above, so they never stand in for a
//! stdio stream the user closed. `read` and `write` retry `EINTR`; on a non-blocking
//! fd they report `WouldBlock` and the caller waits through the hub.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::cvt::{cvt, cvt_r};

/// The lowest fd number moss's private fds (pipes, socket pairs, pidfds,
/// duplicates) get: 0–2 are stdio, and a protocol fd that lands there
/// (because the user closed stdout, say) would receive whatever a
/// `println!` writes, in this process or in a child.
const LOWEST_PRIVATE_FD: RawFd = 3;

/// Takes ownership of a fresh fd the kernel just returned, moving it to 3 or
/// above first (see `LOWEST_PRIVATE_FD`); the low number is closed.
/// Public (hidden) for moss-io's private fds (the signal catcher's bells).
///
/// # Safety
/// `fd` is open, and no object in this process owns or uses the number.
pub unsafe fn own(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller's contract: nothing else owns this number.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd >= LOWEST_PRIVATE_FD {
        return Ok(owned);
    }
    dup(fd)
}

/// Runs `f`, which creates fds whose numbers moss cannot choose (a
/// library's: mio's epoll instance and eventfd), with every closed stdio
/// number (0–2) taken by a placeholder meanwhile, so that they land at 3 or
/// above (see [`LOWEST_PRIVATE_FD`]); the placeholders are closed after.
/// Costs three `fcntl`s when stdio is open. Another thread that opens a
/// file meanwhile gets a number of 3 or above too.
pub(crate) fn above_stdio<T>(f: impl FnOnce() -> T) -> T {
    let mut held: [Option<OwnedFd>; 3] = [None, None, None];
    for (fd, slot) in (0..LOWEST_PRIVATE_FD).zip(held.iter_mut()) {
        // SAFETY: F_GETFD only reads the fd's flags (EBADF: not open).
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // SAFETY: plain syscall; the fd is owned below.
        let p = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if p < 0 {
            break; // no fd left: `f` will fail on its own
        }
        // SAFETY: the kernel just returned `p` to us; nothing else owns it.
        let placeholder = unsafe { OwnedFd::from_raw_fd(p) };
        // Another thread may have taken the number meanwhile: then the
        // placeholder landed elsewhere and is closed at once.
        if p == fd {
            *slot = Some(placeholder);
        }
    }
    let r = f();
    drop(held);
    r
}

/// A pipe `(read end, write end)`, both `O_CLOEXEC`, optionally
/// non-blocking, numbered 3 or above.
pub(crate) fn pipe(nonblocking: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    // SAFETY: the kernel just returned both fds to us; nothing owns them.
    let (r, w) = unsafe { (own(fds[0]), own(fds[1])) };
    Ok((r?, w?))
}

/// A connected `AF_UNIX` stream socket pair, `O_CLOEXEC`, blocking,
/// numbered 3 or above.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two fds socketpair writes.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) })?;
    // SAFETY: the kernel just returned both fds to us; nothing owns them.
    let (a, b) = unsafe { (own(fds[0]), own(fds[1])) };
    Ok((a?, b?))
}

/// Sets or clears `O_NONBLOCK` on `fd`; returns whether it was set before.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<bool> {
    // SAFETY: fcntl on an fd number with F_GETFL/F_SETFL only reads and
    // changes its status flags; a bad fd is reported as EBADF.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Grows a pipe's buffer to at least `bytes` (`F_SETPIPE_SZ`); returns the
/// new size.
pub(crate) fn set_pipe_size(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
    // SAFETY: as in `set_nonblocking`.
    let r = cvt(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) })?;
    Ok(r as usize)
}

/// `dup(fd)` with `O_CLOEXEC`, numbered 3 or above.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: as in `set_nonblocking`.
    let r = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, LOWEST_PRIVATE_FD) })?;
    // SAFETY: the new fd is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `close(2)` on a raw fd number (never retried: on Linux the fd is gone
/// even when `close` reports `EINTR`).
///
/// # Safety
/// Nothing in this process may use `fd` as the same open file afterwards:
/// the caller owns the number, and every object that holds it (an
/// [`OwnedFd`], a socket) is never used or dropped again. A freshly forked
/// child closing fds whose owners live on in the parent is the intended use.
pub(crate) unsafe fn close_raw(fd: RawFd) {
    // SAFETY: closing an fd number has no memory-safety preconditions; the
    // caller guarantees that no owner uses the number again.
    let _ = cvt(unsafe { libc::close(fd) });
}

/// `read(2)`, retrying on `EINTR`.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, writable for the call.
    cvt_r(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n as usize)
}

/// `write(2)` (or `send(MSG_NOSIGNAL)` on sockets, so a vanished peer is an
/// `EPIPE` error rather than a `SIGPIPE`), retrying on `EINTR`.
pub(crate) fn write(fd: RawFd, buf: &[u8], socket: bool) -> io::Result<usize> {
    let (p, len) = (buf.as_ptr().cast(), buf.len());
    cvt_r(|| {
        // SAFETY: the pointer and length describe `buf`, readable for the call.
        unsafe {
            if socket {
                libc::send(fd, p, len, libc::MSG_NOSIGNAL)
            } else {
                libc::write(fd, p, len)
            }
        }
    })
    .map(|n| n as usize)
}

/// `shutdown(2)`: after `Write`, the peer of a stream socket reads
/// end-of-file once it has read what was sent before; after `Read`, the
/// peer's sends fail with `EPIPE`. It acts on the socket itself, in every
/// process sharing it.
pub(crate) fn shutdown(fd: RawFd, how: std::net::Shutdown) -> io::Result<()> {
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown on an fd number has no memory-safety preconditions;
    // a bad fd is reported as EBADF/ENOTSOCK.
    cvt(unsafe { libc::shutdown(fd, how) }).map(drop)
}
