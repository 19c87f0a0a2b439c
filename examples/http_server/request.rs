//! A request head, parsed by `httparse` and reduced to what the server acts
//! on: the route, how the body is framed, and whether the connection stays
//! open. Everything a request could get wrong is decided here, as a status.
//!
//! Framing follows RFC 9112 §6: `Transfer-Encoding` (only `chunked`, and
//! only last) or one `Content-Length` (repeats must agree); both at once is
//! rejected rather than guessed at, as a request smuggled past a proxy
//! would rely on exactly that.

use std::mem::MaybeUninit;

use httparse::Status;

/// Most header fields in a request (more: 431).
pub const MAX_HEADERS: usize = 64;

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: a small fixed body.
    Hello,
    /// `GET /bytes/N`: N bytes.
    Bytes(u64),
    /// `POST /echo`: the request body back.
    Echo,
    /// A known path with another method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
    NotFound,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// Bytes of the head, the blank line included.
    pub len: usize,
    pub route: Route,
    /// HEAD: the response carries headers only.
    pub head_only: bool,
    pub framing: Framing,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 (a kept-alive connection says so in the response).
    pub http10: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// A request the server refuses, with the status it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub why: &'static str,
}

fn reject(status: u16, why: &'static str) -> Reject {
    Reject { status, why }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is
/// incomplete (the caller enforces the size limit).
pub fn parse(buf: &[u8]) -> Result<Option<Head>, Reject> {
    // Uninitialised: httparse writes the ones it fills (2 KiB of zeroing
    // per request saved).
    let mut headers = [MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(431, "too many header fields"));
        }
        Err(_) => return Err(reject(400, "malformed request head")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(reject(400, "malformed request line"));
    };
    let http10 = version == 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut hosts = 0;
    let (mut close, mut keep) = (false, false);
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = parse_length(h.value).ok_or(reject(400, "bad Content-Length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(reject(400, "conflicting Content-Length"));
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in tokens(h.value) {
                if chunked {
                    // Anything after chunked: the body's end is unknowable.
                    return Err(reject(400, "chunked is not the final coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    other_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(reject(417, "only 100-continue is expected"));
            }
            expect_continue = !http10;
        }
    }
    if !http10 && hosts != 1 {
        return Err(reject(400, "an HTTP/1.1 request needs exactly one Host"));
    }
    if other_coding && !chunked {
        return Err(reject(400, "a transfer coding without chunked"));
    }
    if other_coding {
        return Err(reject(501, "transfer codings other than chunked"));
    }
    if chunked && length.is_some() {
        return Err(reject(400, "both Transfer-Encoding and Content-Length"));
    }
    if chunked && http10 {
        return Err(reject(400, "chunked in an HTTP/1.0 request"));
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    Ok(Some(Head {
        len,
        route: route(method, path_of(target)),
        head_only: method == "HEAD",
        framing,
        keep_alive: if http10 { keep && !close } else { !close },
        http10,
        expect_continue,
    }))
}

/// The path of an origin-form (`/a?b`) or absolute-form
/// (`http://host/a?b`) target, without its query.
fn path_of(target: &str) -> &str {
    let t = if target.starts_with('/') {
        target
    } else {
        match target.find("://") {
            Some(i) => {
                let rest = &target[i + 3..];
                rest.find('/').map_or("/", |j| &rest[j..])
            }
            None => target,
        }
    };
    t.split(['?', '#']).next().unwrap_or(t)
}

/// The route of `method` on `path` (a path without its query).
pub fn route(method: &str, path: &str) -> Route {
    let get = method == "GET" || method == "HEAD";
    match path {
        "/" if get => Route::Hello,
        "/" => Route::MethodNotAllowed("GET, HEAD"),
        "/echo" if method == "POST" => Route::Echo,
        "/echo" => Route::MethodNotAllowed("POST"),
        _ => match path.strip_prefix("/bytes/") {
            Some(_) if !get => Route::MethodNotAllowed("GET, HEAD"),
            Some(n) => match parse_length(n.as_bytes()) {
                Some(n) => Route::Bytes(n),
                None => Route::NotFound,
            },
            None => Route::NotFound,
        },
    }
}

/// A decimal length: digits only (no sign, no spaces), at most 18 of them.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + (d - b'0') as u64))
}

/// The comma-separated, trimmed, non-empty tokens of a header value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<Head>, Reject> {
        parse(s.as_bytes())
    }

    #[test]
    fn routes_and_framing() {
        let h = head("GET /bytes/12?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.route, h.framing, h.keep_alive),
            (Route::Bytes(12), Framing::Length(0), true)
        );
        let h =
            head("POST http://a/echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((h.route, h.framing), (Route::Echo, Framing::Chunked));
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive && h.http10);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: a\r\n")
                .unwrap()
                .map(|h| h.len),
            None
        );
        let h = head("DELETE /echo HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.route, Route::MethodNotAllowed("POST"));
        let h = head("GET /bytes/-1 HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.route, Route::NotFound);
    }

    #[test]
    fn rejects() {
        let st = |s: &str| head(s).unwrap_err().status;
        assert_eq!(st("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(st("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(st("GET\0 / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(
            st("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            st("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            st(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            st("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            st("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            st("POST / HTTP/1.1\r\nHost: a\r\nExpect: later\r\n\r\n"),
            417
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x{i}: y\r\n"))
            .collect();
        assert_eq!(st(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), 431);
        assert_eq!(st("\u{1}\u{2}garbage\r\n\r\n"), 400);
    }
}
