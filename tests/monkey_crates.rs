//! Unmodified third-party code after `patch_all`: an HTTP client against a
//! threaded HTTP server, and name resolution through std.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

mod util;

use std::cell::Cell;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[test]
fn ureq_clients_overlap_against_a_slow_tiny_http_server() {
    // The server runs on plain threads (no hub: plain blocking I/O).
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    const CLIENTS: usize = 8;
    const DELAY: Duration = Duration::from_millis(400);
    let srv = std::thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..CLIENTS {
            let req = server.recv().unwrap();
            workers.push(std::thread::spawn(move || {
                std::thread::sleep(DELAY);
                let body = format!("slow answer to {}", req.url());
                req.respond(tiny_http::Response::from_string(body)).unwrap();
            }));
        }
        for w in workers {
            w.join().unwrap();
        }
    });
    let elapsed = util::on_patched_thread(Duration::from_secs(30), move || {
        let t = Instant::now();
        let hs: Vec<_> = (0..CLIENTS)
            .map(|i| {
                moss::spawn(move || {
                    let url = format!("http://127.0.0.1:{port}/item/{i}");
                    ureq::get(&url).call().unwrap().into_string().unwrap()
                })
            })
            .collect();
        for (i, r) in moss::join_all(hs).into_iter().enumerate() {
            assert_eq!(r.unwrap(), format!("slow answer to /item/{i}"));
        }
        t.elapsed()
    });
    srv.join().unwrap();
    // Serially: 8 x 400 ms = 3.2 s.
    assert!(elapsed >= DELAY, "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2000),
        "clients did not overlap: {elapsed:?}"
    );
}

#[test]
fn name_resolution_does_not_stall_other_coroutines() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let spins = Rc::new(Cell::new(0u64));
        let done = Rc::new(Cell::new(false));
        let (s, d) = (spins.clone(), done.clone());
        let spinner = moss::spawn(move || {
            while !d.get() {
                s.set(s.get() + 1);
                moss::yield_now();
            }
        });
        // A lookup in /etc/hosts can finish before the caller even parks,
        // so look up several times: without the hook the spinner never runs
        // during any of them (the root would not yield).
        let mut during = 0;
        for _ in 0..20 {
            let before = spins.get();
            let addrs: Vec<_> = ("localhost", 8080).to_socket_addrs().unwrap().collect();
            during += spins.get() - before;
            assert!(
                !addrs.is_empty()
                    && addrs
                        .iter()
                        .all(|a| a.ip().is_loopback() && a.port() == 8080)
            );
        }
        done.set(true);
        spinner.join().unwrap();
        assert!(
            during > 0,
            "the hub did not run other coroutines during 20 lookups"
        );
    });
}
