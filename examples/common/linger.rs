//! Closing a connection after an error reply without losing the reply.
//!
//! A socket closed while unread input waits in its receive queue makes the
//! kernel send a reset instead of a FIN, and a reset can destroy the reply
//! still in flight to the client. So after a final error reply a server
//! shuts down its sending side (the client sees the reply, then EOF) and
//! reads and drops what the client still sends, bounded in bytes and time,
//! before it closes.

use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use moss::net::TcpStream;

/// Drop at most this much more input...
const LINGER_BYTES: usize = 256 * 1024;
/// ...for at most this long.
const LINGER: Duration = Duration::from_secs(1);

/// Shuts down `s`'s sending side, then drains its input for a moment.
pub fn linger_close(mut s: &TcpStream) {
    if s.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => dropped += n,
        }
    }
}
