//! A fixed number of keep-alive `GET` requests over `conns` connections,
//! each a moss coroutine: the HTTP load of the instruction counts, where a
//! timed load generator (wrk) cannot say exactly how many requests the
//! server answered. The request bytes are wrk's.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use moss::net::TcpStream;

/// Sends `total` requests for `path` (spread over `conns` connections) and
/// returns how many got a complete `200` response.
pub fn http_gets(addr: SocketAddr, path: &str, conns: usize, total: usize) -> usize {
    let ok = Rc::new(Cell::new(0));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let req = Rc::new(req);
    let hs: Vec<_> = (0..conns)
        .map(|c| {
            let n = total / conns + usize::from(c < total % conns);
            let (ok, req) = (ok.clone(), req.clone());
            moss::spawn(move || {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let mut buf = Vec::with_capacity(4096);
                for _ in 0..n {
                    if s.write_all(&req).is_err() || !read_response(&mut s, &mut buf) {
                        return;
                    }
                    ok.set(ok.get() + 1);
                }
            })
        })
        .collect();
    moss::join_all(hs);
    ok.get()
}

/// Reads one response with a `content-length` body; true if its status
/// was 200. `buf` carries bytes past it to the next call.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let whole = end + 4 + len;
            while buf.len() < whole {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let ok = head.starts_with("http/1.1 200 ");
            buf.drain(..whole);
            return ok;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Opens `n` connections to `addr`, and once all are open sends `req` on
/// each and reads until the reply ends with `want`; returns how many did.
/// Every connection stays open until all have answered.
pub fn hold(addr: SocketAddr, n: usize, req: &'static [u8], want: &'static [u8]) -> usize {
    let ok = Rc::new(Cell::new(0));
    let gate = Rc::new(Cell::new(0));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (ok, gate) = (ok.clone(), gate.clone());
            moss::spawn(move || {
                let s = TcpStream::connect(addr);
                gate.set(gate.get() + 1);
                while gate.get() < n {
                    moss::sleep(std::time::Duration::from_millis(5));
                }
                if let Ok(mut s) = s {
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                    let mut got = Vec::new();
                    let mut b = [0u8; 512];
                    if s.write_all(req).is_ok() {
                        while !got.ends_with(want) && got.len() < 4096 {
                            match s.read(&mut b) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => got.extend_from_slice(&b[..k]),
                            }
                        }
                    }
                    ok.set(ok.get() + usize::from(got.ends_with(want)));
                    gate.set(gate.get() + 1);
                    while gate.get() < 2 * n {
                        moss::sleep(std::time::Duration::from_millis(5));
                    }
                } else {
                    gate.set(gate.get() + 1);
                }
            })
        })
        .collect();
    moss::join_all(hs);
    ok.get()
}
