//! Cooperative sockets: the `std::net` / `std::os::unix::net` types for
//! coroutines.
//!
//! Every type has the methods of its std twin and converts to and from it
//! with `From`. A blocking call parks only the calling coroutine; on a
//! thread's root (or a plain thread that never spawned anything) it runs the
//! hub while it waits, so it behaves like the blocking std call.
//!
//! How blocking is emulated on non-blocking fds, and how a `Send` socket
//! finds its registration on whichever thread uses it, is described in
//! `fd.rs`. Host names go through [`lookup_host`]'s resolver threads, never
//! `getaddrinfo` on the hub.

mod addr;
mod fd;
mod tcp;
mod udp;
mod unix;

pub use crate::dns::lookup_host;
pub use addr::ToSocketAddrs;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
