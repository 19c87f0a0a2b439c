//! Under `patch_all`, an unmodified blocking TLS client (rustls over
//! `std::net::TcpStream`) talks to a moss TLS server from many coroutines
//! at once.

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use moss::server::StreamServer;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConnection, StreamOwned};

#[path = "../examples/tls_echo.rs"]
mod tls_echo;
mod util;

const DELAY: Duration = Duration::from_millis(200);

/// Plain blocking rustls over std: nothing moss-specific.
fn std_client(cfg: Arc<ClientConfig>, addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(cfg, name).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    tls.read_exact(&mut back).unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    back
}

#[test]
fn std_rustls_clients_in_coroutines_overlap_against_a_moss_tls_server() {
    moss::monkey::patch_all();
    let _wd = util::watchdog("patched TLS clients", Duration::from_secs(120));
    let tls = tls_echo::self_signed();
    let server_cfg = tls.server.clone();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // The server, on a hub thread of its own: each reply comes DELAY after
    // the request.
    let server_thread = std::thread::spawn(move || {
        let server = StreamServer::bind("127.0.0.1:0", move |tcp, _| {
            let conn = ServerConnection::new(server_cfg.clone()).unwrap();
            let mut s = StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            if let Ok(n @ 1..) = s.read(&mut buf) {
                moss::sleep(DELAY);
                let _ = s.write_all(&buf[..n]);
                let _ = s.flush();
            }
            let _ = s.read(&mut buf); // the client's close_notify
        })
        .unwrap();
        addr_tx.send(server.local_addr()).unwrap();
        let s = server.clone();
        let serving = moss::spawn(move || s.serve_forever());
        while stop_rx.try_recv().is_err() {
            moss::sleep(Duration::from_millis(5));
        }
        server.stop(Duration::from_secs(5));
        serving.join().unwrap().unwrap();
    });
    let addr = addr_rx.recv().unwrap();
    let client_cfg = tls.client.clone();
    util::on_thread(Duration::from_secs(100), move || {
        let ticks = Rc::new(Cell::new(0u32));
        let t2 = ticks.clone();
        let ticker = moss::spawn(move || {
            loop {
                moss::sleep(Duration::from_millis(10));
                t2.set(t2.get() + 1);
            }
        });
        let t = Instant::now();
        let hs: Vec<_> = (0..20)
            .map(|i| {
                let cfg = client_cfg.clone();
                moss::spawn(move || {
                    let msg = format!("client {i} says hello").into_bytes();
                    std_client(cfg, addr, &msg) == msg
                })
            })
            .collect();
        for r in moss::join_all(hs) {
            assert!(r.unwrap(), "exact bytes back");
        }
        let el = t.elapsed();
        // Serially: 20 x 200 ms = 4 s.
        assert!(
            el < Duration::from_millis(2500),
            "clients did not overlap: {el:?}"
        );
        // The overlap above is the proof of cooperation; the ticker only
        // shows the hub was not held for the whole run (a loaded machine
        // stretches its 10 ms sleeps, so no rate is asserted).
        assert!(
            ticks.get() >= 3,
            "the client hub was blocked: {} ticks",
            ticks.get()
        );
        ticker.kill();
    });
    stop_tx.send(()).unwrap();
    server_thread.join().unwrap();
}
