//! Memory per coroutine: keeps N coroutines (default 1,000,000) alive, each
//! blocked in a sleep, on default-size guarded stacks, and reports resident
//! memory per coroutine from /proc/self/status, with the number of mappings
//! (the default vm.max_map_count is 65530) and page-table memory.
//!
//! Run: `cargo bench --bench memory` (or `-- 200000` for another count).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
    let rss0 = status_kib("VmRSS:");
    let pte0 = status_kib("VmPTE:");
    let maps0 = map_count();
    let t = Instant::now();
    let started = Rc::new(Cell::new(0usize));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let started = started.clone();
        handles.push(moss::spawn(move || {
            started.set(started.get() + 1);
            moss::sleep(Duration::from_secs(3600));
        }));
    }
    let spawned = t.elapsed();
    while started.get() < n {
        moss::sleep(Duration::from_millis(10));
    }
    let all_running = t.elapsed();
    let rss = status_kib("VmRSS:") - rss0;
    let pte = status_kib("VmPTE:") - pte0;
    let maps = map_count();
    println!("moss memory benchmark: {n} coroutines alive, each parked in sleep");
    println!(
        "  stack size (virtual)     {} KiB + 4 KiB guard",
        moss::DEFAULT_STACK_SIZE / 1024
    );
    println!("  vm.max_map_count         {}", max_maps.trim());
    println!("  mappings                 {maps0} -> {maps}");
    println!(
        "  spawn                    {:.0} ns each",
        spawned.as_nanos() as f64 / n as f64
    );
    println!("  all started after        {all_running:.2?}");
    println!(
        "  RSS growth               {} MiB = {:.2} KiB per coroutine",
        rss / 1024,
        rss as f64 / n as f64
    );
    println!(
        "  page tables (VmPTE)      {} MiB = {:.2} KiB per coroutine",
        pte / 1024,
        pte as f64 / n as f64
    );
    // Exit without unwinding a million coroutines.
    std::process::exit(0);
}
