//! TLS with rustls' `StreamOwned` over `moss::net::TcpStream` (the code of
//! examples/tls_echo.rs): hundreds of concurrent clients on one hub, exact
//! bytes, and a stalled handshake that holds up nobody else.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::net::TcpStream;

#[path = "../examples/tls_echo.rs"]
mod tls_echo;
mod util;

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A payload unique to client `i`, `len` bytes.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
}

#[test]
fn two_hundred_concurrent_clients_against_one_single_threaded_hub() {
    let _wd = util::watchdog("200 TLS clients", Duration::from_secs(120));
    let tls = tls_echo::self_signed();
    let client_cfg = tls.client.clone();
    let server = tls_echo::echo_server(tls.server, local(), None).unwrap();
    let addr = server.local_addr();
    let serving = {
        let s = server.clone();
        moss::spawn(move || s.serve_forever())
    };
    // Clients on the same hub as the server: one thread does it all.
    let live = Rc::new(Cell::new(0usize));
    let peak = Rc::new(Cell::new(0usize));
    let hs: Vec<_> = (0..200)
        .map(|i| {
            let (cfg, live, peak) = (client_cfg.clone(), live.clone(), peak.clone());
            moss::spawn(move || {
                live.set(live.get() + 1);
                peak.set(peak.get().max(live.get()));
                let msg = payload(i, 20_000 + i);
                let back = tls_echo::echo_client(cfg, addr, &msg).unwrap();
                live.set(live.get() - 1);
                back == msg
            })
        })
        .collect();
    let exact = moss::join_all(hs)
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(exact, 200, "every client got its exact bytes back");
    assert!(peak.get() > 100, "clients overlapped: peak {}", peak.get());
    server.stop(Duration::from_secs(5));
    serving.join().unwrap().unwrap();
}

#[test]
fn a_stalled_handshake_does_not_block_other_connections() {
    let _wd = util::watchdog("stalled handshake", Duration::from_secs(60));
    let tls = tls_echo::self_signed();
    let idle = Duration::from_millis(500);
    let server = tls_echo::echo_server(tls.server, local(), Some(idle)).unwrap();
    let addr = server.local_addr();
    let serving = {
        let s = server.clone();
        moss::spawn(move || s.serve_forever())
    };
    let ticks = Rc::new(Cell::new(0u32));
    let t2 = ticks.clone();
    let ticker = moss::spawn(move || {
        loop {
            moss::sleep(Duration::from_millis(10));
            t2.set(t2.get() + 1);
        }
    });
    // One peer sends nothing, another half a ClientHello.
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    util::until(
        "both stalled handshakes to be in the server",
        Duration::from_secs(10),
        || server.connections() == 2,
    );
    // Meanwhile real clients are served at once, and the hub keeps ticking.
    let t = Instant::now();
    let before = ticks.get();
    for i in 0..10 {
        let msg = payload(i, 1000);
        assert_eq!(
            tls_echo::echo_client(tls.client.clone(), addr, &msg).unwrap(),
            msg
        );
    }
    // A stalled handshake blocking the hub would stop the ticker for good;
    // a loaded machine only slows it, so wait for progress, not a rate.
    util::until(
        "the ticker to keep ticking",
        Duration::from_secs(10),
        || ticks.get() >= before + 5,
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // The idle timeout drops the stalled peers (their reads see EOF).
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = Vec::new();
        let r = s.read_to_end(&mut b);
        assert!(
            r.is_ok() || r.as_ref().unwrap_err().kind() == ErrorKind::ConnectionReset,
            "{r:?}"
        );
    }
    util::until(
        "the stalled handlers to end",
        Duration::from_secs(10),
        || server.connections() == 0,
    );
    ticker.kill();
    server.stop(Duration::from_secs(5));
    serving.join().unwrap().unwrap();
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_cleanly() {
    let _wd = util::watchdog("untrusted certificate", Duration::from_secs(60));
    let tls = tls_echo::self_signed();
    let other = tls_echo::self_signed();
    let server = tls_echo::echo_server(tls.server, local(), Some(Duration::from_secs(5))).unwrap();
    let addr = server.local_addr();
    let serving = {
        let s = server.clone();
        moss::spawn(move || s.serve_forever())
    };
    // A client trusting another certificate: a clear error, no hang.
    let e = tls_echo::echo_client(other.client, addr, b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    // The server still serves a trusting client afterwards.
    assert_eq!(
        tls_echo::echo_client(tls.client, addr, b"still here").unwrap(),
        b"still here"
    );
    server.stop(Duration::from_secs(5));
    serving.join().unwrap().unwrap();
}
