//! examples/http_server against an unmodified HTTP client (ureq, under
//! `monkey::patch_all`, from many coroutines of one thread) and raw sockets
//! for everything a well-behaved client never sends: malformed heads,
//! oversized bodies, slowloris, clients that vanish.
//!
//! The example's modules are compiled in (their unit tests run here too);
//! each test serves them on a thread of its own (`util::serve`).

mod util;

#[allow(dead_code)]
#[path = "../examples/http_server"]
mod http {
    pub mod conn;
    #[path = "../common/linger.rs"]
    pub mod linger;
    pub mod request;
}

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use http::conn::Config;
use util::serve::{ServerThread, server_thread};

fn start_with(cfg: Config) -> ServerThread {
    server_thread(
        move || {
            let l = moss::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            http::conn::server(l, cfg).expect("server")
        },
        |s| s.serve_forever(),
    )
}

fn start() -> ServerThread {
    start_with(Config {
        timeout: Duration::from_secs(60),
        ..Config::default()
    })
}

fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Byte `i` of a `/bytes/N` body.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (`content-length` framed; none for HEAD when
/// `head_only`) from `s`, keeping bytes past it in `buf`. `None` at EOF
/// before any byte of it.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Option<Response> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = r.parse(buf).expect("a valid response head") {
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let len = if head_only || status == 100 { 0 } else { len };
            while buf.len() < n + len {
                let k = s.read(&mut chunk).expect("read a body");
                assert!(k > 0, "EOF inside a body");
                buf.extend_from_slice(&chunk[..k]);
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return Some(Response {
                status,
                headers,
                body,
            });
        }
        let k = s.read(&mut chunk).expect("read a response");
        if k == 0 {
            assert!(buf.is_empty(), "EOF inside a response head: {buf:?}");
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// Sends `req` on a fresh connection and returns the one response and
/// whether the server then closed the connection. The test servers'
/// deadline is a minute, so a close seen within the 20 s read timeout is
/// the server's decision; an open connection must still answer a request.
fn one(addr: SocketAddr, req: &[u8]) -> (Response, bool) {
    let mut s = raw(addr);
    s.write_all(req).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false)
        .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(req)));
    if r.header("connection") == Some("close") {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the server closes");
        assert!(
            buf.is_empty() && rest.is_empty(),
            "bytes after a final response"
        );
        return (r, true);
    }
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let again = read_response(&mut s, &mut buf, false).map(|r| r.status);
    assert_eq!(
        again,
        Some(200),
        "a kept-alive connection serves the next request"
    );
    (r, false)
}

#[test]
fn ureq_from_fifty_coroutines() {
    moss::monkey::patch_all();
    let srv = start();
    let addr = srv.addr;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let release = std::sync::Arc::new(moss::sync::Event::new());
    let rel = release.clone();
    let client_thread = std::thread::spawn(move || {
        moss::run(move || {
            let hs: Vec<_> = (0..50)
                .map(|c| {
                    let (done_tx, rel) = (done_tx.clone(), rel.clone());
                    moss::spawn(move || {
                        let agent = ureq::AgentBuilder::new()
                            .timeout(Duration::from_secs(30))
                            .build();
                        let base = format!("http://{addr}");
                        for round in 0..10 {
                            let r = agent.get(&format!("{base}/")).call().unwrap();
                            assert_eq!(r.into_string().unwrap(), "Hello, World!");
                            let n = (c * 977 + round * 4099) % 70_000;
                            let r = agent.get(&format!("{base}/bytes/{n}")).call().unwrap();
                            let mut body = Vec::new();
                            r.into_reader().read_to_end(&mut body).unwrap();
                            assert!(body == pattern(n), "/bytes/{n}");
                            let sent: Vec<u8> = (0..n).map(|i| (i * c + round) as u8).collect();
                            let r = agent
                                .post(&format!("{base}/echo"))
                                .send_bytes(&sent)
                                .unwrap();
                            let mut body = Vec::new();
                            r.into_reader().read_to_end(&mut body).unwrap();
                            assert!(body == sent, "echo of {n} bytes");
                            // A reader of unknown length goes out chunked.
                            let r = agent
                                .post(&format!("{base}/echo"))
                                .send(std::io::Cursor::new(sent.clone()))
                                .unwrap();
                            let mut body = Vec::new();
                            r.into_reader().read_to_end(&mut body).unwrap();
                            assert!(body == sent, "chunked echo of {n} bytes");
                        }
                        match agent.get(&format!("{base}/nowhere")).call() {
                            Err(ureq::Error::Status(404, _)) => {}
                            other => panic!("404 expected: {other:?}"),
                        }
                        match agent.put(&format!("{base}/echo")).call() {
                            Err(ureq::Error::Status(405, r)) => {
                                assert_eq!(r.header("allow"), Some("POST"))
                            }
                            other => panic!("405 expected: {other:?}"),
                        }
                        // Keep the agent's connection open until the test
                        // thread has counted them all.
                        done_tx.send(()).unwrap();
                        rel.wait();
                        drop(agent);
                    })
                })
                .collect();
            for r in moss::join_all(hs) {
                r.unwrap();
            }
        })
    });
    for _ in 0..50 {
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("every coroutine finishes its requests");
    }
    // 50 keep-alive connections open at once, all from one client thread.
    assert_eq!(srv.connections(), 50);
    release.set();
    client_thread.join().expect("no client coroutine failed");
    srv.until_connections(0, Duration::from_secs(20));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = start();
    let mut s = raw(srv.addr);
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /bytes/30 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /bytes/7 HTTP/1.1\r\nHost: a\r\n\r\n\
          HEAD /nope HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nTrailer: x\r\n\r\n\
          GET /bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut next = |head_only| read_response(&mut s, &mut buf, head_only).expect("a response");
    let r = next(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(
        r.header("date")
            .is_some_and(|d| d.ends_with(" GMT") && d.len() == 29)
    );
    let r = next(false);
    assert_eq!((r.status, r.body), (200, pattern(30)));
    let r = next(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    let r = next(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("7")));
    // HEAD of a missing page: headers only too (a body would break the
    // next response's framing).
    let r = next(true);
    assert_eq!((r.status, r.header("content-length")), (404, Some("10")));
    let r = next(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"abcd"[..]));
    let r = next(false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_eq!(r.body, b"abc");
    assert!(
        read_response(&mut s, &mut buf, false).is_none(),
        "closed after Connection: close"
    );
}

#[test]
fn http10_closes_unless_kept_alive() {
    let srv = start();
    let (r, closed) = one(srv.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(closed);
    let mut s = raw(srv.addr);
    s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET /bytes/2 HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body, b"ab");
    assert!(read_response(&mut s, &mut buf, false).is_none());
}

#[test]
fn malformed_requests_get_400_and_a_close() {
    let srv = start();
    let cases: &[(&[u8], u16)] = &[
        (b"garbage\r\n\r\n", 400),
        (b"\x00\x01\x02\x03\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),                        // no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400), // two
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        (b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
            400,
        ),
    ];
    for (req, status) in cases {
        let (r, closed) = one(srv.addr, req);
        let what = String::from_utf8_lossy(req);
        assert_eq!(r.status, *status, "for {what:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "for {what:?}");
        assert!(closed, "closed after {what:?}");
    }
    srv.until_connections(0, Duration::from_secs(20));
}

#[test]
fn size_limits_413_and_431() {
    let srv = start_with(Config {
        timeout: Duration::from_secs(60),
        max_body: 1000,
        max_head: 2048,
        ..Config::default()
    });
    // Declared too large: refused before the body is sent.
    let (r, closed) = one(
        srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n",
    );
    assert_eq!((r.status, closed), (413, true));
    let (r, _) = one(
        srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n",
    );
    assert_eq!(r.status, 413);
    // Chunked: refused when the total passes the limit, while the client
    // is still sending (the reply survives: the server drains, then closes).
    let mut s = raw(srv.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        s.write_all(b"190\r\n").unwrap();
        s.write_all(&[b'x'; 0x190]).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 413);
    // Exactly at the limit is fine.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend(vec![b'z'; 1000]);
    let (r, closed) = one(srv.addr, &req);
    assert_eq!((r.status, r.body.len(), closed), (200, 1000, false));
    // A head past max_head, with or without its end.
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "v".repeat(3000)
    );
    let (r, closed) = one(srv.addr, long.as_bytes());
    assert_eq!((r.status, closed), (431, true));
    let (r, _) = one(srv.addr, &long.as_bytes()[..2500]);
    assert_eq!(r.status, 431);
    let many: String = (0..100).map(|i| format!("h{i}: v\r\n")).collect();
    let (r, _) = one(
        srv.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431);
    // /bytes/N past its limit.
    let (r, _) = one(
        srv.addr,
        b"GET /bytes/99999999999 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn expect_100_continue() {
    let srv = start();
    let mut s = raw(srv.addr);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 100);
    s.write_all(b"ping").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"ping"[..]));
    // Too large: 413 at once, no 100.
    let (r, _) = one(
        srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",
    );
    assert_eq!(r.status, 413);
}

#[test]
fn slowloris_gets_408_at_the_deadline() {
    let timeout = Duration::from_millis(600);
    let srv = start_with(Config {
        timeout,
        ..Config::default()
    });
    // A head dripping one byte every 50 ms never completes in time. (The
    // clock starts before connect: the server may accept, and start its
    // deadline, before connect() returns here.)
    let t = Instant::now();
    let mut s = raw(srv.addr);
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut reply = Vec::new();
    for &b in head.iter() {
        if s.write_all(&[b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if t.elapsed() > timeout * 4 {
            break;
        }
    }
    let _ = s.read_to_end(&mut reply);
    let elapsed = t.elapsed();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text:?}"
    );
    assert!(
        elapsed >= timeout,
        "408 after {elapsed:?}, before the deadline"
    );
    // An idle connection is closed quietly at the deadline.
    let t = Instant::now();
    let mut s = raw(srv.addr);
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    assert!(v.is_empty(), "{v:?}");
    assert!(t.elapsed() >= timeout);
    // So is a keep-alive connection after its response.
    let mut s = raw(srv.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().status, 200);
    assert!(read_response(&mut s, &mut buf, false).is_none());
    // A slow body counts against the same deadline.
    let mut s = raw(srv.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < timeout * 10 {
        if s.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 16];
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if matches!(s.read(&mut b), Ok(0) | Err(_)) && t.elapsed() > timeout {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dripping body outlived the deadline");
    srv.until_connections(0, Duration::from_secs(20));
}

#[test]
fn a_client_that_stops_reading_is_dropped() {
    let timeout = Duration::from_secs(2);
    let srv = start_with(Config {
        timeout,
        ..Config::default()
    });
    // 64 MB asked for, none read, the socket kept open: the server's
    // writes stall, and it gives up on the connection.
    let mut s = raw(srv.addr);
    s.write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // (Accepted first: the drop must not be mistaken for "not yet there".)
    srv.until_connections(1, Duration::from_secs(20));
    srv.until_connections(0, Duration::from_secs(30));
    // What the kernel buffered, then the end: the body was cut short.
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("a clean close after the buffered part");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        got.len() < 64 << 20,
        "{} bytes: the whole body was sent",
        got.len()
    );
    let (r, _) = one(srv.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn clients_that_vanish_mid_request() {
    let srv = start();
    for req in [
        &b"GET / HTTP/1.1\r\nHo"[..],
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
    ] {
        let mut s = raw(srv.addr);
        s.write_all(req).unwrap();
        drop(s);
    }
    // One that asks for 64 MB and reads none of it.
    let mut s = raw(srv.addr);
    s.write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Meanwhile the hub serves others.
    let (r, _) = one(srv.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    let _ = s.shutdown(Shutdown::Both);
    drop(s);
    srv.until_connections(0, Duration::from_secs(20));
}

#[test]
fn garbage_never_hurts_the_server() {
    let srv = start();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let prefixes: [&[u8]; 4] = [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n",
    ];
    for round in 0..200 {
        let mut junk = prefixes[round % 4].to_vec();
        let len = (next() % 3000) as usize;
        junk.extend((0..len).map(|_| next() as u8));
        let mut s = raw(srv.addr);
        let _ = s.write_all(&junk);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .expect("the server answers and closes, never hangs");
    }
    srv.until_connections(0, Duration::from_secs(20));
    let (r, _) = one(srv.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
}
