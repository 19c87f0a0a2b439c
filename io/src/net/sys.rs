//! Every syscall through which `moss::net` moves data, accepts, connects or
//! changes an fd's blocking mode: the platform layer of the socket types
//! (and of the subprocess pipes, which share their engine).
//!
//! # Contract
//!
//! * Each function is one syscall on a socket the caller owns, reporting
//!   failure as `io::Error` (through the runtime's one `cvt`).
//! * Data calls never block the thread: they pass `MSG_DONTWAIT`, so even a
//!   socket whose shared file description someone switched back to blocking
//!   mode (a `dup` converted to a std socket) cannot stall the hub. Sends
//!   pass `MSG_NOSIGNAL`: a closed peer is `BrokenPipe`/`ConnectionReset`,
//!   never `SIGPIPE`.
//! * `EINTR` is returned as it is; the callers' retry loops (`fd.rs`) treat
//!   it as "try again".
//!
//! # Why one file
//!
//! Under [`patch_all`](crate::monkey::patch_all) the libc symbols called
//! here are moss's own hooks. They pass these calls straight through
//! (`MSG_DONTWAIT`, or an fd the hooks do not treat as blocking), which
//! costs a table lookup per call. Issuing the syscalls directly
//! (`libc::syscall`) would skip the hooks altogether; that change belongs
//! here and nowhere else. Calls that stay on libc symbols on purpose, and
//! are therefore not here: `close` (the hooks' fd bookkeeping must see it),
//! socket options and addresses (`setsockopt`, `getsockname`, through std
//! and socket2), and the two Unix-address calls at the end, which go
//! through std because std's `SocketAddr` for Unix sockets has no public
//! constructor for an unnamed address.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net as unix;

use moss_runtime::sys::cvt::cvt;
use socket2::SockAddr;

/// Sets or clears `O_NONBLOCK` on `fd` (`fcntl`); returns whether it was
/// set before. The runtime's platform layer has the one implementation.
pub(crate) use moss_runtime::sys::fd::set_nonblocking;

/// `read(2)` on a non-blocking pipe end (`EAGAIN` makes the caller wait on
/// the hub).
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writing `buf.len()` bytes; `fd` is the live
    // pipe end of the caller.
    let n = cvt(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// `write(2)` on a non-blocking pipe end.
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes; `fd` is the live
    // pipe end of the caller.
    let n = cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// How a receive treats the queued data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Consume it.
    Take,
    /// Leave it queued (`MSG_PEEK`).
    Peek,
}

impl Recv {
    fn flags(self) -> libc::c_int {
        libc::MSG_DONTWAIT
            | match self {
                Recv::Take => 0,
                Recv::Peek => libc::MSG_PEEK,
            }
    }
}

const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// `recv(2)` into `buf`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], how: Recv) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writing `buf.len()` bytes; `fd` is the live
    // socket of the caller.
    let n = cvt(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), how.flags()) })?;
    Ok(n as usize)
}

/// `recvmsg(2)` into several buffers (a vectored read).
pub(crate) fn recv_vectored(fd: RawFd, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_mut_ptr().cast();
    msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    // SAFETY: `msg` points at `bufs`' iovecs, each valid for writes of its
    // length, for the duration of the call.
    let n = cvt(unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) })?;
    Ok(n as usize)
}

/// `send(2)` of `buf`.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes; `fd` is the live
    // socket of the caller.
    let n = cvt(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), SEND_FLAGS) })?;
    Ok(n as usize)
}

/// `sendmsg(2)` of several buffers (a vectored write).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only
    // reads through the pointer.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    // SAFETY: `msg` points at `bufs`' iovecs, each valid for reads of its
    // length, for the duration of the call.
    let n = cvt(unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })?;
    Ok(n as usize)
}

/// `recvfrom(2)`: one datagram (truncated to `buf`) and its sender.
pub(crate) fn recv_from(fd: RawFd, buf: &mut [u8], how: Recv) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `try_init` hands us a zeroed `sockaddr_storage` and its length
    // to fill; recvfrom writes at most `*len` bytes there and updates `len`.
    // `buf` is valid for writing `buf.len()` bytes.
    let (n, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let p = buf.as_mut_ptr().cast();
            cvt(libc::recvfrom(
                fd,
                p,
                buf.len(),
                how.flags(),
                storage.cast(),
                len,
            ))
        })
    }?;
    Ok((n as usize, addr))
}

/// `sendto(2)`: one datagram to `addr`.
pub(crate) fn send_to(fd: RawFd, buf: &[u8], addr: &SockAddr) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes; `addr` points at
    // `addr.len()` bytes of a socket address.
    let n = cvt(unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            SEND_FLAGS,
            addr.as_ptr().cast(),
            addr.len(),
        )
    })?;
    Ok(n as usize)
}

/// `accept4(2)`: a new connection, already `O_NONBLOCK | O_CLOEXEC` (one
/// syscall per connection), and the peer's address.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, SockAddr)> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: as in `recv_from`: accept4 writes at most `*len` bytes of
    // address into the storage and updates `len`.
    let (cfd, addr) = unsafe {
        SockAddr::try_init(|storage, len| cvt(libc::accept4(fd, storage.cast(), len, flags)))
    }?;
    // SAFETY: accept4 succeeded, so `cfd` is a new fd that nothing else owns.
    Ok((unsafe { OwnedFd::from_raw_fd(cfd) }, addr))
}

/// `connect(2)` of a non-blocking socket: `EINPROGRESS` (TCP) or `EAGAIN`
/// (a Unix listener's full backlog) come back as errors for the caller to
/// wait on.
pub(crate) fn connect(fd: RawFd, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: `addr` points at `addr.len()` bytes of a socket address.
    cvt(unsafe { libc::connect(fd, addr.as_ptr().cast(), addr.len()) }).map(drop)
}

/// `accept` on a Unix listener through std (see the module docs), then
/// `O_NONBLOCK` on the new socket.
pub(crate) fn unix_accept(
    l: &unix::UnixListener,
) -> io::Result<(unix::UnixStream, unix::SocketAddr)> {
    let (s, a) = l.accept()?;
    set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&s), true)?;
    Ok((s, a))
}

/// `recvfrom` on a Unix datagram socket through std (see the module docs);
/// the caller's fd is non-blocking.
pub(crate) fn unix_recv_from(
    s: &unix::UnixDatagram,
    buf: &mut [u8],
) -> io::Result<(usize, unix::SocketAddr)> {
    s.recv_from(buf)
}
