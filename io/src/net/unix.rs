//! Unix domain sockets: `UnixStream`, `UnixListener`, `UnixDatagram`, as
//! in `std::os::unix::net`, blocking only the calling coroutine.
//!
//! Same engine as TCP (`fd.rs`); streams use the drained hint. A connect to
//! a listener whose backlog is full fails with `EAGAIN` on a non-blocking
//! Unix socket (there is no `EINPROGRESS` to wait on), so it is retried
//! after a short sleep, doubling up to 50 ms.

use std::fmt;
use std::io::{self, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::convert::std_conversions;
use super::fd::Evented;
use super::sys::{self, Recv};

/// A Unix stream socket; [`std::os::unix::net::UnixStream`] for coroutines.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut a, mut b) = moss::net::UnixStream::pair().unwrap();
/// let h = moss::spawn(move || { let mut s = String::new(); b.read_to_string(&mut s).unwrap(); s });
/// a.write_all(b"over the socket").unwrap();
/// drop(a);
/// assert_eq!(h.join().unwrap(), "over the socket");
/// ```
pub struct UnixStream {
    inner: Evented<net::UnixStream>,
}

/// A Unix listening socket; [`std::os::unix::net::UnixListener`] for
/// coroutines.
pub struct UnixListener {
    inner: Evented<net::UnixListener>,
}

/// A Unix datagram socket; [`std::os::unix::net::UnixDatagram`] for
/// coroutines.
pub struct UnixDatagram {
    inner: Evented<net::UnixDatagram>,
}

fn wrap<S: AsRawFd>(s: S) -> io::Result<Evented<S>> {
    Evented::new(s)
}

impl UnixStream {
    /// Connects to the socket at `path`.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let addr = SockAddr::unix(path)?;
        let mut pause = Duration::from_millis(1);
        loop {
            let s = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
            match sys::connect(s.as_raw_fd(), &addr) {
                Ok(()) => {
                    let s = net::UnixStream::from(OwnedFd::from(s));
                    return Ok(UnixStream {
                        inner: Evented::from_nonblocking(s),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    moss_runtime::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = net::UnixStream::pair()?;
        Ok((
            UnixStream { inner: wrap(a)? },
            UnixStream { inner: wrap(b)? },
        ))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().peer_addr()
    }

    /// Shuts down one or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get().shutdown(how)
    }

    /// A new handle to the same socket (`dup`), with the same timeouts.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let s = UnixStream {
            inner: Evented::from_nonblocking(self.inner.get().try_clone()?),
        };
        s.set_read_timeout(self.read_timeout()?)?;
        s.set_write_timeout(self.write_timeout()?)?;
        s.set_nonblocking(self.inner.is_nonblocking())?;
        Ok(s)
    }

    /// Read timeout; expiry is `ErrorKind::WouldBlock`, as std on Linux.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(dur)
    }

    /// Write timeout; expiry is `ErrorKind::WouldBlock`, as std on Linux.
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

    /// With `true`, operations that would wait fail with `WouldBlock`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get().take_error()
    }

    fn read_inner(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_op(|fd, d| sys::ring::recv(fd, buf, Recv::Take, d))
        {
            return r;
        }
        let len = buf.len();
        self.inner.read_op(
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
}

impl Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_vectored_inner(bufs)
    }
}

impl Read for &UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_vectored_inner(bufs)
    }
}

// Writes use `send(MSG_DONTWAIT | MSG_NOSIGNAL)` (std's Unix streams use
// `write`, which raises SIGPIPE on a closed peer in programs that did not
// ignore it); vectored writes fall back to the first non-empty buffer.
impl Write for UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self).write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &UnixStream {
    #[inline(always)]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_write_op(|fd, d| sys::ring::send(fd, buf, d))
        {
            return r;
        }
        self.inner.write_op(|s| sys::send(s.as_raw_fd(), buf))
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        super::fd::write_all(buf, |b| self.write(b))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl UnixListener {
    /// Binds and listens at `path` (which must not exist).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        Ok(UnixListener {
            inner: wrap(net::UnixListener::bind(path)?)?,
        })
    }

    /// Waits for a connection.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, a) = match self.inner.ring_op(sys::ring::unix_accept) {
            Some(r) => r?,
            None => self.inner.read_op(None, sys::unix_accept, |_| 0)?,
        };
        let inner = Evented::from_nonblocking(s);
        Ok((UnixStream { inner }, a))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<UnixStream>> + '_ {
        std::iter::repeat_with(move || self.accept().map(|(s, _)| s))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().local_addr()
    }

    /// A new handle to the same socket (`dup`).
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let l = UnixListener {
            inner: Evented::from_nonblocking(self.inner.get().try_clone()?),
        };
        l.set_nonblocking(self.inner.is_nonblocking())?;
        Ok(l)
    }

    /// With `true`, `accept` fails with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get().take_error()
    }
}

impl UnixDatagram {
    /// Binds to `path`.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            inner: wrap(net::UnixDatagram::bind(path)?)?,
        })
    }

    /// A socket bound to no address.
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            inner: wrap(net::UnixDatagram::unbound()?)?,
        })
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = net::UnixDatagram::pair()?;
        Ok((
            UnixDatagram { inner: wrap(a)? },
            UnixDatagram { inner: wrap(b)? },
        ))
    }

    /// Sets the default peer.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        sys::connect(self.as_raw_fd(), &SockAddr::unix(path)?)
    }

    /// Receives one datagram and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner
            .read_op(None, |s| sys::unix_recv_from(s, buf), |_| 0)
    }

    /// Receives one datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_op(|fd, d| sys::ring::recv(fd, buf, Recv::Take, d))
        {
            return r;
        }
        self.inner
            .read_op(None, |s| sys::recv(s.as_raw_fd(), buf, Recv::Take), |_| 0)
    }

    /// Sends one datagram to `path`.
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let a = SockAddr::unix(path)?;
        if let Some(r) = self
            .inner
            .ring_write_op(|fd, d| sys::ring::send_to(fd, buf, &a, d))
        {
            return r;
        }
        self.inner
            .write_op(|s| sys::send_to(s.as_raw_fd(), buf, &a))
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_write_op(|fd, d| sys::ring::send(fd, buf, d))
        {
            return r;
        }
        self.inner.write_op(|s| sys::send(s.as_raw_fd(), buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().peer_addr()
    }

    /// Read timeout; expiry is `ErrorKind::WouldBlock`, as std on Linux.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(dur)
    }

    /// Write timeout; expiry is `ErrorKind::WouldBlock`, as std on Linux.
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

    /// With `true`, operations that would wait fail with `WouldBlock`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Shuts down one or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get().shutdown(how)
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get().take_error()
    }
}

std_conversions!(UnixStream, net::UnixStream);
std_conversions!(UnixListener, net::UnixListener);
std_conversions!(UnixDatagram, net::UnixDatagram);
