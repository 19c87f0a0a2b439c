//! TLS over moss sockets (gevent.ssl): a [`StreamServer`] serving TLS with a
//! self-signed certificate made at start, and clients, all on one thread.
//!
//! ```sh
//! cargo run --example tls_echo -- --clients 50
//! ```
//!
//! No wrapper type is needed: rustls' `StreamOwned` runs over any
//! `Read + Write` transport, and `moss::net::TcpStream` is one whose
//! blocking reads and writes park only the calling coroutine. So the
//! handshake and every record read or write yield to the hub, and a peer
//! that stalls mid-handshake holds up nobody but its own coroutine. A read
//! timeout on the socket bounds how long a stalled peer keeps its
//! coroutine.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::net::TcpStream;
use moss::server::StreamServer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls::{StreamOwned, crypto::ring};

/// A server and a client configuration sharing one self-signed certificate
/// for `localhost`.
pub struct Tls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// Makes a fresh self-signed certificate and both configurations.
pub fn self_signed() -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server certificate");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root certificate");
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// A TLS echo server on `addr`: each connection's handshake and records go
/// through a `StreamOwned` over the moss socket. `idle` bounds every read
/// (the handshake included): a peer silent for that long is dropped.
pub fn echo_server(
    cfg: Arc<ServerConfig>,
    addr: SocketAddr,
    idle: Option<Duration>,
) -> io::Result<StreamServer> {
    StreamServer::bind(addr, move |tcp: TcpStream, _| {
        let _ = echo(cfg.clone(), tcp, idle);
    })
}

fn echo(cfg: Arc<ServerConfig>, tcp: TcpStream, idle: Option<Duration>) -> io::Result<()> {
    tcp.set_read_timeout(idle)?;
    let conn = ServerConnection::new(cfg).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = tls.read(&mut buf)?; // 0 after the client's close_notify
        if n == 0 {
            return Ok(());
        }
        tls.write_all(&buf[..n])?;
    }
}

/// Connects to `addr` over TLS (as `localhost`), sends `msg`, and returns
/// what the server echoed.
pub fn echo_client(cfg: Arc<ClientConfig>, addr: SocketAddr, msg: &[u8]) -> io::Result<Vec<u8>> {
    let name = ServerName::try_from("localhost").expect("a valid name");
    let conn = ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, TcpStream::connect(addr)?);
    tls.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    tls.read_exact(&mut back)?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(back)
}

#[allow(dead_code)] // the tests include this file as a module
fn main() -> io::Result<()> {
    let mut clients = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--clients", Some(n)) => clients = n,
            _ => {
                eprintln!("usage: tls_echo [--clients N]");
                std::process::exit(2);
            }
        }
    }
    let tls = self_signed();
    let server = echo_server(tls.server.clone(), "127.0.0.1:0".parse().unwrap(), None)?;
    let addr = server.local_addr();
    let serving = {
        let s = server.clone();
        moss::spawn(move || s.serve_forever())
    };
    let t = Instant::now();
    let hs: Vec<_> = (0..clients)
        .map(|i| {
            let cfg = tls.client.clone();
            moss::spawn(move || {
                let msg = format!("hello from client {i}").repeat(100);
                let back = echo_client(cfg, addr, msg.as_bytes())?;
                Ok::<bool, io::Error>(back == msg.as_bytes())
            })
        })
        .collect();
    let ok = moss::join_all(hs)
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(true))))
        .count();
    println!(
        "{ok}/{clients} TLS clients echoed exactly, in {:?}, one thread",
        t.elapsed()
    );
    server.stop(Duration::from_secs(1));
    serving.join().expect("server coroutine")?;
    Ok(())
}
