//! The load generator: `conns` connections, each a moss coroutine that sends
//! `pipeline` messages of `size` bytes, reads all their echoes back, checks
//! every byte, and records the round-trip time of each batch (one sample per
//! message). One thread, one hub.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::net::TcpStream;

/// What one load run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Echoed and verified messages in the measured window.
    pub msgs: u64,
    /// Echoed and verified messages in the whole run (warm-up included).
    pub total_msgs: u64,
    /// Length of the measured window.
    pub secs: f64,
    /// Round-trip latency per message, nanoseconds, sorted.
    pub lat_ns: Vec<u64>,
    /// Connect failures, I/O errors and byte mismatches.
    pub errors: u64,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
    pub fn pct(&self, p: f64) -> Duration {
        if self.lat_ns.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat_ns.len() as f64 * p) as usize).min(self.lat_ns.len() - 1);
        Duration::from_nanos(self.lat_ns[i])
    }
}

/// Load parameters.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub conns: usize,
    pub size: usize,
    pub pipeline: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

struct Shared {
    measure_from: Instant,
    end: Instant,
    msgs: u64,
    total_msgs: u64,
    lat: Vec<u64>,
    errors: u64,
}

/// The byte at offset `i` of message `seq` of connection `conn`.
fn byte(conn: usize, seq: u64, i: usize) -> u8 {
    (conn as u64 ^ seq.wrapping_mul(0x9e37_79b9) ^ (i as u64).wrapping_mul(131)) as u8
}

fn client(addr: SocketAddr, conn: usize, load: Load, sh: Rc<RefCell<Shared>>) {
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load: connect {conn}: {e}");
            sh.borrow_mut().errors += 1;
            return;
        }
    };
    let _ = s.set_nodelay(true);
    let (measure_from, end) = {
        let b = sh.borrow();
        (b.measure_from, b.end)
    };
    let batch = load.size * load.pipeline;
    let mut out = vec![0u8; batch];
    let mut back = vec![0u8; batch];
    let mut seq = 0u64;
    let mut lat = Vec::new();
    let mut msgs = 0u64;
    let mut total_msgs = 0u64;
    let mut errors = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        for m in 0..load.pipeline {
            for i in 0..load.size {
                out[m * load.size + i] = byte(conn, seq + m as u64, i);
            }
        }
        if let Err(e) = s.write_all(&out).and_then(|()| s.read_exact(&mut back)) {
            eprintln!("load: connection {conn}: {e}");
            errors += 1;
            break;
        }
        let t1 = Instant::now();
        if back != out {
            errors += 1;
            eprintln!("load: connection {conn}: echoed bytes differ");
            break;
        }
        seq += load.pipeline as u64;
        total_msgs += load.pipeline as u64;
        if t0 >= measure_from {
            msgs += load.pipeline as u64;
            let ns = (t1 - t0).as_nanos() as u64;
            lat.extend(std::iter::repeat_n(ns, load.pipeline));
        }
    }
    let mut b = sh.borrow_mut();
    b.msgs += msgs;
    b.total_msgs += total_msgs;
    b.errors += errors;
    b.lat.extend(lat);
}

/// Runs `load` against `addr` on the calling thread's hub.
pub fn run(addr: SocketAddr, load: Load) -> LoadResult {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let sh = Rc::new(RefCell::new(Shared {
        measure_from,
        end,
        msgs: 0,
        total_msgs: 0,
        lat: Vec::new(),
        errors: 0,
    }));
    let hs: Vec<_> = (0..load.conns)
        .map(|c| {
            let sh = sh.clone();
            moss::spawn(move || client(addr, c, load, sh))
        })
        .collect();
    for r in moss::join_all(hs) {
        if r.is_err() {
            sh.borrow_mut().errors += 1;
        }
    }
    let mut sh = sh.borrow_mut();
    let mut lat = std::mem::take(&mut sh.lat);
    lat.sort_unstable();
    LoadResult {
        msgs: sh.msgs,
        total_msgs: sh.total_msgs,
        secs: load.duration.as_secs_f64(),
        lat_ns: lat,
        errors: sh.errors,
    }
}

/// Opens `n` connections, echoes one message on each while all are open,
/// and closes them: the "hold N connections on one hub" check. Returns the
/// number of connections that echoed correctly.
pub fn hold(addr: SocketAddr, n: usize) -> (usize, Duration) {
    let t = Instant::now();
    let ok = Rc::new(RefCell::new(0usize));
    let gate = Rc::new(RefCell::new(0usize));
    let hs: Vec<_> = (0..n)
        .map(|c| {
            let (ok, gate) = (ok.clone(), gate.clone());
            moss::spawn(move || {
                let s = TcpStream::connect(addr);
                // Wait until every connection is open (or failed), then echo.
                *gate.borrow_mut() += 1;
                while *gate.borrow() < n {
                    moss::sleep(Duration::from_millis(5));
                }
                let msg = [byte(c, 0, 0), byte(c, 0, 1), byte(c, 0, 2), byte(c, 0, 3)];
                let mut b = [0u8; 4];
                let echoed = s.and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.write_all(&msg)?;
                    s.read_exact(&mut b)?;
                    Ok(s)
                });
                if let Ok(s) = &echoed
                    && b == msg
                {
                    let _ = s;
                    *ok.borrow_mut() += 1;
                }
                // Stay open until all have echoed.
                *gate.borrow_mut() += 1;
                while *gate.borrow() < 2 * n {
                    moss::sleep(Duration::from_millis(5));
                }
                drop(echoed);
            })
        })
        .collect();
    moss::join_all(hs);
    let ok = *ok.borrow();
    (ok, t.elapsed())
}
