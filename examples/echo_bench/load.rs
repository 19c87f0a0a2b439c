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

/// The phases of [`run_counted`], one barrier round each.
struct Gates {
    /// Every party (the clients and the controller).
    barrier: moss::sync::Barrier,
    warm_end: Instant,
    /// Set by the controller once the counters are zeroed.
    end: std::cell::Cell<Instant>,
}

/// One connection of [`run_counted`]: echoes until the warm-up ends (at
/// least once), waits at the barrier (twice: all idle, then counters
/// zeroed), echoes until the end, waits again (twice: all idle, then
/// counters read), then closes. Returns the messages echoed between the middle barriers.
fn counted_client(addr: SocketAddr, conn: usize, size: usize, g: &Gates) -> Result<u64, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {conn}: {e}"));
    let mut s = s.and_then(|s| {
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        // A stuck server fails the run instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    });
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut seq = 0u64;
    // At least one message each time, so every connection has been
    // accepted and served before the counters are zeroed.
    let mut echo_until = |s: &mut Result<TcpStream, String>, until: Instant| -> u64 {
        let mut n = 0;
        while let Ok(st) = s
            && (n == 0 || Instant::now() < until)
        {
            for (i, b) in out.iter_mut().enumerate() {
                *b = byte(conn, seq, i);
            }
            let r = st.write_all(&out).and_then(|()| st.read_exact(&mut back));
            if let Err(e) = r {
                *s = Err(format!("connection {conn}: {e}"));
            } else if back != out {
                *s = Err(format!("connection {conn}: echoed bytes differ"));
            } else {
                seq += 1;
                n += 1;
            }
        }
        n
    };
    echo_until(&mut s, g.warm_end);
    g.barrier.wait();
    g.barrier.wait();
    let n = echo_until(&mut s, g.end.get());
    g.barrier.wait();
    g.barrier.wait();
    s.map(|_| n)
}

/// Runs `conns` connections of one `size`-byte message at a time against
/// `addr` for `load.warmup`, then, with every connection open and idle,
/// calls `zero`; runs them for `load.duration`, and with every connection
/// idle again (still open) calls `dump`. Returns the messages echoed in
/// between (each verified) and the errors. For counting what a message
/// costs the server exactly: nothing is in flight at either call.
pub fn run_counted(
    addr: SocketAddr,
    load: Load,
    zero: impl FnOnce(),
    dump: impl FnOnce(),
) -> (u64, u64) {
    let warm_end = Instant::now() + load.warmup;
    let g = Rc::new(Gates {
        barrier: moss::sync::Barrier::new(load.conns + 1),
        warm_end,
        end: std::cell::Cell::new(warm_end),
    });
    let hs: Vec<_> = (0..load.conns)
        .map(|c| {
            let g = g.clone();
            moss::spawn(move || counted_client(addr, c, load.size, &g))
        })
        .collect();
    g.barrier.wait();
    zero();
    g.end.set(Instant::now() + load.duration);
    g.barrier.wait();
    g.barrier.wait();
    dump();
    g.barrier.wait();
    let (mut msgs, mut errors) = (0, 0);
    for r in moss::join_all(hs) {
        match r {
            Ok(Ok(n)) => msgs += n,
            Ok(Err(e)) => {
                eprintln!("load: {e}");
                errors += 1
            }
            Err(_) => errors += 1,
        }
    }
    (msgs, errors)
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
