//! Data transfer hooks: `read`, `readv`, `write`, `writev`, `recv`,
//! `recvfrom`, `recvmsg`, `send`, `sendto`, `sendmsg`, and the zero-copy
//! `sendfile`/`sendfile64` and `splice` that `std::io::copy` uses between
//! files, pipes and sockets.
//!
//! Each one is: not patched → the real call; patched → [`io`], which looks
//! the fd up (classifying it once on a hub thread) and runs the real call
//! directly unless the fd is cooperative *and* the user expects blocking.
//! Then it tries the call, and on `EAGAIN` waits for readiness (parking the
//! coroutine, or running the hub on the root, or `poll(2)` on a thread
//! without a hub) and retries. A `MSG_DONTWAIT` call is always passed
//! through. Outcomes of the wait:
//!
//! | wait ended by              | the call returns                     |
//! |----------------------------|--------------------------------------|
//! | readiness                  | the retried call's result            |
//! | `SO_RCVTIMEO`/`SO_SNDTIMEO`| -1, `EAGAIN` (as Linux does)         |
//! | `kill`/`timeout` pending   | -1, `ECANCELED` (see `mod.rs`)       |
//! | `close` of the fd          | -1, `EBADF`                          |

use std::ffi::{c_int, c_void};
use std::time::Instant;

use libc::{c_uint, iovec, loff_t, msghdr, off_t, off64_t, size_t, sockaddr, socklen_t, ssize_t};

/// `SPLICE_F_NONBLOCK` from <fcntl.h>.
const SPLICE_F_NONBLOCK: c_uint = 2;
use moss_runtime::reactor::Interest;

use super::fdtable::{self, Outcome};
use super::{patched, real};

/// Runs the real call `op` on `fd` with the blocking semantics its user
/// expects (see the module docs).
#[inline]
pub(crate) fn io(fd: c_int, dir: Interest, mut op: impl FnMut() -> ssize_t) -> ssize_t {
    let st = fdtable::state_for_io(fd);
    if !st.blocking_coop() {
        return op();
    }
    // A call that succeeds after waiting leaves errno as the caller had it,
    // as the blocking call would have.
    let saved = real::errno();
    if !take_turn(fd, saved) {
        return -1;
    }
    let r = op();
    if r >= 0 || real::errno() != libc::EAGAIN {
        return r;
    }
    io_wait(fd, st, dir, saved, &mut op)
}

/// [`io`] for a plain read of up to `len` bytes (`read`, `recv`,
/// `recvfrom` without `MSG_PEEK`), with the "drained" hint of stream fds:
/// after a short read, the next read waits for readiness before trying
/// (see `fdtable::take_drained`), saving the `EAGAIN` a request/response
/// exchange would otherwise pay on every message.
#[inline]
pub(crate) fn io_read(fd: c_int, len: usize, mut op: impl FnMut() -> ssize_t) -> ssize_t {
    let st = fdtable::state_for_io(fd);
    if !st.blocking_coop() {
        return op();
    }
    let saved = real::errno();
    if !take_turn(fd, saved) {
        return -1;
    }
    let stream = st.is_stream();
    let r = if stream && fdtable::take_drained(fd, st) {
        io_wait(fd, st, Interest::Readable, saved, &mut op)
    } else {
        let r = op();
        if r < 0 && real::errno() == libc::EAGAIN {
            io_wait(fd, st, Interest::Readable, saved, &mut op)
        } else {
            r
        }
    };
    if stream && r > 0 && (r as usize) < len {
        fdtable::set_drained(fd, st);
    }
    r
}

/// Fairness (`moss_runtime::coop`): a call on a cooperative fd spends a
/// unit of the coroutine's budget and may yield first. False (errno set to
/// `ECANCELED`) if a cancellation arrived meanwhile. Not for the standard
/// streams: std reads and writes them under a lock whose buffer another
/// coroutine of the thread would find borrowed.
#[inline]
fn take_turn(fd: c_int, saved: c_int) -> bool {
    if fd <= 2 {
        return true;
    }
    match moss_runtime::coop::proceed_raw() {
        moss_runtime::coop::Proceed::Go => true,
        moss_runtime::coop::Proceed::Yielded => {
            real::set_errno(saved);
            true
        }
        moss_runtime::coop::Proceed::Cancelled => {
            real::set_errno(libc::ECANCELED);
            false
        }
    }
}

/// The first try said `EAGAIN`: wait and retry until done.
#[cold]
fn io_wait(
    fd: c_int,
    st: fdtable::FdState,
    dir: Interest,
    saved: c_int,
    op: &mut dyn FnMut() -> ssize_t,
) -> ssize_t {
    let deadline = fdtable::timeout(fd, dir).and_then(|t| Instant::now().checked_add(t));
    loop {
        if let Some(fail) = wait_errno(fd, st, dir, deadline) {
            real::set_errno(fail);
            return -1;
        }
        let r = op();
        if r >= 0 {
            real::set_errno(saved);
            return r;
        }
        if real::errno() != libc::EAGAIN {
            return r;
        }
    }
}

/// Waits for `dir` on `fd`: `None` when ready, else the errno to fail with
/// (timeout → `timed_out`).
pub(crate) fn wait_errno_or(
    fd: c_int,
    st: fdtable::FdState,
    dir: Interest,
    deadline: Option<Instant>,
    timed_out: c_int,
) -> Option<c_int> {
    match fdtable::wait(fd, st, dir, deadline) {
        Outcome::Ready => None,
        Outcome::TimedOut => Some(timed_out),
        Outcome::Cancelled => Some(libc::ECANCELED),
        Outcome::Closed => Some(libc::EBADF),
    }
}

fn wait_errno(
    fd: c_int,
    st: fdtable::FdState,
    dir: Interest,
    deadline: Option<Instant>,
) -> Option<c_int> {
    wait_errno_or(fd, st, dir, deadline, libc::EAGAIN)
}

/// Hook for `read(2)`.
///
/// # Safety
/// As `read(2)`: `buf` is valid for `count` bytes of writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::read()(fd, buf, count) };
    if !patched() {
        return op();
    }
    io_read(fd, count, op)
}

/// Hook for `readv(2)`.
///
/// # Safety
/// As `readv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::readv()(fd, iov, iovcnt) };
    if !patched() {
        return op();
    }
    io(fd, Interest::Readable, op)
}

/// Hook for `write(2)`.
///
/// # Safety
/// As `write(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::write()(fd, buf, count) };
    if !patched() {
        return op();
    }
    io(fd, Interest::Writable, op)
}

/// Hook for `writev(2)`.
///
/// # Safety
/// As `writev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::writev()(fd, iov, iovcnt) };
    if !patched() {
        return op();
    }
    io(fd, Interest::Writable, op)
}

/// Hook for `recv(2)`.
///
/// # Safety
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::recv()(fd, buf, len, flags) };
    if !patched() || flags & libc::MSG_DONTWAIT != 0 {
        return op();
    }
    if flags & libc::MSG_PEEK != 0 {
        return io(fd, Interest::Readable, op);
    }
    if flags & libc::MSG_WAITALL != 0 && fdtable::state_for_io(fd).blocking_coop() {
        // The kernel fd is non-blocking, where MSG_WAITALL may return
        // short: keep receiving until `len` bytes, EOF or an error.
        let mut got = 0usize;
        while got < len {
            // SAFETY: `buf` is valid for `len` bytes and `got < len`.
            let rest = unsafe { buf.cast::<u8>().add(got) }.cast();
            // SAFETY: as above, the rest of the caller's buffer.
            let r = io_read(fd, len - got, || unsafe {
                real::recv()(fd, rest, len - got, flags)
            });
            if r < 0 {
                return if got > 0 { got as ssize_t } else { -1 };
            }
            if r == 0 {
                break;
            }
            got += r as usize;
        }
        return got as ssize_t;
    }
    io_read(fd, len, op)
}

/// Hook for `recvfrom(2)`.
///
/// # Safety
/// As `recvfrom(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::recvfrom()(fd, buf, len, flags, addr, addrlen) };
    if !patched() || flags & libc::MSG_DONTWAIT != 0 {
        return op();
    }
    if flags & libc::MSG_PEEK != 0 {
        return io(fd, Interest::Readable, op);
    }
    io_read(fd, len, op)
}

/// Hook for `recvmsg(2)`.
///
/// # Safety
/// As `recvmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::recvmsg()(fd, msg, flags) };
    if !patched() || flags & libc::MSG_DONTWAIT != 0 {
        return op();
    }
    io(fd, Interest::Readable, op)
}

/// Hook for `send(2)`.
///
/// # Safety
/// As `send(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::send()(fd, buf, len, flags) };
    if !patched() || flags & libc::MSG_DONTWAIT != 0 {
        return op();
    }
    io(fd, Interest::Writable, op)
}

/// Hook for `sendto(2)`.
///
/// # Safety
/// As `sendto(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::sendto()(fd, buf, len, flags, addr, addrlen) };
    if !patched() || flags & libc::MSG_DONTWAIT != 0 {
        return op();
    }
    io(fd, Interest::Writable, op)
}

/// Hook for `sendmsg(2)`.
///
/// # Safety
/// As `sendmsg(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::sendmsg()(fd, msg, flags) };
    if !patched() || flags & libc::MSG_DONTWAIT != 0 {
        return op();
    }
    io(fd, Interest::Writable, op)
}

/// Hook for `sendfile(2)`: waits on the output socket.
///
/// # Safety
/// As `sendfile(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::sendfile()(out_fd, in_fd, offset, count) };
    if !patched() {
        return op();
    }
    io(out_fd, Interest::Writable, op)
}

/// Hook for `sendfile64` (what std calls; the same function on 64-bit).
///
/// # Safety
/// As `sendfile(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off64_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::sendfile64()(out_fd, in_fd, offset, count) };
    if !patched() {
        return op();
    }
    io(out_fd, Interest::Writable, op)
}

/// Hook for `splice(2)`: waits on whichever end is a cooperative socket
/// (the other end of a splice is a pipe, which stays blocking).
///
/// # Safety
/// As `splice(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut loff_t,
    fd_out: c_int,
    off_out: *mut loff_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::splice()(fd_in, off_in, fd_out, off_out, len, flags) };
    if !patched() || flags & SPLICE_F_NONBLOCK != 0 {
        return op();
    }
    let (sin, sout) = (fdtable::state_for_io(fd_in), fdtable::state_for_io(fd_out));
    if !sin.blocking_coop() && !sout.blocking_coop() {
        return op();
    }
    let saved = real::errno();
    loop {
        let r = op();
        if r >= 0 {
            real::set_errno(saved);
            return r;
        }
        if real::errno() != libc::EAGAIN {
            return r;
        }
        // Either end may be the one that is not ready: ask the kernel which.
        let mut p = [
            libc::pollfd {
                fd: fd_in,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fd_out,
                events: libc::POLLOUT,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        real::keep_errno(|| unsafe { real::poll()(p.as_mut_ptr(), 2, 0) });
        let (fd, st, dir) = if p[0].revents == 0 && sin.is_coop() {
            (fd_in, sin, Interest::Readable)
        } else if sout.is_coop() {
            (fd_out, sout, Interest::Writable)
        } else {
            (fd_in, sin, Interest::Readable)
        };
        if let Some(fail) = wait_errno(fd, st, dir, None) {
            real::set_errno(fail);
            return -1;
        }
    }
}

hook_addresses!(
    read, readv, write, writev, recv, recvfrom, recvmsg, send, sendto, sendmsg, sendfile,
    sendfile64, splice
);
