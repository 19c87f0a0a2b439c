//! A private `redis-server` for tests that compare with it or talk to it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `prog` runs (`prog --version`). Outside CI a missing one is
/// reported as a skip; in CI (`CI` set), which installs it, it fails.
pub fn have_or_skip(prog: &str) -> bool {
    let found = Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{prog} is missing, but CI installs it (.ci/run)"
        );
        eprintln!("SKIPPED: {prog} is not installed (apt-get install redis-server redis-tools)");
    }
    found
}

/// A `redis-server` on a free loopback port, persistence off, in a
/// directory of its own; killed when dropped.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts one and waits until it answers PING; `None` (a loud skip)
    /// when `redis-server` is not installed outside CI.
    pub fn start() -> Option<RedisServer> {
        if !have_or_skip("redis-server") {
            return None;
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("moss-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The port is free when we look; another process could take it
        // before redis binds it, so try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if child.try_wait().unwrap().is_some() {
                    break; // could not bind: next port
                }
                if ping(addr) {
                    return Some(RedisServer { child, addr, dir });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
