//! The programs this benchmark drives and whose output it reads:
//! redis-server, redis-benchmark and wrk (callgrind's are in
//! `examples/common/callgrind.rs`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bench;

/// A free loopback port (bound, then released for a child to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind port 0");
    l.local_addr().expect("bound").port()
}

/// A running redis-server: persistence off, loopback, pinned to the server
/// CPU, optionally under `wrapper` (valgrind).
pub struct Redis {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Redis {
    pub fn start(wrapper: &[&str]) -> Redis {
        let port = free_port();
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg("redis-server");
                c
            }
            None => Command::new("redis-server"),
        };
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = bench::on_server_cpu(&mut cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_for_ping(addr, Duration::from_secs(60));
        Redis { child, addr }
    }

    /// SIGTERM (redis-server shuts down cleanly), then its CPU times.
    pub fn stop(mut self) -> (Duration, Duration) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        bench::reap(&mut self.child, Duration::from_secs(20))
    }
}

/// Waits until `addr` answers a RESP PING (a server under valgrind takes
/// seconds to start).
pub fn wait_for_ping(addr: SocketAddr, limit: Duration) {
    let t = Instant::now();
    loop {
        let ok = TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
            let mut b = [0u8; 7];
            s.read_exact(&mut b)?;
            Ok(&b == b"+PONG\r\n")
        });
        if ok.unwrap_or(false) {
            return;
        }
        assert!(t.elapsed() < limit, "no PONG from {addr} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line of redis-benchmark's CSV report.
#[derive(Debug, Clone)]
pub struct RedisRow {
    pub test: String,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `redis-benchmark -t TESTS -n N -c C -P P --csv` against `addr` (it runs
/// on this process's CPU). Fails loudly on output it cannot read.
pub fn redis_benchmark(
    addr: SocketAddr,
    tests: &str,
    n: usize,
    clients: usize,
    pipeline: usize,
) -> Vec<RedisRow> {
    let args = [
        "-t".to_string(),
        tests.to_string(),
        "-n".to_string(),
        n.to_string(),
        "-c".to_string(),
        clients.to_string(),
        "-P".to_string(),
        pipeline.to_string(),
    ];
    redis_benchmark_with(addr, &args, |c| c)
}

/// redis-benchmark with `args` (and `--csv`), placed on CPUs by `place`.
pub fn redis_benchmark_with(
    addr: SocketAddr,
    args: &[String],
    place: fn(&mut Command) -> &mut Command,
) -> Vec<RedisRow> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .arg("--csv")
        .stdin(Stdio::null());
    let out = place(&mut cmd).output().expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<RedisRow> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(|f| f.trim_matches('"')).collect();
            (f.len() == 8).then_some(())?;
            Some(RedisRow {
                test: f[0].to_string(),
                rps: f[1].parse().ok()?,
                p50_ms: f[4].parse().ok()?,
                p99_ms: f[6].parse().ok()?,
            })
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "redis-benchmark printed no results:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rows
}

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
}

/// `wrk -t1 -c CONNS -d SECS --latency http://addr/path`.
pub fn wrk(addr: SocketAddr, conns: usize, secs: f64, path: &str) -> WrkResult {
    let out = Command::new("wrk")
        .args(["-t1", "-c", &conns.to_string(), "-d"])
        .arg(format!("{secs}s"))
        .args(["--latency", "--timeout", "10s"])
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = WrkResult::default();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => r.p50_ms = wrk_ms(v),
            ["99%", v] => r.p99_ms = wrk_ms(v),
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    assert!(
        r.requests > 0,
        "wrk printed no result:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r
}

/// A wrk latency (`523.00us`, `1.20ms`, `2.00s`) in milliseconds.
fn wrk_ms(v: &str) -> f64 {
    let (num, scale) = if let Some(x) = v.strip_suffix("us") {
        (x, 1e-3)
    } else if let Some(x) = v.strip_suffix("ms") {
        (x, 1.0)
    } else if let Some(x) = v.strip_suffix('s') {
        (x, 1e3)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(0.0) * scale
}
