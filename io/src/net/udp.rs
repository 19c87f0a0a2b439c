//! `UdpSocket`: std's UDP socket, blocking only the calling coroutine.
//!
//! Datagram reads get no drained hint (every `recv` returns one datagram);
//! otherwise the same engine as TCP (`fd.rs`).

use std::fmt;
use std::io;
use std::net::{self, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::addr::{ToSocketAddrs, each_addr};
use super::convert::std_conversions;
use super::fd::Evented;
use super::sys::{self, Recv};

/// A UDP socket; [`std::net::UdpSocket`] for coroutines.
///
/// ```
/// let a = moss::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let b = moss::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// b.send_to(b"ping", a.local_addr().unwrap()).unwrap();
/// let mut buf = [0; 8];
/// let (n, from) = a.recv_from(&mut buf).unwrap();
/// assert_eq!((&buf[..n], from), (&b"ping"[..], b.local_addr().unwrap()));
/// ```
pub struct UdpSocket {
    inner: Evented<net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to the first address of `addr` that works.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(&addr, |a| {
            let ty = Type::DGRAM.nonblocking().cloexec();
            let s = Socket::new(Domain::for_address(*a), ty, None)?;
            s.bind(&SockAddr::from(*a))?;
            Ok(UdpSocket {
                inner: Evented::from_nonblocking(net::UdpSocket::from(OwnedFd::from(s))),
            })
        })
    }

    /// Receives one datagram and its sender. A datagram longer than `buf`
    /// is truncated.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from_inner(buf, Recv::Take)
    }

    /// Like [`recv_from`](Self::recv_from) without consuming the datagram.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from_inner(buf, Recv::Peek)
    }

    fn recv_from_inner(&self, buf: &mut [u8], how: Recv) -> io::Result<(usize, SocketAddr)> {
        let (n, a) = match self
            .inner
            .ring_op(|fd, d| sys::ring::recv_from(fd, buf, how, d))
        {
            Some(r) => r?,
            None => self
                .inner
                .read_op(None, |s| sys::recv_from(s.as_raw_fd(), buf, how), |_| 0)?,
        };
        let a = a.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
        })?;
        Ok((n, a))
    }

    /// Sends one datagram to `addr` (resolved off the hub).
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let a = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        let a = SockAddr::from(a);
        self.inner
            .ring_write_op(|fd, d| sys::ring::send_to(fd, buf, &a, d))
            .unwrap_or_else(|| {
                self.inner
                    .write_op(|s| sys::send_to(s.as_raw_fd(), buf, &a))
            })
    }

    /// Sets the default peer for `send`/`recv`, and filters incoming
    /// datagrams to it.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(&addr, |a| self.inner.get().connect(a))
    }

    /// Sends to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_write_op(|fd, d| sys::ring::send(fd, buf, d))
        {
            return r;
        }
        self.inner.write_op(|s| sys::send(s.as_raw_fd(), buf))
    }

    /// Receives from the connected peer.
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

    /// Like [`recv`](Self::recv) without consuming the datagram.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = self
            .inner
            .ring_op(|fd, d| sys::ring::recv(fd, buf, Recv::Peek, d))
        {
            return r;
        }
        self.inner
            .read_op(None, |s| sys::recv(s.as_raw_fd(), buf, Recv::Peek), |_| 0)
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().peer_addr()
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get().local_addr()
    }

    /// A new handle to the same socket (`dup`), with the same timeouts.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let s = UdpSocket {
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

    /// `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.get().set_broadcast(on)
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.get().broadcast()
    }

    /// `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get().ttl()
    }

    /// `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.inner.get().set_multicast_loop_v4(on)
    }

    /// `IP_MULTICAST_TTL`.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.inner.get().set_multicast_ttl_v4(ttl)
    }

    /// `IP_ADD_MEMBERSHIP`.
    pub fn join_multicast_v4(&self, group: &Ipv4Addr, iface: &Ipv4Addr) -> io::Result<()> {
        self.inner.get().join_multicast_v4(group, iface)
    }

    /// `IPV6_ADD_MEMBERSHIP`.
    pub fn join_multicast_v6(&self, group: &Ipv6Addr, iface: u32) -> io::Result<()> {
        self.inner.get().join_multicast_v6(group, iface)
    }

    /// `IP_DROP_MEMBERSHIP`.
    pub fn leave_multicast_v4(&self, group: &Ipv4Addr, iface: &Ipv4Addr) -> io::Result<()> {
        self.inner.get().leave_multicast_v4(group, iface)
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.get().take_error()
    }
}

std_conversions!(UdpSocket, net::UdpSocket);
