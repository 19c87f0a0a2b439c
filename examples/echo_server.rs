//! A moss echo server: a [`StreamServer`] (one coroutine per connection) on
//! each thread, one hub per thread.
//!
//! ```sh
//! cargo run --release --example echo_server -- --port 7000 --threads 2 --buf 4096
//! ```
//!
//! Every thread of [`moss::run_per_core`] binds the same port with
//! `SO_REUSEPORT`, so the kernel spreads connections over the threads
//! (`--port 0`: a free port, the same for all; the address is printed). It
//! serves until killed.

#[allow(dead_code)]
#[path = "common/listen.rs"]
mod listen;

use std::io::{Read, Write};

use moss::net::TcpStream;
use moss::server::StreamServer;

fn echo(mut s: TcpStream, buf: usize) {
    let _ = s.set_nodelay(true);
    let mut b = vec![0u8; buf];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&b[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let mut port = 7000u16;
    let mut threads = 1usize;
    let mut buf = 4096usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("echo_server: {name} needs a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--port" => port = val("--port") as u16,
            "--threads" => threads = val("--threads").max(1),
            "--buf" => buf = val("--buf").max(1),
            _ => {
                eprintln!("usage: echo_server --port N [--threads N] [--buf BYTES]");
                std::process::exit(2)
            }
        }
    }
    let listeners = listen::Listeners::bind(port).unwrap_or_else(|e| {
        eprintln!("echo_server: cannot bind port {port}: {e}");
        std::process::exit(1)
    });
    let addr = listeners.addr();
    println!("echo_server: {addr}, {threads} thread(s), {buf}-byte buffers");
    moss::run_per_core(threads, move |_| {
        let l = listeners.take().unwrap_or_else(|e| {
            eprintln!("echo_server: cannot bind {addr}: {e}");
            std::process::exit(1)
        });
        // A coroutine per connection; EMFILE and friends pause accepting.
        let server = StreamServer::from_listener(l, move |s, _| echo(s, buf))
            .unwrap_or_else(|e| panic!("echo_server: {e}"));
        if let Err(e) = server.serve_forever() {
            eprintln!("echo_server: {e}");
            std::process::exit(1)
        }
    });
}
