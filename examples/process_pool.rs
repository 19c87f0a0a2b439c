//! multiprocessing.Pool in moss: blocking apply, apply_async with a
//! callback, map, close and join.
//!
//! Run: `cargo run --example process_pool`

use std::time::{Duration, Instant};

use moss::pool::ProcessPool;

/// A task: a plain function of serde-serializable arguments.
fn slow_square(x: u64) -> (u32, u64) {
    std::thread::sleep(Duration::from_millis(100));
    (std::process::id(), x * x)
}

fn main() -> std::io::Result<()> {
    let pool = ProcessPool::new(4)?; // four worker processes
    println!("workers: {:?}", pool.pids());

    // Blocking: apply waits for its result (only the caller waits).
    let (pid, v) = pool.apply(slow_square, 3).expect("task failed");
    println!("apply: 3^2 = {v} (computed in pid {pid})");

    // Non-blocking: queue 8 tasks, a callback receives each result.
    let t = Instant::now();
    let results: Vec<_> = (1..=8u64)
        .map(|i| {
            pool.apply_async(slow_square, i, move |(pid, v)| {
                println!("callback: {i}^2 = {v} from pid {pid}");
            })
        })
        .collect();
    pool.close(); // no more tasks
    pool.join(); // wait for the tasks (and their callbacks)
    println!("8 tasks of 100 ms on 4 workers took {:?}", t.elapsed());
    let sum: u64 = results
        .iter()
        .map(|r| r.get().expect("task failed").1)
        .sum();
    println!("sum of squares 1..=8 = {sum}");

    // map keeps input order.
    let pool = ProcessPool::new(2)?;
    let squares: Vec<u64> = pool.map(|x: u64| x * x, 1..=10).expect("map failed");
    println!("map: {squares:?}");
    pool.close();
    pool.join();
    Ok(())
}
