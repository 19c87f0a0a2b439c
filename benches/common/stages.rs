//! Stages shared by the benchmarks (a bench includes this file with
//! `#[path = "common/stages.rs"] mod stages;`).

use std::time::{Duration, Instant};

/// `n` `yield_now` of each of two coroutines of the calling thread's hub,
/// taking turns: the switch path and nothing else. Returns the wall time.
pub fn switch(n: u64) -> Duration {
    let t = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            moss::spawn(move || {
                for _ in 0..n {
                    moss::yield_now();
                }
            })
        })
        .collect();
    moss::join_all(hs);
    t.elapsed()
}
