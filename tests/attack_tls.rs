//! Attacks on TLS (rustls `StreamOwned`) over moss sockets: clients killed
//! and timed out at every point of a handshake and of large transfers,
//! then the server still serves and holds no connection or fd.

use std::net::SocketAddr;
use std::time::Duration;

#[path = "../examples/tls_echo.rs"]
mod tls_echo;
mod util;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn clients_killed_and_timed_out_everywhere() {
    let _wd = util::watchdog("TLS kills", Duration::from_secs(120));
    let tls = tls_echo::self_signed();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = tls_echo::echo_server(tls.server, local, Some(Duration::from_secs(2))).unwrap();
    let addr = server.local_addr();
    let serving = {
        let s = server.clone();
        moss::spawn(move || s.serve_forever())
    };
    // One clean round first, so lazily created state (hub, pools) exists.
    assert_eq!(
        tls_echo::echo_client(tls.client.clone(), addr, b"x").unwrap(),
        b"x"
    );
    let fds0 = open_fds();
    for round in 0..150u64 {
        let cfg = tls.client.clone();
        let len = [10usize, 20_000, 300_000][round as usize % 3];
        let msg: Vec<u8> = (0..len).map(|k| (k as u64 * 31 + round) as u8).collect();
        let delay = Duration::from_micros(round * 97 % 3000);
        if round % 2 == 0 {
            let h = moss::spawn(move || tls_echo::echo_client(cfg, addr, &msg));
            moss::sleep(delay);
            h.kill();
            let _ = h.join();
        } else {
            let _ = moss::timeout(delay, || tls_echo::echo_client(cfg, addr, &msg));
        }
    }
    // The server still serves, exactly.
    for i in 0..5u8 {
        let msg = vec![i; 100_000];
        assert_eq!(
            tls_echo::echo_client(tls.client.clone(), addr, &msg).unwrap(),
            msg
        );
    }
    util::until(
        "the server's connections to end",
        Duration::from_secs(10),
        || server.connections() == 0,
    );
    util::until("fds back", Duration::from_secs(10), || open_fds() <= fds0);
    server.stop(Duration::from_secs(5));
    serving.join().unwrap().unwrap();
}
