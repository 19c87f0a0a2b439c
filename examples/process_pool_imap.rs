//! multiprocessing.Pool in moss, the rest of it: imap, imap_unordered,
//! map_async with callbacks, starmap, chunk sizes, an initializer and
//! maxtasksperchild.
//!
//! Python:
//!
//! ```text
//! from multiprocessing import Pool
//!
//! def init():
//!     ...                                   # once per worker
//!
//! def work(n): ...
//!
//! p = Pool(4, initializer=init, maxtasksperchild=2)
//! for r in p.imap(work, range(8)):          # in order, as soon as each is ready
//!     print(r)
//! for r in p.imap_unordered(work, range(8)):  # in the order they finish
//!     print(r)
//! p.map_async(work, range(8), callback=show, error_callback=oops)
//! p.starmap(pow, [(2, 10), (3, 3)])
//! p.close()
//! p.join()
//! ```
//!
//! moss: `ProcessPool::builder(4).initializer(init).max_tasks_per_child(2)
//! .build()`, then `imap` / `imap_unordered` (iterators of `Result`s, which
//! take the input lazily), `map_async(f, items, callback)` and
//! `map_async_with(.., error_callback)`, `map` over tuples for `starmap`,
//! `map_chunked` / `.chunksize(n)` for Python's `chunksize`. Tasks are plain
//! `fn(A) -> R` (Python's target function; `A` is its `args`).
//!
//! Run: `cargo run --example process_pool_imap`

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moss::pool::{PoolError, ProcessPool};

/// Set by the initializer, in each worker.
static WORKER_NO: AtomicU32 = AtomicU32::new(0);

fn init() {
    WORKER_NO.store(std::process::id() % 100, Ordering::SeqCst);
}

/// "Work" that takes longer for small numbers, so they finish last.
fn work(n: u64) -> String {
    std::thread::sleep(Duration::from_millis(40 * (8 - n)));
    format!(
        "{n}² = {} (worker {}, pid {})",
        n * n,
        WORKER_NO.load(Ordering::SeqCst),
        std::process::id()
    )
}

fn check(n: i32) -> i32 {
    assert!(n >= 0, "negative input {n}");
    n
}

fn power((base, exp): (u64, u32)) -> u64 {
    base.pow(exp)
}

fn main() -> std::io::Result<()> {
    let pool = ProcessPool::builder(4)
        .initializer(init)
        .max_tasks_per_child(2) // each worker is replaced after two tasks
        .build()?;

    let t = Instant::now();
    println!("imap: in input order, each as soon as it (and those before it) is done");
    for r in pool.imap(work, 0..8) {
        println!("  {:>4} ms  {}", t.elapsed().as_millis(), r.expect("task"));
    }

    let t = Instant::now();
    println!("imap_unordered: in the order they finish");
    for r in pool.imap_unordered(work, 0..8) {
        println!("  {:>4} ms  {}", t.elapsed().as_millis(), r.expect("task"));
    }

    // map_async: the callback runs in this process (on this thread's hub)
    // once every result is there; the AsyncResult holds them too.
    let result = pool.map_async(work, [6, 7], |all: &Vec<String>| {
        println!("map_async callback got {} results", all.len())
    });
    println!("map_async returned at once; waiting for it...");
    println!("  {:?}", result.get().map(|v| v.len()));

    // error_callback: a task that panics.
    let failed = pool.map_async_with(
        check,
        [1, 2, -3],
        |_| println!("not reached"),
        |e: &PoolError| println!("error_callback: {e}"),
    );
    println!("  map_async_with result: {:?}", failed.get().map(|_| ()));

    // starmap: the function takes a tuple; map is starmap.
    println!(
        "starmap: {:?}",
        pool.map(power, [(2, 10), (3, 3), (10, 2)]).expect("map")
    );

    // chunksize: fewer, bigger tasks.
    let squares = pool
        .map_chunked(power, (0..1000).map(|n| (n, 2)), 100)
        .expect("map");
    println!(
        "map_chunked(.., 100): {} results, last {}",
        squares.len(),
        squares[999]
    );

    pool.close();
    pool.join();
    println!("pool closed and joined");
    Ok(())
}
