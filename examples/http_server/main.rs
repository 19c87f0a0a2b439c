//! An HTTP/1.1 server on moss: keep-alive, pipelining, chunked request
//! bodies, and the limits a server facing the open internet needs (400,
//! 408, 413, 431; a deadline per request against slowloris). Requests are
//! parsed with `httparse`.
//!
//! ```sh
//! cargo run --release --example http_server -- --port 8080 --threads 2
//! curl -i localhost:8080/                 # Hello, World!
//! curl -s localhost:8080/bytes/100000 | wc -c
//! curl -s --data-binary @Cargo.toml localhost:8080/echo
//! wrk -c 64 -d 5 http://127.0.0.1:8080/
//! ```
//!
//! Routes: `GET /` (a 13-byte body), `GET /bytes/N` (N bytes, `a` to `z`
//! repeating), `POST /echo` (the request body back); `HEAD` for the GET
//! routes; 404 and 405 otherwise.
//!
//! Each of `--threads N` hub threads runs a `StreamServer` (a coroutine per
//! connection) on its own `SO_REUSEPORT` listener of the same port.
//! `--port 0` picks a free port; the address is printed either way.
//!
//! Flags: `--port N` (8080; 0 = any), `--threads N` (1), `--timeout SECS`
//! (10: a request must arrive within it, idle connections close after it),
//! `--max-head BYTES` (16 KiB), `--max-body BYTES` (1 MiB), `--max-bytes N`
//! (64 MiB, the largest `/bytes/N`).

mod conn;
#[path = "../common/linger.rs"]
mod linger;
#[path = "../common/listen.rs"]
mod listen;
mod request;

use std::time::Duration;

use listen::{Args, Listeners};

const USAGE: &str = "[--port 8080] [--threads 1] [--timeout SECS] [--max-head BYTES] \
                     [--max-body BYTES] [--max-bytes N]";

fn main() {
    let args = Args::parse("http_server", USAGE);
    args.only(&[
        "port",
        "threads",
        "timeout",
        "max-head",
        "max-body",
        "max-bytes",
    ]);
    let port: u16 = args.get("port", 8080);
    let threads = args.get("threads", 1usize).max(1);
    let d = conn::Config::default();
    let cfg = conn::Config {
        timeout: Duration::from_secs_f64(args.get("timeout", d.timeout.as_secs_f64()).max(0.001)),
        max_head: args.get("max-head", d.max_head).max(64),
        max_body: args.get("max-body", d.max_body),
        max_bytes: args.get("max-bytes", d.max_bytes),
    };
    let listeners = Listeners::bind(port).unwrap_or_else(|e| {
        eprintln!("http_server: cannot bind port {port}: {e}");
        std::process::exit(1)
    });
    println!(
        "http_server: listening on {}, {threads} thread(s)",
        listeners.addr()
    );
    moss::run_per_core(threads, move |_| {
        let l = listeners.take().unwrap_or_else(|e| {
            eprintln!("http_server: cannot bind {}: {e}", listeners.addr());
            std::process::exit(1)
        });
        let server = conn::server(l, cfg).unwrap_or_else(|e| {
            eprintln!("http_server: {e}");
            std::process::exit(1)
        });
        if let Err(e) = server.serve_forever() {
            eprintln!("http_server: {e}");
            std::process::exit(1)
        }
    });
}
