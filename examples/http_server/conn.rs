//! One coroutine per connection: read a request head, read (or skip) its
//! body, append the response, and write all responses of a pipelined batch
//! at once — only when no further complete request is buffered.
//!
//! # Time and size limits
//!
//! * A request's head and body must arrive within `timeout` of the moment
//!   the server starts waiting for it (after the previous response was
//!   written). This is the slowloris defence, and it also closes idle
//!   keep-alive connections. A client that sent part of a head gets 408.
//! * A head longer than `max_head` bytes or with more than
//!   [`MAX_HEADERS`](super::request::MAX_HEADERS) fields: 431. A body
//!   (declared or, when chunked, as it arrives) longer than `max_body`: 413,
//!   sent before the body is read. Malformed: 400.
//! * A write that makes no progress for `timeout` (a client that stopped
//!   reading) ends the connection.
//! * After an error response the connection closes the way
//!   `common/linger.rs` describes, so the response is not lost.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use moss::net::{TcpListener, TcpStream};
use moss::server::StreamServer;

use super::request::{self, Framing, Head, Reject, Route};

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// See the module docs.
    pub timeout: Duration,
    pub max_head: usize,
    pub max_body: usize,
    /// Largest N of `/bytes/N`.
    pub max_bytes: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            timeout: Duration::from_secs(10),
            max_head: 16 * 1024,
            max_body: 1 << 20,
            max_bytes: 64 << 20,
        }
    }
}

/// The body of `GET /`.
pub const HELLO: &[u8] = b"Hello, World!";

const INITIAL: usize = 4096;
const FLUSH_AT: usize = 64 * 1024;
/// Longest chunk-size line (extensions included) and trailer section.
const MAX_CHUNK_LINE: usize = 4096;

/// `/bytes/N` bodies: byte `i` is `b'a' + i % 26`; the pattern's length is
/// a multiple of 26, so it repeats seamlessly.
static PATTERN: [u8; 26 * 2520] = {
    let mut a = [0u8; 26 * 2520];
    let mut i = 0;
    while i < a.len() {
        a[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    a
};

/// A server on `listener`; serve with `serve_forever`.
pub fn server(listener: TcpListener, cfg: Config) -> io::Result<StreamServer> {
    StreamServer::from_listener(listener, move |s: TcpStream, _: SocketAddr| {
        Conn::new(s, cfg).serve()
    })
}

/// Why a connection ends.
enum End {
    /// Quietly: the client left, timed out while idle, or asked to close.
    Close,
    /// After an error response (already in `out`).
    Reject,
}

struct Conn {
    s: TcpStream,
    cfg: Config,
    /// Received bytes; `buf[start..end]` is not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// The current request must have arrived by then (set on first need).
    deadline: Option<Instant>,
}

impl Conn {
    fn new(s: TcpStream, cfg: Config) -> Conn {
        let _ = s.set_nodelay(true);
        // A client that stops reading its response (a slow-read attack, or
        // one that vanished without a reset) is dropped once a write makes
        // no progress for `timeout`. The timer exists only while a write
        // waits.
        let _ = s.set_write_timeout(Some(cfg.timeout));
        Conn {
            s,
            cfg,
            buf: vec![0; INITIAL],
            start: 0,
            end: 0,
            out: Vec::new(),
            deadline: None,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn serve(mut self) {
        let end = loop {
            match self.request() {
                Ok(true) => {}
                Ok(false) => break End::Close,
                Err(e) => break e,
            }
        };
        match end {
            End::Close => {
                // Unread requests after a `Connection: close` one: close
                // without resetting the connection under the response.
                if self.flush().is_ok() {
                    if self.pending().is_empty() {
                        let _ = self.s.shutdown(Shutdown::Write);
                    } else {
                        super::linger::linger_close(&self.s);
                    }
                }
            }
            End::Reject => {
                if self.flush().is_ok() {
                    super::linger::linger_close(&self.s);
                }
            }
        }
    }

    /// Serves one request. Ok(false): close after writing what is queued.
    fn request(&mut self) -> Result<bool, End> {
        self.deadline = None;
        let head = self.head()?;
        self.start += head.len;
        let body = self.body(&head)?;
        self.respond(&head, &body);
        if !head.keep_alive {
            return Ok(false);
        }
        // Pipelining: answer everything already buffered in one write.
        if self.pending().is_empty() || self.out.len() >= FLUSH_AT {
            self.flush().map_err(|_| End::Close)?;
        }
        Ok(true)
    }

    /// Reads until a whole head is buffered.
    fn head(&mut self) -> Result<Head, End> {
        loop {
            match request::parse(self.pending()) {
                Ok(Some(h)) if h.len <= self.cfg.max_head => return Ok(h),
                Ok(Some(_)) => return Err(self.reject(431, "request head too large")),
                Ok(None) if self.pending().len() >= self.cfg.max_head => {
                    return Err(self.reject(431, "request head too large"));
                }
                Ok(None) => {}
                Err(Reject { status, why }) => return Err(self.reject(status, why)),
            }
            // Answer what was pipelined before waiting for more.
            self.flush().map_err(|_| End::Close)?;
            // Idle (nothing of a request yet): a timeout closes quietly.
            let idle = self.pending().is_empty();
            match self.fill(self.cfg.max_head) {
                Err(e) if idle && is_timeout(&e) => return Err(End::Close),
                r => self.more(r)?,
            }
        }
    }

    /// Reads the body: kept for `/echo`, counted and dropped otherwise.
    fn body(&mut self, head: &Head) -> Result<Vec<u8>, End> {
        let keep = head.route == Route::Echo;
        let mut body = Vec::new();
        match head.framing {
            Framing::Length(0) => {}
            Framing::Length(n) if n > self.cfg.max_body as u64 => {
                return Err(self.reject(413, "request body too large"));
            }
            Framing::Length(n) => {
                let n = n as usize;
                self.continue_if_expected(head, n)?;
                let mut left = n;
                while left > 0 {
                    if self.pending().is_empty() {
                        let r = self.fill(self.cfg.max_head);
                        self.more(r)?;
                    }
                    let take = left.min(self.pending().len());
                    if keep {
                        body.extend_from_slice(&self.pending()[..take]);
                    }
                    self.start += take;
                    left -= take;
                }
            }
            Framing::Chunked => {
                self.continue_if_expected(head, usize::MAX)?;
                self.chunked(keep, &mut body)?;
            }
        }
        Ok(body)
    }

    /// Sends `100 Continue` if the client waits for it and `n` body bytes
    /// are not all here yet.
    fn continue_if_expected(&mut self, head: &Head, n: usize) -> Result<(), End> {
        if head.expect_continue && self.pending().len() < n {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().map_err(|_| End::Close)?;
        }
        Ok(())
    }

    /// Decodes a chunked body (RFC 9112 §7.1), extensions and trailers
    /// ignored.
    fn chunked(&mut self, keep: bool, body: &mut Vec<u8>) -> Result<(), End> {
        let mut total = 0usize;
        loop {
            let size = loop {
                let p = self.pending();
                match httparse::parse_chunk_size(p) {
                    // httparse reads an empty size line as 0: not valid.
                    Ok(httparse::Status::Complete((n, size))) if p[0].is_ascii_hexdigit() => {
                        self.start += n;
                        break size;
                    }
                    Ok(httparse::Status::Partial) if p.len() < MAX_CHUNK_LINE => {
                        let r = self.fill(self.cfg.max_head);
                        self.more(r)?;
                    }
                    _ => return Err(self.reject(400, "bad chunk size line")),
                }
            };
            if size == 0 {
                return self.trailers();
            }
            if size > (self.cfg.max_body - total) as u64 {
                return Err(self.reject(413, "request body too large"));
            }
            total += size as usize;
            let mut left = size as usize;
            while left > 0 {
                if self.pending().is_empty() {
                    let r = self.fill(self.cfg.max_head);
                    self.more(r)?;
                }
                let take = left.min(self.pending().len());
                if keep {
                    body.extend_from_slice(&self.pending()[..take]);
                }
                self.start += take;
                left -= take;
            }
            loop {
                let p = self.pending();
                if p.len() >= 2 && &p[..2] == b"\r\n" {
                    self.start += 2;
                    break;
                }
                if p.first().is_some_and(|&b| b != b'\r') || p.len() >= 2 {
                    return Err(self.reject(400, "chunk data not followed by CRLF"));
                }
                let r = self.fill(self.cfg.max_head);
                self.more(r)?;
            }
        }
    }

    /// Skips the trailer section up to its blank line.
    fn trailers(&mut self) -> Result<(), End> {
        let mut seen = 0;
        loop {
            match self.pending().windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(i) => {
                    self.start += i + 2;
                    seen += i + 2;
                }
                None => {
                    if self.pending().len() + seen > MAX_CHUNK_LINE {
                        return Err(self.reject(431, "trailer section too large"));
                    }
                    let r = self.fill(self.cfg.max_head);
                    self.more(r)?;
                }
            }
            if seen > MAX_CHUNK_LINE {
                return Err(self.reject(431, "trailer section too large"));
            }
        }
    }

    /// Appends the response to `head` to `out`.
    fn respond(&mut self, head: &Head, body: &[u8]) {
        let close = !head.keep_alive;
        let keep10 = head.http10 && head.keep_alive;
        let octets = "application/octet-stream";
        let (status, ty, body, allow): (u16, &str, &[u8], _) = match head.route {
            Route::Hello => (200, "text/plain", HELLO, None),
            Route::Echo => (200, octets, body, None),
            Route::Bytes(n) if n > self.cfg.max_bytes => (
                400,
                "text/plain",
                &b"N is larger than the server's limit\n"[..],
                None,
            ),
            Route::Bytes(n) => {
                self.status_line(200, octets, n, close, keep10, None);
                if !head.head_only {
                    self.pattern(n as usize);
                }
                return;
            }
            Route::MethodNotAllowed(allow) => {
                (405, "text/plain", &b"method not allowed\n"[..], Some(allow))
            }
            Route::NotFound => (404, "text/plain", &b"not found\n"[..], None),
        };
        self.status_line(status, ty, body.len() as u64, close, keep10, allow);
        // A response to HEAD has the headers of GET's and no body.
        if !head.head_only {
            self.out.extend_from_slice(body);
        }
    }

    /// Appends `n` bytes of [`PATTERN`], writing big bodies out as it goes.
    fn pattern(&mut self, mut n: usize) {
        while n > 0 {
            let take = n.min(PATTERN.len());
            self.out.extend_from_slice(&PATTERN[..take]);
            n -= take;
            if self.out.len() >= FLUSH_AT && self.flush().is_err() {
                // The client left: the next read or write ends the
                // connection; stop producing.
                return;
            }
        }
    }

    fn status_line(
        &mut self,
        status: u16,
        content_type: &str,
        len: u64,
        close: bool,
        keep10: bool,
        allow: Option<&str>,
    ) {
        let o = &mut self.out;
        o.extend_from_slice(b"HTTP/1.1 ");
        push_u64(o, status as u64);
        o.push(b' ');
        o.extend_from_slice(reason(status).as_bytes());
        o.extend_from_slice(b"\r\ncontent-type: ");
        o.extend_from_slice(content_type.as_bytes());
        o.extend_from_slice(b"\r\ncontent-length: ");
        push_u64(o, len);
        o.extend_from_slice(b"\r\ndate: ");
        push_date(o);
        if let Some(allow) = allow {
            o.extend_from_slice(b"\r\nallow: ");
            o.extend_from_slice(allow.as_bytes());
        }
        if close {
            o.extend_from_slice(b"\r\nconnection: close");
        } else if keep10 {
            o.extend_from_slice(b"\r\nconnection: keep-alive");
        }
        o.extend_from_slice(b"\r\n\r\n");
    }

    /// Queues the error response `status` (its reason as the body); the
    /// connection then closes.
    fn reject(&mut self, status: u16, why: &str) -> End {
        let body = format!("{why}\n");
        self.status_line(status, "text/plain", body.len() as u64, true, false, None);
        self.out.extend_from_slice(body.as_bytes());
        End::Reject
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.s.write_all(&self.out);
        self.out.clear();
        if self.out.capacity() > 4 * FLUSH_AT {
            self.out = Vec::new();
        }
        r
    }

    /// What a failed read in the middle of a request means: at the
    /// deadline, 408 (the client sent part of a request); otherwise the
    /// client left or the connection broke.
    fn more(&mut self, r: io::Result<usize>) -> Result<(), End> {
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(self.reject(408, "request not received in time")),
            Err(_) => Err(End::Close),
        }
    }

    /// Reads more input before the request's deadline, growing the buffer
    /// up to `limit` (compacting first). Fails with `WouldBlock` at the
    /// deadline and `UnexpectedEof` when the client closed.
    fn fill(&mut self, limit: usize) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(limit.max(INITIAL));
            if grown <= self.buf.len() {
                // The caller's size check fires on what is buffered.
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer limit"));
            }
            self.buf.resize(grown, 0);
        }
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.cfg.timeout);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.s.set_read_timeout(Some(left))?;
        let end = self.end;
        match self.s.read(&mut self.buf[end..])? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(n)
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "",
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut d = [0u8; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&d[i..]);
}

thread_local! {
    /// The Date header's value, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = httpdate::fmt_http_date(now);
            d.1.copy_from_slice(&s.as_bytes()[..29]);
            d.0 = secs;
        }
        out.extend_from_slice(&d.1);
    });
}
