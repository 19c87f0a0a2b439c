//! A graceful stop on SIGTERM (gevent: `gevent.signal_handler(signal.SIGTERM,
//! server.stop)`): a [`StreamServer`] whose requests take a while; on
//! SIGTERM (or Ctrl-C) it stops accepting, lets the requests in flight
//! finish (up to 5 s, then kills the rest) and exits 0.
//!
//! ```sh
//! cargo run --example graceful_stop -- --port 7001 --work-ms 2000 &
//! printf 'hello\n' | nc 127.0.0.1 7001 &   # "working", then "done: hello"
//! kill -TERM %1                            # the request still completes
//! ```
//!
//! Protocol: the client sends one line; the server answers `working\n` at
//! once and `done: LINE\n` after `--work-ms` milliseconds.

use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;
use std::time::Duration;

use moss::net::TcpStream;
use moss::server::StreamServer;
use moss::signal;
use moss::sync::Event;

/// Serves on `127.0.0.1:port` until SIGTERM or SIGINT, then stops with
/// `grace` for the requests in flight. Prints `listening on ADDR` once
/// ready and `stopped` at the end.
pub fn run(port: u16, work: Duration, grace: Duration) -> std::io::Result<()> {
    let server = StreamServer::bind(("127.0.0.1", port), move |s: TcpStream, _| {
        let _ = serve_one(s, work);
    })?;
    let stopped = Rc::new(Event::new());
    let stop = {
        let (server, stopped) = (server.clone(), stopped.clone());
        move || {
            println!(
                "signal: stopping, {} request(s) in flight",
                server.connections()
            );
            server.stop(grace);
            stopped.set();
        }
    };
    // Each delivery runs `stop` in a new coroutine of this thread.
    let _term = signal::handler(signal::SIGTERM, stop.clone())?;
    let _int = signal::handler(signal::SIGINT, stop)?;
    println!("listening on {}", server.local_addr());
    server.serve_forever()?; // returns once stop() has closed the listener
    stopped.wait(); // the requests in flight have finished (or were killed)
    println!("stopped");
    Ok(())
}

fn serve_one(s: TcpStream, work: Duration) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line)?;
    w.write_all(b"working\n")?;
    moss::sleep(work); // the request's work; other connections keep going
    w.write_all(format!("done: {}", line).as_bytes())
}

#[allow(dead_code)] // the tests include this file as a module and call `run`
fn main() -> std::io::Result<()> {
    let mut port = 0u16;
    let mut work_ms = 1000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--port", Some(p)) if p <= u64::from(u16::MAX) => port = p as u16,
            ("--work-ms", Some(ms)) => work_ms = ms,
            _ => {
                eprintln!("usage: graceful_stop [--port N] [--work-ms MS]");
                std::process::exit(2);
            }
        }
    }
    run(port, Duration::from_millis(work_ms), Duration::from_secs(5))
}
