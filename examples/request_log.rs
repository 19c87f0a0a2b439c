//! Per-request context for log lines with `moss::coroutine_local!`
//! (gevent's `gevent.local`): a [`StreamServer`] whose handler sets a
//! request id once per request; every log line written deeper down, by
//! code that is never handed the id, carries it, although many requests
//! are served at the same time on one thread.
//!
//! ```sh
//! cargo run --example request_log            # 4 clients x 3 requests, then exits
//! cargo run --example request_log -- 20 5    # 20 clients x 5 requests
//! ```
//!
//! Protocol: one request per line, `GET KEY`; the answer is `KEY=VALUE`.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moss::net::TcpStream;
use moss::server::StreamServer;

moss::coroutine_local! {
    /// The request the running coroutine serves (0: none).
    static REQUEST_ID: Cell<u64> = Cell::new(0);
}

thread_local! {
    /// Every line logged on this thread, for the test that checks them.
    static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// Logs `msg`, tagged with the running coroutine's request id.
fn log(msg: &str) {
    let line = format!("[req {:>3}] {msg}", REQUEST_ID.get());
    println!("{line}");
    LOGGED.with(|l| l.borrow_mut().push(line));
}

/// The "storage" lookup: slow, and knows nothing about requests.
fn lookup(key: &str) -> String {
    log(&format!("{key}: looking up"));
    // The wait lets the other connections' requests interleave.
    moss::sleep(Duration::from_millis(2 + key.len() as u64 % 5));
    let value = key.chars().rev().collect::<String>();
    log(&format!("{key}: found {value}"));
    value
}

fn serve(s: TcpStream) -> std::io::Result<()> {
    let mut lines = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    while {
        line.clear();
        lines.read_line(&mut line)? > 0
    } {
        // One id per request, set once; `lookup` and `log` find it.
        REQUEST_ID.set(NEXT_REQUEST.fetch_add(1, Ordering::Relaxed));
        let Some(key) = line.trim().strip_prefix("GET ") else {
            log("bad request");
            w.write_all(b"ERR\n")?;
            continue;
        };
        let value = lookup(key);
        w.write_all(format!("{key}={value}\n").as_bytes())?;
        log(&format!("{key}: replied"));
    }
    Ok(())
}

/// Serves `clients` concurrent clients sending `requests` requests each,
/// then stops; returns the log lines.
pub fn run(clients: usize, requests: usize) -> std::io::Result<Vec<String>> {
    let server = StreamServer::bind("127.0.0.1:0", |s, _| {
        let _ = serve(s);
    })?;
    let addr = server.local_addr();
    let serving = {
        let server = server.clone();
        moss::spawn(move || server.serve_forever())
    };
    let hs: Vec<_> = (0..clients)
        .map(|c| moss::spawn(move || client(addr, c, requests)))
        .collect();
    for r in moss::join_all(hs) {
        r.expect("client coroutine")?;
    }
    server.stop(Duration::from_secs(5));
    serving.join().expect("server coroutine")?;
    Ok(LOGGED.with(|l| l.take()))
}

fn client(addr: SocketAddr, c: usize, requests: usize) -> std::io::Result<()> {
    let s = TcpStream::connect(addr)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut answer = String::new();
    for i in 0..requests {
        let key = format!("c{c}r{i}");
        w.write_all(format!("GET {key}\n").as_bytes())?;
        answer.clear();
        r.read_line(&mut answer)?;
        let want = format!("{key}={}\n", key.chars().rev().collect::<String>());
        if answer != want {
            return Err(std::io::Error::other(format!(
                "got {answer:?}, want {want:?}"
            )));
        }
    }
    Ok(())
}

#[allow(dead_code)] // the tests include this file as a module and call `run`
fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (clients, requests) = match (args.next(), args.next()) {
        (None, _) => (4, 3),
        (Some(Ok(c)), None) => (c, 3),
        (Some(Ok(c)), Some(Ok(r))) => (c, r),
        _ => {
            eprintln!("usage: request_log [CLIENTS [REQUESTS]]");
            std::process::exit(2);
        }
    };
    let lines = run(clients, requests)?;
    println!("{} lines logged", lines.len());
    Ok(())
}
