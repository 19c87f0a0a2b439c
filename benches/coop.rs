//! The cost of the fairness budget (`moss::coop`) and of the blocked-hub
//! monitor's two stores per switch (`moss::monitor`) on paths that never
//! park for long: a switch between two coroutines, an echo over a socket pair between two coroutines of one hub
//! (each message parks once on each side, so the budget never runs out and
//! what it costs is its decrement), and the uncontended fast paths of
//! `Mutex::lock` and `Queue::put`/`get` (which spend a unit each and yield
//! every `BUDGET` calls when another coroutine is ready).
//!
//! Run: `cargo bench --bench coop` (times per operation). For instruction
//! counts, which do not swing with the machine's load, run one stage a
//! fixed number of times under callgrind:
//!
//! ```sh
//! cargo bench --bench coop --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/deps/coop-HASH echo 100000
//! ```
//!
//! and compare with the same run at a different count (the difference
//! divided by the difference in messages is the cost of one message).

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[path = "common/stages.rs"]
mod stages;

/// `n` round trips of a 64-byte message between a client coroutine and an
/// echo coroutine of the calling thread's hub.
fn echo(n: u64) -> Duration {
    let (mut a, mut b) = moss::net::UnixStream::pair().unwrap();
    let server = moss::spawn(move || {
        let mut buf = [0u8; 64];
        while b.read_exact(&mut buf).is_ok() {
            b.write_all(&buf).unwrap();
        }
    });
    let client = moss::spawn(move || {
        let mut msg = [7u8; 64];
        let t = Instant::now();
        for i in 0..n {
            msg[0] = i as u8;
            a.write_all(&msg).unwrap();
            a.read_exact(&mut msg).unwrap();
            assert_eq!(msg[0], i as u8);
        }
        t.elapsed()
    });
    let d = client.join().unwrap();
    server.join().unwrap();
    d
}

/// `n` uncontended lock+unlock of a moss Mutex in a coroutine.
fn mutex(n: u64) -> Duration {
    moss::spawn(move || {
        let m = moss::sync::Mutex::new(0u64);
        let t = Instant::now();
        for _ in 0..n {
            *black_box(&m).lock() += 1;
        }
        assert_eq!(*m.lock(), n);
        t.elapsed()
    })
    .join()
    .unwrap()
}

/// `n` put+get pairs on a moss Queue in a coroutine.
fn queue(n: u64) -> Duration {
    moss::spawn(move || {
        let q = moss::sync::Queue::unbounded();
        let t = Instant::now();
        for i in 0..n {
            q.put(i);
            assert_eq!(black_box(&q).get(), i);
        }
        t.elapsed()
    })
    .join()
    .unwrap()
}

/// A stage: runs its operation `n` times, returning the time taken.
type Stage = fn(u64) -> Duration;

const STAGES: [(&str, Stage, u64); 4] = [
    (
        "yield_now, 2 coroutines taking turns",
        stages::switch,
        2_000_000,
    ),
    (
        "echo round trip (64 B, socket pair, one hub)",
        echo,
        200_000,
    ),
    ("Mutex lock+unlock (uncontended)", mutex, 5_000_000),
    ("Queue put+get (one coroutine)", queue, 5_000_000),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `coop STAGE N` (for callgrind): that stage, N times, once.
    if let [stage, n] = &args[..]
        && let Ok(n) = n.parse::<u64>()
    {
        let f = match stage.as_str() {
            "echo" => echo,
            "switch" => stages::switch,
            "mutex" => mutex,
            "queue" => queue,
            _ => panic!("unknown stage {stage}: switch, echo, mutex or queue"),
        };
        black_box(f(n));
        return;
    }
    println!("moss::coop::BUDGET = {}", moss::coop::BUDGET);
    for (name, f, n) in STAGES {
        f(n / 10);
        let mut best = Duration::MAX;
        for _ in 0..5 {
            best = best.min(f(n));
        }
        println!(
            "{name:48} {:8.1} ns/op (best of 5)",
            best.as_nanos() as f64 / n as f64
        );
    }
}
