//! gevent's classic demo, with unmodified std code: after
//! `moss::monkey::patch_all()`, coroutines that fetch over `std::net` from a
//! slow server wait at the same time, so the total is about one response.
//!
//! The server is plain std code too (`TcpListener`, `std::thread::sleep`),
//! running as coroutines on the same thread.
//!
//! Run: `cargo run --example monkey`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const FETCHES: usize = 10;
const SLOWNESS: Duration = Duration::from_millis(500);

/// A tiny HTTP/1.0 server whose every response takes `SLOWNESS`.
fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        moss::spawn(move || {
            let mut reader = BufReader::new(&stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                return;
            }
            std::thread::sleep(SLOWNESS); // blocking std call: yields instead
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_owned();
            let body = format!("you asked for {path}\n");
            let _ = write!(
                &stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// Fetches `path` with a plain std TcpStream.
fn fetch(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.trim_end().to_owned())
}

fn main() -> std::io::Result<()> {
    moss::monkey::patch_all();

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = moss::spawn(move || serve(listener));

    let t = Instant::now();
    let fetches: Vec<_> = (0..FETCHES)
        .map(|i| moss::spawn(move || fetch(addr, &format!("/page/{i}"))))
        .collect();
    for (i, r) in moss::join_all(fetches).into_iter().enumerate() {
        let body = r.expect("fetch coroutine panicked")?;
        println!("fetch {i}: {body}");
    }
    let took = t.elapsed();
    println!(
        "{FETCHES} fetches of a server that takes {SLOWNESS:?} per response: {took:.2?} in total \
         (sequentially: {:?})",
        SLOWNESS * FETCHES as u32
    );
    assert!(took < SLOWNESS * 3, "the fetches did not overlap");
    server.kill();
    Ok(())
}
