//! Cooperative sockets: the `std::net` / `std::os::unix::net` types for
//! coroutines.
//!
//! Every type has the methods of its std twin and converts to and from it
//! with `From`. A blocking call parks only the calling coroutine; on a
//! thread's root (or a plain thread that never spawned anything) it runs the
//! hub while it waits, so it behaves like the blocking std call.
//!
//! # Semantics kept from std
//!
//! * Timeouts (`set_read_timeout`, `set_write_timeout`): an expired wait
//!   fails with `ErrorKind::WouldBlock` (raw `EAGAIN`), exactly what std
//!   reports for an expired `SO_RCVTIMEO` on Linux; `connect_timeout` fails
//!   with `ErrorKind::TimedOut`. A zero timeout is `InvalidInput`.
//! * `set_nonblocking(true)`: operations fail with `WouldBlock` instead of
//!   waiting.
//! * Writes never raise `SIGPIPE`: a reset or closed peer gives
//!   `ConnectionReset` or `BrokenPipe`.
//! * Names (`"localhost:80"`, `("example.org", 80)`) resolve through
//!   [`lookup_host`]'s resolver threads, never `getaddrinfo` on the hub.
//!
//! # TLS
//!
//! No wrapper type is needed: a TLS library that works over any
//! `Read + Write` transport, such as rustls' `StreamOwned`, runs over a
//! [`TcpStream`], and its handshake and record I/O then park only the
//! calling coroutine. Set a read timeout on the socket to bound how long a
//! peer that stalls mid-handshake can hold its coroutine. The example
//! `tls_echo` in moss's repository (`cargo run --example tls_echo`) shows a
//! TLS [`StreamServer`](crate::server::StreamServer) and client.
//!
//! # Threads
//!
//! The types are `Send + Sync` like std's. A socket registers with the hub
//! of the thread that first waits on it, and again with another thread's
//! hub when it is used there; no rule to follow. Moving sockets between
//! threads constantly costs an `epoll_ctl` per move and leaves a stale
//! entry on the old thread until its fd number is reused there.
//!
//! ```
//! use std::io::{Read, Write};
//! let l = moss::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = l.local_addr().unwrap();
//! // Accepted here, served on another thread.
//! let client = std::thread::spawn(move || {
//!     let mut c = moss::net::TcpStream::connect(addr).unwrap();
//!     c.write_all(b"ping").unwrap();
//!     let mut b = [0; 4];
//!     c.read_exact(&mut b).unwrap();
//!     b
//! });
//! let (s, _) = l.accept().unwrap();
//! std::thread::spawn(move || {
//!     let mut s = s;
//!     let mut b = [0; 4];
//!     s.read_exact(&mut b).unwrap();
//!     s.write_all(&b).unwrap();
//! })
//! .join()
//! .unwrap();
//! assert_eq!(&client.join().unwrap(), b"ping");
//! ```

mod addr;
mod convert;
pub(crate) mod fd;
pub(crate) mod sys;
mod tcp;
mod udp;
mod unix;

pub use crate::dns::lookup_host;
pub use addr::ToSocketAddrs;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
