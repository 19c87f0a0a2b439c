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
//! # Why one file, and why not libc
//!
//! Under [`patch_all`](crate::monkey::patch_all) the libc symbols of the
//! data calls are moss's own hooks, and even unpatched each call goes
//! through the hook's check and then libc's cancellation-point wrappers
//! (`__pthread_enable_asynccancel`/`disable`), which a socket of ours,
//! non-blocking and never cancelled by `pthread_cancel`, does not need. So
//! on x86_64 and aarch64 the data calls (`read`, `write`, `recv`, `send`
//! and their vectored and addressed forms) issue the syscall instruction
//! directly ([`raw`]): about a tenth of the user-space instructions per
//! call. Other targets call libc. Calls that stay on libc symbols on
//! purpose: `accept4` and `connect` (once per connection), `close` (the
//! hooks' fd bookkeeping must see it), socket options and addresses
//! (`setsockopt`, `getsockname`, through std and socket2), and the two
//! Unix-address calls at the end, which go through std because std's
//! `SocketAddr` for Unix sockets has no public constructor for an unnamed
//! address.

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
    let n = unsafe {
        raw::syscall3(
            libc::SYS_read,
            fd as _,
            buf.as_mut_ptr() as _,
            buf.len() as _,
        )
    };
    raw::result(n)
}

/// `write(2)` on a non-blocking pipe end.
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes; `fd` is the live
    // pipe end of the caller.
    let n = unsafe { raw::syscall3(libc::SYS_write, fd as _, buf.as_ptr() as _, buf.len() as _) };
    raw::result(n)
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
    let n = unsafe {
        raw::syscall6(
            libc::SYS_recvfrom,
            fd as _,
            buf.as_mut_ptr() as _,
            buf.len() as _,
            how.flags() as _,
            0,
            0,
        )
    };
    raw::result(n)
}

/// `recvmsg(2)` into several buffers (a vectored read).
pub(crate) fn recv_vectored(fd: RawFd, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    // IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
    let mut msg = msghdr(bufs.as_mut_ptr().cast(), bufs.len());
    // SAFETY: `msg` points at `bufs`' iovecs, each valid for writes of its
    // length, for the duration of the call.
    let n = unsafe {
        raw::syscall3(
            libc::SYS_recvmsg,
            fd as _,
            &raw mut msg as _,
            libc::MSG_DONTWAIT as _,
        )
    };
    raw::result(n)
}

/// The most buffers one vectored call passes: Linux's `UIO_MAXIOV`. The
/// kernel refuses more (`EMSGSIZE`); std passes the first `IOV_MAX` and
/// reports a short read or write, and so does moss.
const IOV_MAX: usize = 1024;

/// The buffers of `bufs` one vectored call passes (see [`IOV_MAX`]).
pub(crate) fn iov_prefix<T>(bufs: &[T]) -> &[T] {
    &bufs[..bufs.len().min(IOV_MAX)]
}

/// [`iov_prefix`] for receive buffers.
pub(crate) fn iov_prefix_mut<T>(bufs: &mut [T]) -> &mut [T] {
    let n = bufs.len().min(IOV_MAX);
    &mut bufs[..n]
}

/// A `msghdr` over the `len` iovecs at `iov`, with no name and no control
/// data (at most [`IOV_MAX`] iovecs are passed: a short read or write).
fn msghdr(iov: *mut libc::iovec, len: usize) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = len.min(IOV_MAX) as _;
    msg
}

/// `send(2)` of `buf`.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes; `fd` is the live
    // socket of the caller.
    let n = unsafe {
        raw::syscall6(
            libc::SYS_sendto,
            fd as _,
            buf.as_ptr() as _,
            buf.len() as _,
            SEND_FLAGS as _,
            0,
            0,
        )
    };
    raw::result(n)
}

/// `sendmsg(2)` of several buffers (a vectored write).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only
    // reads through the pointer.
    let msg = msghdr(bufs.as_ptr().cast_mut().cast(), bufs.len());
    // SAFETY: `msg` points at `bufs`' iovecs, each valid for reads of its
    // length, for the duration of the call.
    let n = unsafe {
        raw::syscall3(
            libc::SYS_sendmsg,
            fd as _,
            &raw const msg as _,
            SEND_FLAGS as _,
        )
    };
    raw::result(n)
}

/// `recvfrom(2)`: one datagram (truncated to `buf`) and its sender.
pub(crate) fn recv_from(fd: RawFd, buf: &mut [u8], how: Recv) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `try_init` hands us a zeroed `sockaddr_storage` and its length
    // to fill; recvfrom writes at most `*len` bytes there and updates `len`.
    // `buf` is valid for writing `buf.len()` bytes.
    let (n, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let n = raw::syscall6(
                libc::SYS_recvfrom,
                fd as _,
                buf.as_mut_ptr() as _,
                buf.len() as _,
                how.flags() as _,
                storage as _,
                len as _,
            );
            raw::result(n)
        })
    }?;
    Ok((n, addr))
}

/// `sendto(2)`: one datagram to `addr`.
pub(crate) fn send_to(fd: RawFd, buf: &[u8], addr: &SockAddr) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reading `buf.len()` bytes; `addr` points at
    // `addr.len()` bytes of a socket address.
    let n = unsafe {
        raw::syscall6(
            libc::SYS_sendto,
            fd as _,
            buf.as_ptr() as _,
            buf.len() as _,
            SEND_FLAGS as _,
            addr.as_ptr() as _,
            addr.len() as _,
        )
    };
    raw::result(n)
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

/// The syscall instruction itself, without libc (see the module docs).
///
/// `syscallN(nr, args..)` returns the kernel's result: a value, or
/// `-errno` in `-4095..=-1` (errno is not set). [`result`] turns that into
/// an `io::Result`. On targets without an implementation here the same
/// functions call libc's `syscall`.
mod raw {
    use std::io;

    type Arg = libc::c_long;

    /// The kernel's return value as a byte count or an error.
    #[inline(always)]
    pub(super) fn result(r: Arg) -> io::Result<usize> {
        if (-4095..0).contains(&r) {
            Err(io::Error::from_raw_os_error(-r as i32))
        } else {
            Ok(r as usize)
        }
    }

    /// # Safety
    /// As the syscall `nr` with these arguments.
    #[inline(always)]
    pub(super) unsafe fn syscall3(nr: Arg, a1: Arg, a2: Arg, a3: Arg) -> Arg {
        // SAFETY: the caller's contract; unused arguments are ignored.
        unsafe { syscall6(nr, a1, a2, a3, 0, 0, 0) }
    }

    /// # Safety
    /// As the syscall `nr` with these arguments.
    #[inline(always)]
    pub(super) unsafe fn syscall6(
        nr: Arg,
        a1: Arg,
        a2: Arg,
        a3: Arg,
        a4: Arg,
        a5: Arg,
        a6: Arg,
    ) -> Arg {
        #[cfg(target_arch = "x86_64")]
        {
            let r;
            // The x86_64 Linux syscall convention: number and result in rax,
            // arguments in rdi, rsi, rdx, r10, r8, r9.
            // SAFETY: as that convention says; the instruction clobbers rcx and
            // r11 and nothing else (no stack use); its memory effects are the
            // caller's contract.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    inlateout("rax") nr => r,
                    in("rdi") a1,
                    in("rsi") a2,
                    in("rdx") a3,
                    in("r10") a4,
                    in("r8") a5,
                    in("r9") a6,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack, preserves_flags),
                );
            }
            r
        }
        #[cfg(target_arch = "aarch64")]
        {
            let r;
            // SAFETY: the aarch64 Linux syscall convention: number in x8,
            // arguments in x0..x5, result in x0; `svc 0` clobbers nothing
            // else. The syscall's own memory effects are the caller's contract.
            unsafe {
                std::arch::asm!(
                    "svc 0",
                    in("x8") nr,
                    inlateout("x0") a1 => r,
                    in("x1") a2,
                    in("x2") a3,
                    in("x3") a4,
                    in("x4") a5,
                    in("x5") a6,
                    options(nostack, preserves_flags),
                );
            }
            r
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            // SAFETY: the caller's contract.
            let r = unsafe { libc::syscall(nr, a1, a2, a3, a4, a5, a6) };
            if r == -1 {
                -Arg::from(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO),
                )
            } else {
                r
            }
        }
    }
}

/// The same operations on the io_uring backend: each builds its SQE,
/// submits it to this thread's ring and parks until its completion
/// (`moss_runtime::reactor::uring`). Receives, `accept` and `connect`
/// pass no `MSG_DONTWAIT`: the kernel waits for readiness itself.
///
/// Sends do pass `MSG_DONTWAIT` (with `MSG_NOSIGNAL`), which the ring
/// honours as "never wait": a send that finds no room completes at once
/// with `-EAGAIN` instead of being parked inside the kernel, and the
/// caller waits for room on the hub's edge-triggered epoll set (which the
/// ring watches) and submits again (`fd.rs`, `ring_write_op`). So a send
/// in flight is only ever a submission the next `io_uring_enter` runs to
/// completion inline: never a poll armed in the kernel (a level poll spins
/// when TCP memory is short: writable, yet `send` fails), never a kernel
/// worker blocked in `send` (which a cancellation does not reach), and
/// its cancellation is exact like the others'. `deadline` bounds the
/// wait: when it passes, the operation is cancelled and fails with
/// `ErrorKind::TimedOut` (with no raw os error, unlike a kernel
/// `ETIMEDOUT`).
///
/// Each function borrows its buffers and addresses for the whole call,
/// and the call returns (or unwinds) only after the kernel has posted the
/// completion: that is what makes every submission below sound.
pub(crate) mod ring {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::time::Instant;

    use moss_runtime::reactor::uring::{self, Fd, op};
    use socket2::SockAddr;

    use super::{Recv, SEND_FLAGS, unix};

    /// A buffer length for an SQE (longer buffers are used in part, as a
    /// short read or write).
    fn len32(n: usize) -> u32 {
        n.min(u32::MAX as usize) as u32
    }

    fn recv_flags(how: Recv) -> u32 {
        match how {
            Recv::Take => 0,
            Recv::Peek => libc::MSG_PEEK as u32,
        }
    }

    /// `IORING_OP_RECV` into `buf`.
    pub(crate) fn recv(
        fd: RawFd,
        buf: &mut [u8],
        how: Recv,
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        let e = op::Recv::new(Fd(fd), buf.as_mut_ptr(), len32(buf.len()))
            .flags(recv_flags(how) as i32)
            .ioprio(uring::recv_ioprio())
            .build();
        // SAFETY: `buf` is borrowed mutably until `complete` returns, which
        // is after the kernel's last write into it (see the module docs).
        unsafe { uring::complete(e, deadline) }
    }

    /// `IORING_OP_RECVMSG` into several buffers.
    pub(crate) fn recv_vectored(
        fd: RawFd,
        bufs: &mut [IoSliceMut<'_>],
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        // IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
        let mut msg = super::msghdr(bufs.as_mut_ptr().cast(), bufs.len());
        let e = op::RecvMsg::new(Fd(fd), &mut msg)
            .ioprio(uring::recv_ioprio())
            .build();
        // SAFETY: `msg` (on this frame) and the buffers it points at are
        // borrowed until `complete` returns, after the kernel is done.
        unsafe { uring::complete(e, deadline) }
    }

    /// `IORING_OP_RECVMSG` of one datagram (truncated to `buf`) and its
    /// sender.
    pub(crate) fn recv_from(
        fd: RawFd,
        buf: &mut [u8],
        how: Recv,
        deadline: Option<Instant>,
    ) -> io::Result<(usize, SockAddr)> {
        // SAFETY: `try_init` hands us zeroed address storage and its length;
        // the kernel writes at most that many bytes there, and we store the
        // length it reports.
        let (n, addr) = unsafe {
            SockAddr::try_init(|storage, len| {
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let mut msg = super::msghdr(&mut iov, 1);
                msg.msg_name = storage.cast();
                msg.msg_namelen = *len;
                let e = op::RecvMsg::new(Fd(fd), &mut msg)
                    .flags(recv_flags(how))
                    .ioprio(uring::recv_ioprio())
                    .build();
                // SAFETY: `msg`, `iov`, the storage and `buf` outlive the
                // call, which returns after the kernel is done with them.
                let n = uring::complete(e, deadline)?;
                *len = msg.msg_namelen;
                Ok(n)
            })
        }?;
        Ok((n, addr))
    }

    /// `IORING_OP_SEND` of `buf`, never waiting for room (`-EAGAIN`).
    pub(crate) fn send(fd: RawFd, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        let e = op::Send::new(Fd(fd), buf.as_ptr(), len32(buf.len()))
            .flags(SEND_FLAGS)
            .build();
        // SAFETY: `buf` is borrowed until `complete` returns, after the
        // kernel's last read of it.
        unsafe { uring::complete(e, deadline) }
    }

    /// `IORING_OP_SENDMSG` of several buffers, never waiting for room.
    pub(crate) fn send_vectored(
        fd: RawFd,
        bufs: &[IoSlice<'_>],
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        // IoSlice is guaranteed ABI-compatible with iovec on Unix; the
        // kernel only reads through the pointer.
        let msg = super::msghdr(bufs.as_ptr().cast_mut().cast(), bufs.len());
        let e = op::SendMsg::new(Fd(fd), &msg)
            .flags(SEND_FLAGS as u32)
            .build();
        // SAFETY: `msg` (on this frame) and the buffers it points at are
        // borrowed until `complete` returns, after the kernel is done.
        unsafe { uring::complete(e, deadline) }
    }

    /// `IORING_OP_SENDMSG` of one datagram to `addr`, never waiting for
    /// room.
    pub(crate) fn send_to(
        fd: RawFd,
        buf: &[u8],
        addr: &SockAddr,
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let mut msg = super::msghdr(&mut iov, 1);
        msg.msg_name = addr.as_ptr().cast_mut().cast();
        msg.msg_namelen = addr.len();
        let e = op::SendMsg::new(Fd(fd), &msg)
            .flags(SEND_FLAGS as u32)
            .build();
        // SAFETY: `msg`, `iov`, `buf` and `addr` are borrowed until
        // `complete` returns, after the kernel is done with them (the
        // kernel only reads them).
        unsafe { uring::complete(e, deadline) }
    }

    /// `IORING_OP_ACCEPT`: a new connection, already `O_NONBLOCK |
    /// O_CLOEXEC`, and the peer's address.
    pub(crate) fn accept(fd: RawFd, deadline: Option<Instant>) -> io::Result<(OwnedFd, SockAddr)> {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: as in `recv_from`: the kernel writes at most `*len` bytes
        // of address into the storage and updates `len`, both alive until
        // `complete` returns.
        let (cfd, addr) = unsafe {
            SockAddr::try_init(|storage, len| {
                let e = op::Accept::new(Fd(fd), storage.cast(), len)
                    .flags(flags)
                    .build();
                uring::complete(e, deadline)
            })
        }?;
        // SAFETY: the accept succeeded, so `cfd` is a new fd nothing owns.
        Ok((unsafe { OwnedFd::from_raw_fd(cfd as RawFd) }, addr))
    }

    /// `IORING_OP_ACCEPT` on a Unix listener. The peer's address comes
    /// from `getpeername` through std (see the module docs: std's Unix
    /// `SocketAddr` has no public constructor), the same address accept
    /// would report.
    pub(crate) fn unix_accept(
        fd: RawFd,
        deadline: Option<Instant>,
    ) -> io::Result<(unix::UnixStream, unix::SocketAddr)> {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let e = op::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(flags)
            .build();
        // SAFETY: the entry points at no memory (no address is asked for).
        let cfd = unsafe { uring::complete(e, deadline) }?;
        // SAFETY: the accept succeeded, so `cfd` is a new fd nothing owns.
        let s = unix::UnixStream::from(unsafe { OwnedFd::from_raw_fd(cfd as RawFd) });
        let a = s.peer_addr()?;
        Ok((s, a))
    }

    /// `IORING_OP_CONNECT`: completes when the connection is established
    /// or has failed.
    pub(crate) fn connect(fd: RawFd, addr: &SockAddr, deadline: Option<Instant>) -> io::Result<()> {
        let e = op::Connect::new(Fd(fd), addr.as_ptr().cast(), addr.len()).build();
        // SAFETY: `addr` is borrowed until `complete` returns.
        unsafe { uring::complete(e, deadline) }.map(drop)
    }
}
