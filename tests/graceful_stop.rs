//! examples/graceful_stop.rs in a child process: SIGTERM stops the server,
//! requests in flight finish (or are cut at the grace period), the process
//! exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "../examples/graceful_stop.rs"]
mod graceful_stop;
mod util;

use util::child_server::{self, ChildServer};

/// Sends one request and waits for "working": the request is in flight.
fn in_flight(addr: SocketAddr, name: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{name}\n").as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "working\n");
    r
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    const CASE: &str = "sigterm_lets_requests_in_flight_finish";
    if util::in_child(CASE) {
        graceful_stop::run(0, Duration::from_millis(700), Duration::from_secs(5)).unwrap();
        return;
    }
    let _wd = util::watchdog(CASE, Duration::from_secs(60));
    let (mut server, out, addr) = ChildServer::start(CASE);
    let clients: Vec<_> = (0..5)
        .map(|i| in_flight(addr, &format!("req {i}")))
        .collect();
    let t = Instant::now();
    server.sigterm();
    for (i, mut c) in clients.into_iter().enumerate() {
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        assert_eq!(line, format!("done: req {i}\n"));
    }
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop waited for nothing"
    );
    let log = child_server::rest(out);
    assert!(
        log.contains("signal: stopping, 5 request(s) in flight"),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    // The listener is closed.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn requests_longer_than_the_grace_period_are_cut() {
    const CASE: &str = "requests_longer_than_the_grace_period_are_cut";
    if util::in_child(CASE) {
        graceful_stop::run(0, Duration::from_secs(60), Duration::from_millis(300)).unwrap();
        return;
    }
    let _wd = util::watchdog(CASE, Duration::from_secs(60));
    let (mut server, out, addr) = ChildServer::start(CASE);
    let mut c = in_flight(addr, "slow");
    server.sigterm();
    // A second SIGTERM while stopping changes nothing.
    server.sigterm();
    let t = Instant::now();
    let mut rest_of_reply = Vec::new();
    c.read_to_end(&mut rest_of_reply).unwrap();
    assert!(
        rest_of_reply.is_empty(),
        "the handler was killed before replying"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(server.0.wait().unwrap().success());
    assert!(child_server::rest(out).contains("stopped"));
}
