//! moss::net UDP, Unix sockets and DNS.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use moss::net::{UdpSocket, UnixDatagram, UnixListener, UnixStream, lookup_host};

fn temp_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("moss-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn udp_round_trips_between_coroutines() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let srv = moss::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..100 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let reply: Vec<u8> = buf[..n].iter().rev().copied().collect();
            server.send_to(&reply, from).unwrap();
        }
    });
    let clients: Vec<_> = (0..10u8)
        .map(|c| {
            moss::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(addr).unwrap();
                assert_eq!(s.peer_addr().unwrap(), addr);
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                for i in 0..10u8 {
                    let msg = [c, i, 0xAB, c ^ i];
                    assert_eq!(s.send(&msg).unwrap(), 4);
                    let mut b = [0u8; 16];
                    let n = s.recv(&mut b).unwrap();
                    assert_eq!(&b[..n], &[c ^ i, 0xAB, i, c]);
                }
            })
        })
        .collect();
    for r in moss::join_all(clients) {
        r.unwrap();
    }
    srv.join().unwrap();
}

#[test]
fn udp_read_timeout_is_would_block() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t = Instant::now();
    let e = s.recv_from(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    assert!(t.elapsed() >= Duration::from_millis(100));
    let std_s: std::net::UdpSocket = s.into();
    assert_eq!(
        std_s.read_timeout().unwrap(),
        Some(Duration::from_millis(100))
    );
}

#[test]
fn unix_stream_echo_through_a_listener() {
    let path = temp_path("stream");
    let l = UnixListener::bind(&path).unwrap();
    let srv = moss::spawn(move || {
        let mut hs = Vec::new();
        for _ in 0..20 {
            let (mut s, _) = l.accept().unwrap();
            hs.push(moss::spawn(move || {
                let mut v = Vec::new();
                s.read_to_end(&mut v).unwrap();
                s.write_all(&v).unwrap();
            }));
        }
        for r in moss::join_all(hs) {
            r.unwrap();
        }
    });
    let cs: Vec<_> = (0..20usize)
        .map(|i| {
            let path = path.clone();
            moss::spawn(move || {
                let mut c = UnixStream::connect(&path).unwrap();
                let data: Vec<u8> = (0..i * 5000).map(|j| (j * 7 + i) as u8).collect();
                c.write_all(&data).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).unwrap();
                assert!(back == data, "client {i}");
            })
        })
        .collect();
    for r in moss::join_all(cs) {
        r.unwrap();
    }
    srv.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unix_pair_and_peer_gone() {
    let (a, b) = UnixStream::pair().unwrap();
    let r = moss::spawn(move || {
        let mut s = String::new();
        (&b).read_to_string(&mut s).unwrap();
        s
    });
    (&a).write_all(b"pair").unwrap();
    drop(a);
    assert_eq!(r.join().unwrap(), "pair");
    // Writing to a closed peer fails with BrokenPipe (no SIGPIPE).
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let e = (&a).write_all(b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
}

#[test]
fn unix_datagrams() {
    let (a, b) = UnixDatagram::pair().unwrap();
    let r = moss::spawn(move || {
        let mut buf = [0u8; 16];
        let n = b.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    moss::sleep(Duration::from_millis(10));
    a.send(b"dgram").unwrap();
    assert_eq!(r.join().unwrap(), b"dgram");

    let path = temp_path("dgram");
    let server = UnixDatagram::bind(&path).unwrap();
    let client = UnixDatagram::unbound().unwrap();
    client.send_to(b"to a path", &path).unwrap();
    let mut buf = [0u8; 32];
    let (n, _) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to a path");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn dns_resolves_localhost_off_the_hub() {
    let addrs: Vec<_> = lookup_host("localhost:4242").unwrap().collect();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 4242),
        "{addrs:?}"
    );
    // The whole ToSocketAddrs path: connect by name.
    let l = moss::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let c = moss::spawn(move || moss::net::TcpStream::connect(("localhost", port)));
    // Several lookups from coroutines at once.
    let hs: Vec<_> = (0..8)
        .map(|_| moss::spawn(|| lookup_host("localhost:1").map(|i| i.count())))
        .collect();
    for r in moss::join_all(hs) {
        assert!(r.unwrap().unwrap() >= 1);
    }
    // localhost may resolve to ::1 first, where nothing listens: then the
    // next address is tried.
    let _s = l.accept().unwrap();
    let s = c.join().unwrap().unwrap();
    assert_eq!(s.peer_addr().unwrap().port(), port);
    let e = lookup_host("no port here").map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}
