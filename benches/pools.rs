//! Pool benchmarks, each next to a baseline measured in the same run.
//!
//! * `threadpool apply round trip`: one `ThreadPool::apply` of a trivial
//!   closure at a time, from a coroutine (target <= 10 us), vs a hand-made
//!   round trip to a std thread over two `std::sync::mpsc` channels.
//! * `processpool tiny tasks`: throughput of `ProcessPool(2)` for tiny
//!   tasks (`x * x`), as `apply_async` one task per item and as `map`, vs
//!   Python's `multiprocessing.Pool(2)` doing the same (`apply_async` and
//!   `map`), run as a `python3` subprocess (target >= 10x).
//! * `cpu-bound speedup`: 8 CPU-heavy tasks serially in this process vs on
//!   `ProcessPool(2)` (target >= 1.8x on 2 idle cores).
//!
//! Every figure is the best of three runs, for moss and for Python alike
//! (the machine may be shared).
//!
//! Run: `cargo bench --bench pools` (about 20 s).

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use moss::pool::{ProcessPool, ThreadPool};

const ROUND_TRIPS: u32 = 20_000;
const TINY: u64 = 20_000;
const MAP_ITEMS: u64 = 200_000;

fn square(x: u64) -> u64 {
    x * x
}

/// About 100-200 ms of integer work, not optimizable away.
fn heavy(seed: u64) -> u64 {
    let mut x = seed;
    for i in 0..60_000_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i) ^ (x >> 29);
    }
    std::hint::black_box(x)
}

fn per_op(d: Duration, n: u64) -> String {
    format!("{:.2} us/op", d.as_secs_f64() * 1e6 / n as f64)
}

fn per_sec(d: Duration, n: u64) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn row(name: &str, value: &str) {
    println!("{name:<58} {value}");
}

/// The best of three runs of `f` (the machine may be shared).
fn best_of_3(mut f: impl FnMut() -> Duration) -> Duration {
    (0..3).map(|_| f()).min().expect("three runs")
}

fn threadpool_round_trip() {
    let pool = ThreadPool::new(1);
    pool.apply(|| ()).unwrap(); // start the thread
    let d = best_of_3(|| {
        let p = pool.clone();
        moss::spawn(move || {
            let t = Instant::now();
            for i in 0..ROUND_TRIPS {
                std::hint::black_box(p.apply(move || i + 1).unwrap());
            }
            t.elapsed()
        })
        .join()
        .unwrap()
    });
    row(
        "ThreadPool::apply round trip, from a coroutine",
        &per_op(d, ROUND_TRIPS as u64),
    );

    let d = best_of_3(|| {
        let t = Instant::now();
        for i in 0..ROUND_TRIPS {
            std::hint::black_box(pool.apply(move || i + 1).unwrap());
        }
        t.elapsed()
    });
    row(
        "ThreadPool::apply round trip, from the root",
        &per_op(d, ROUND_TRIPS as u64),
    );

    let (tx, rx) = mpsc::channel::<u32>();
    let (back_tx, back_rx) = mpsc::channel::<u32>();
    let th = std::thread::spawn(move || {
        for v in rx {
            back_tx.send(v + 1).unwrap();
        }
    });
    let d = best_of_3(|| {
        let t = Instant::now();
        for i in 0..ROUND_TRIPS {
            tx.send(i).unwrap();
            std::hint::black_box(back_rx.recv().unwrap());
        }
        t.elapsed()
    });
    row(
        "baseline: std mpsc round trip to a std thread",
        &per_op(d, ROUND_TRIPS as u64),
    );
    drop(tx);
    th.join().unwrap();
    pool.close();
    pool.join();
}

const PYTHON: &str = r#"
import multiprocessing as mp, time, sys
def square(x):
    return x * x
if __name__ == "__main__":
    n, m = int(sys.argv[1]), int(sys.argv[2])
    with mp.get_context("fork").Pool(2) as p:
        p.apply(square, (1,))
        a = b = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            rs = [p.apply_async(square, (i,)) for i in range(n)]
            s = sum(r.get() for r in rs)
            a = min(a, time.perf_counter() - t)
            t = time.perf_counter()
            s2 = sum(p.map(square, range(m)))
            b = min(b, time.perf_counter() - t)
    print(a, b)
"#;

fn processpool_tiny() {
    let pool = ProcessPool::new(2).unwrap();
    pool.apply(square, 1).unwrap();
    let apply_async = best_of_3(|| {
        let t = Instant::now();
        let rs: Vec<_> = (0..TINY)
            .map(|i| pool.apply_async(square, i, |_| {}))
            .collect();
        let sum: u64 = rs.iter().map(|r| r.take().unwrap()).sum();
        let d = t.elapsed();
        assert_eq!(sum, (0..TINY).map(square).sum::<u64>());
        d
    });
    let map = best_of_3(|| {
        let t = Instant::now();
        let out = pool.map(square, 0..MAP_ITEMS).unwrap();
        let d = t.elapsed();
        assert_eq!(out.len() as u64, MAP_ITEMS);
        d
    });
    pool.close();
    pool.join();

    let moss_async = per_sec(apply_async, TINY);
    let moss_map = per_sec(map, MAP_ITEMS);
    row(
        "ProcessPool(2) apply_async tiny tasks",
        &format!("{moss_async:.0} tasks/s"),
    );
    row(
        "ProcessPool(2) map tiny tasks",
        &format!("{moss_map:.0} items/s"),
    );

    let py = Command::new("python3")
        .args(["-c", PYTHON, &TINY.to_string(), &MAP_ITEMS.to_string()])
        .output();
    match py {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            let v: Vec<f64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [a, b] = v[..] {
                let py_async = TINY as f64 / a;
                let py_map = MAP_ITEMS as f64 / b;
                row(
                    "baseline: python3 multiprocessing.Pool(2) apply_async",
                    &format!("{py_async:.0} tasks/s"),
                );
                row(
                    "baseline: python3 multiprocessing.Pool(2) map",
                    &format!("{py_map:.0} items/s"),
                );
                row(
                    "  moss / python, apply_async",
                    &format!("{:.1}x", moss_async / py_async),
                );
                row(
                    "  moss / python, map",
                    &format!("{:.1}x", moss_map / py_map),
                );
            }
        }
        Ok(o) => row(
            "python3 baseline failed",
            &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => row("python3 baseline not run", &e.to_string()),
    }
}

fn cpu_speedup() {
    // Best of three for each side: the machine may be shared.
    let seeds: Vec<u64> = (1..=8).collect();
    let pool = ProcessPool::new(2).unwrap();
    let mut serial_t = Duration::MAX;
    let mut pool_t = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let serial: Vec<u64> = seeds.iter().map(|&s| heavy(s)).collect();
        serial_t = serial_t.min(t.elapsed());
        let t = Instant::now();
        let rs: Vec<_> = seeds
            .iter()
            .map(|&s| pool.apply_async(heavy, s, |_| {}))
            .collect();
        let parallel: Vec<u64> = rs.iter().map(|r| r.take().unwrap()).collect();
        pool_t = pool_t.min(t.elapsed());
        assert_eq!(serial, parallel);
    }
    pool.close();
    pool.join();
    row(
        "8 CPU-bound tasks, serial in this process (best of 3)",
        &format!("{:.0} ms", serial_t.as_secs_f64() * 1e3),
    );
    row(
        "8 CPU-bound tasks, ProcessPool(2) (best of 3)",
        &format!("{:.0} ms", pool_t.as_secs_f64() * 1e3),
    );
    row(
        "  speedup",
        &format!("{:.2}x", serial_t.as_secs_f64() / pool_t.as_secs_f64()),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too,
    // with no arguments: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pools bench: run with `cargo bench --bench pools`");
        return;
    }
    println!("{:<58} value", "benchmark");
    threadpool_round_trip();
    processpool_tiny();
    cpu_speedup();
}
