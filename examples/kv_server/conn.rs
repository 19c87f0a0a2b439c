//! One coroutine per connection, as Redis's event loop would serve it:
//! read what has arrived, run every complete command in it, and send all
//! their replies with one write. A pipeline of 16 commands that arrives in
//! one segment costs one read and one write.
//!
//! Memory per connection is bounded: the read buffer starts at 4 KiB and
//! grows (doubling, only as bytes arrive) up to `max_query`; the reply
//! buffer is flushed whenever it passes 64 KiB; both shrink back once idle.
//! A command that cannot fit, or any protocol error, gets Redis's error and
//! the connection closes (without losing that reply: `common/linger.rs`).
//! A client that vanishes mid-command or mid-reply
//! just ends its coroutine.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moss::net::{TcpListener, TcpStream};
use moss::server::StreamServer;

use super::commands::{self, Next};
use super::resp::{self, Parsed, Parser};
use super::store::Store;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Longest bulk string in a request (Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// Most bytes one command may occupy, all its arguments together
    /// (Redis's `client-query-buffer-limit`).
    pub max_query: usize,
    /// Close a connection idle this long (Redis's `timeout`; None: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    /// An eighth of Redis's defaults (512 MB and 1 GB): a client can make
    /// the server buffer at most 128 MiB, and only by sending it.
    fn default() -> Config {
        Config {
            max_bulk: 64 << 20,
            max_query: 128 << 20,
            idle_timeout: None,
        }
    }
}

const INITIAL: usize = 4096;
const FLUSH_AT: usize = 64 * 1024;
/// Buffers larger than this are given back once empty.
const SHRINK_ABOVE: usize = 64 * 1024;
/// How often each hub reclaims expired keys nobody touched (Redis's hz 10).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// A server for `store` on `listener`; start it with [`run`].
pub fn server(listener: TcpListener, store: Arc<Store>, cfg: Config) -> io::Result<StreamServer> {
    StreamServer::from_listener(listener, move |s: TcpStream, _: SocketAddr| {
        handle(s, &store, &cfg)
    })
}

/// Serves until the server is stopped, reclaiming expired keys of shards
/// `hub, hub + hubs, ...` meanwhile (each hub thread sweeps its share).
pub fn run(server: &StreamServer, store: &Arc<Store>, hub: usize, hubs: usize) -> io::Result<()> {
    let st = store.clone();
    let sweeper = moss::Builder::new()
        .name("kv_server sweeper")
        .spawn(move || {
            loop {
                moss::sleep(SWEEP_EVERY);
                st.sweep(hub, hubs);
            }
        })?;
    struct Kill(moss::JoinHandle<()>);
    impl Drop for Kill {
        fn drop(&mut self) {
            self.0.kill();
        }
    }
    let _sweeper = Kill(sweeper);
    server.serve_forever()
}

/// The read buffer: `data[start..end]` is received and not yet executed.
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Makes room to read: compacts when full, else doubles, never past
    /// `limit`. False if the pending command would need more.
    fn make_room(&mut self, limit: usize) -> bool {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > SHRINK_ABOVE {
                self.data = vec![0; INITIAL];
            }
        }
        if self.end < self.data.len() {
            return true;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        let grown = (self.data.len() * 2).min(limit);
        if grown <= self.data.len() {
            return false;
        }
        self.data.resize(grown, 0);
        true
    }
}

/// Serves one connection until the client leaves, sends QUIT, breaks the
/// protocol or the connection fails.
pub fn handle(mut s: TcpStream, store: &Store, cfg: &Config) {
    let _ = s.set_nodelay(true);
    if cfg.idle_timeout.is_some() {
        let _ = s.set_read_timeout(cfg.idle_timeout);
    }
    let mut buf = ReadBuf {
        data: vec![0; INITIAL],
        start: 0,
        end: 0,
    };
    let mut parser = Parser::new(cfg.max_bulk);
    let mut out = Vec::new();
    loop {
        // QUIT, or `broken`: a protocol error (unread input may follow).
        let (mut close, mut broken) = (false, false);
        loop {
            let pending = buf.pending();
            match parser.parse(pending) {
                Ok(Parsed::Command(n)) => {
                    let next = commands::execute(store, parser.args(pending), &mut out);
                    buf.start += n;
                    if next == Next::Close {
                        close = true;
                        break;
                    }
                    if out.len() >= FLUSH_AT {
                        if s.write_all(&out).is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
                Ok(Parsed::Empty(n)) => buf.start += n,
                Ok(Parsed::Incomplete(_)) => break,
                Err(e) => {
                    resp::error(&mut out, &format!("ERR {e}"));
                    (close, broken) = (true, true);
                    break;
                }
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
            if out.capacity() > SHRINK_ABOVE {
                out = Vec::new();
            }
        }
        if close {
            // After a protocol error, or a QUIT with more commands behind
            // it, input is left unread: close without resetting the
            // connection under the last replies.
            if broken || !buf.pending().is_empty() {
                super::linger::linger_close(&s);
            }
            return;
        }
        if !buf.make_room(cfg.max_query) {
            resp::error(
                &mut out,
                "ERR Protocol error: the command is longer than the query buffer limit",
            );
            if s.write_all(&out).is_ok() {
                super::linger::linger_close(&s);
            }
            return;
        }
        let end = buf.end;
        match s.read(&mut buf.data[end..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.end += n,
        }
    }
}
