//! `TcpStream` and `TcpListener`: std's TCP types, blocking only the calling
//! coroutine.
//!
//! Each wraps the std type in [`Evented`] (see `fd.rs` for the blocking
//! emulation and the per-thread registration). Its syscalls are in
//! `sys.rs`: reads are `recv`/`recvmsg(MSG_DONTWAIT)`, writes
//! `send`/`sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL)`, so a write to a reset peer
//! fails with `ConnectionReset` or `BrokenPipe` instead of raising
//! `SIGPIPE`, and no call can block the thread even if a `dup` of the socket
//! was switched back to blocking mode. Accepted sockets come from
//! `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`: one syscall per connection.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{self, Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use moss_runtime::reactor::{Interest, Local, uring};
use socket2::{Domain, SockAddr, Socket, Type};

use super::addr::{ToSocketAddrs, each_addr};
use super::convert::std_conversions;
use super::fd::{Evented, is_deadline};
use super::sys::{self, Recv};

/// A TCP connection; [`std::net::TcpStream`] for coroutines.
///
/// Blocking calls park only the calling coroutine (or run the hub when
/// called from a thread's root). `Send + Sync` like std's: it may move to
/// another thread, where it registers with that thread's hub on first use.
///
/// ```
/// use std::io::{Read, Write};
/// let l = moss::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = l.local_addr().unwrap();
/// let server = moss::spawn(move || {
///     let (mut s, _) = l.accept().unwrap();
///     let mut b = [0; 5];
///     s.read_exact(&mut b).unwrap();
///     s.write_all(&b).unwrap();
/// });
/// let mut c = moss::net::TcpStream::connect(addr).unwrap();
/// c.write_all(b"hello").unwrap();
/// let mut b = [0; 5];
/// c.read_exact(&mut b).unwrap();
/// assert_eq!(&b, b"hello");
/// server.join().unwrap();
/// ```
pub struct TcpStream {
    inner: Evented<net::TcpStream>,
}

/// A TCP listening socket; [`std::net::TcpListener`] for coroutines.
pub struct TcpListener {
    inner: Evented<net::TcpListener>,
}

fn new_socket(addr: &SocketAddr) -> io::Result<Socket> {
    let ty = Type::STREAM.nonblocking().cloexec();
    Socket::new(Domain::for_address(*addr), ty, None)
}

impl TcpStream {
    /// Opens a connection to the first address of `addr` that accepts
    /// (host names are resolved off the hub). Fails with
    /// `ConnectionRefused` if nothing listens there.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(&addr, |a| TcpStream::connect_inner(a, None))
    }

    /// Connects to `addr`, failing with `ErrorKind::TimedOut` after
    /// `timeout` (std's `connect_timeout`; a zero timeout is `InvalidInput`).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_inner(addr, Instant::now().checked_add(timeout))
    }

    fn connect_inner(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
        let sock = new_socket(addr)?;
        let stream = TcpStream {
            inner: Evented::from_nonblocking(net::TcpStream::from(OwnedFd::from(sock))),
        };
        let sa = SockAddr::from(*addr);
        if uring::enabled() {
            return match sys::ring::connect(stream.as_raw_fd(), &sa, deadline) {
                Ok(()) => Ok(stream),
                Err(e) if is_deadline(&e) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                )),
                Err(e) => Err(e),
            };
        }
        match sys::connect(stream.as_raw_fd(), &sa) {
            Ok(()) => return Ok(stream),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        stream
            .inner
            .wait_until(Interest::Writable, deadline)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
                } else {
                    e
                }
            })?;
        match stream.take_error()? {
            Some(e) => Err(e),
            None => Ok(stream),
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().local_addr()
    }

    /// Shuts down the read, write, or both halves. A coroutine blocked in a
    /// read of this socket then sees end-of-file.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get().shutdown(how)
    }

    /// A new handle to the same socket (a `dup`ed fd with its own moss
    /// state: timeouts and the non-blocking flag are copied).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let s = TcpStream {
            inner: Evented::from_nonblocking(self.inner.get().try_clone()?),
        };
        s.set_read_timeout(self.read_timeout()?)?;
        s.set_write_timeout(self.write_timeout()?)?;
        s.set_nonblocking(self.inner.is_nonblocking())?;
        Ok(s)
    }

    /// Read timeout: a read that waits longer fails with
    /// `ErrorKind::WouldBlock` (raw os error `EAGAIN`), as std's does on
    /// Linux. `Some(Duration::ZERO)` is `InvalidInput`, as in std.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(dur)
    }

    /// Write timeout, with the same conventions as the read timeout.
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(dur)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.read_timeout())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.write_timeout())
    }

    /// Reads without consuming.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_op(|fd, d| sys::ring::recv(fd, buf, Recv::Peek, d))
        {
            return r;
        }
        let n = self
            .inner
            .read_op(None, |s| sys::recv(s.as_raw_fd(), buf, Recv::Peek), |n| *n)?;
        if n > 0 {
            self.inner.clear_drained();
        }
        Ok(n)
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.get().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.get().nodelay()
    }

    /// `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get().ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get().take_error()
    }

    /// With `true`, operations that would wait fail with
    /// `ErrorKind::WouldBlock` instead (the kernel fd is always
    /// non-blocking; this flag is moss's).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    fn read_inner(&self, buf: &mut [u8]) -> io::Result<usize> {
        let here = Local::get();
        if let Some(r) = self
            .inner
            .ring_op_in(here, |fd, d| sys::ring::recv(fd, buf, Recv::Take, d))
        {
            return r;
        }
        let len = buf.len();
        self.inner.read_op_in(
            here,
            Some(len),
            |s| sys::recv(s.as_raw_fd(), buf, Recv::Take),
            |n| *n,
        )
    }

    fn read_vectored_inner(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        // The buffers one call fills: the drained hint compares with them.
        let bufs = sys::iov_prefix_mut(bufs);
        if let Some(r) = self
            .inner
            .ring_op(|fd, d| sys::ring::recv_vectored(fd, bufs, d))
        {
            return r;
        }
        let len = bufs.iter().map(|b| b.len()).sum();
        self.inner.read_op(
            Some(len),
            |s| sys::recv_vectored(s.as_raw_fd(), bufs),
            |n| *n,
        )
    }

    #[inline(always)]
    fn write_inner(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner_in(Local::get(), buf)
    }

    #[inline(always)]
    fn write_inner_in(&self, here: Local, buf: &[u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_write_op_in(here, |fd, d| sys::ring::send(fd, buf, d))
        {
            return r;
        }
        self.inner
            .write_op_in(here, |s| sys::send(s.as_raw_fd(), buf))
    }

    fn write_all_inner(&self, buf: &[u8]) -> io::Result<()> {
        let here = Local::get();
        super::fd::write_all(buf, |b| self.write_inner_in(here, b))
    }

    fn write_vectored_inner(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bufs = sys::iov_prefix(bufs);
        if let Some(r) = self
            .inner
            .ring_write_op(|fd, d| sys::ring::send_vectored(fd, bufs, d))
        {
            return r;
        }
        self.inner
            .write_op(|s| sys::send_vectored(s.as_raw_fd(), bufs))
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_vectored_inner(bufs)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_vectored_inner(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all_inner(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_inner(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all_inner(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_inner(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TcpListener {
    /// Binds to the first address of `addr` that works, with `SO_REUSEADDR`
    /// as std does, and listens with the system's maximum backlog.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |a| TcpListener::bind_inner(a, false))
    }

    /// Like [`bind`](Self::bind), also setting `SO_REUSEPORT`: several
    /// listeners (typically one per thread of
    /// [`run_per_core`](moss_runtime::run_per_core)) can bind the same port,
    /// and the kernel spreads incoming connections over them.
    ///
    /// ```
    /// let a = moss::net::TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
    /// let b = moss::net::TcpListener::bind_reuseport(a.local_addr().unwrap()).unwrap();
    /// assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
    /// ```
    pub fn bind_reuseport<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |a| TcpListener::bind_inner(a, true))
    }

    fn bind_inner(addr: &SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
        let sock = new_socket(addr)?;
        sock.set_reuse_address(true)?;
        if reuseport {
            sock.set_reuse_port(true)?;
        }
        sock.bind(&SockAddr::from(*addr))?;
        sock.listen(libc::SOMAXCONN)?;
        Ok(TcpListener {
            inner: Evented::from_nonblocking(net::TcpListener::from(OwnedFd::from(sock))),
        })
    }

    /// The bound address (with the real port after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().local_addr()
    }

    /// Waits for a connection. Errors of `accept(2)` are returned as they
    /// are (`EMFILE` and friends included); see
    /// [`StreamServer`](crate::server::StreamServer) for a loop that backs
    /// off on them.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, addr) = match self.inner.ring_op(sys::ring::accept) {
            Some(r) => r?,
            None => self
                .inner
                .read_op(None, |l| sys::accept(l.as_raw_fd()), |_| 0)?,
        };
        let addr = addr.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "accept returned a non-IP address",
            )
        })?;
        Ok((
            TcpStream {
                inner: Evented::from_nonblocking(net::TcpStream::from(fd)),
            },
            addr,
        ))
    }

    /// An endless iterator of [`accept`](Self::accept) results.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// A new handle to the same listening socket (`dup`).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let l = TcpListener {
            inner: Evented::from_nonblocking(self.inner.get().try_clone()?),
        };
        l.set_nonblocking(self.inner.is_nonblocking())?;
        Ok(l)
    }

    /// `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get().ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get().take_error()
    }

    /// With `true`, `accept` fails with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }
}

/// The iterator of [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

std_conversions!(TcpStream, net::TcpStream);
std_conversions!(TcpListener, net::TcpListener);
