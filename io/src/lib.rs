//! # moss-io
//!
//! The I/O layer of moss, built on the hub's reactor
//! ([`moss_runtime::reactor`]): every fd is registered once, edge-triggered,
//! and an operation tries its syscall first, waiting for readiness only on
//! `EAGAIN`.
//!
//! * [`net`] — `TcpStream`, `TcpListener`, `UdpSocket`, `UnixStream`,
//!   `UnixListener`, `UnixDatagram` and `lookup_host`.
//! * [`server`] — `StreamServer`: a coroutine per connection.
//! * [`monkey`] — libc symbol interposition for unmodified blocking code.
//! * [`subprocess`] — `std::process` for coroutines: waits and pipes that
//!   yield.
//! * [`signal`] — waiting for Unix signals and handler coroutines.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod dns;
pub mod monkey;
pub mod net;
mod registry;
pub mod server;
pub mod signal;
pub mod subprocess;
