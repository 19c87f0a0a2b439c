//! A Redis-protocol key-value server on moss: RESP2 with pipelining, the
//! string commands most clients use, Redis's error replies, and expiry.
//!
//! ```sh
//! cargo run --release --example kv_server -- --port 6380 --threads 2
//! redis-cli -p 6380 set greeting hello
//! redis-benchmark -p 6380 -t ping,set,get -n 200000 -c 50 -P 16
//! ```
//!
//! Each of `--threads N` hub threads runs a `StreamServer` (a coroutine per
//! connection) on its own `SO_REUSEPORT` listener of the same port, and all
//! share one store (`store.rs`). `--port 0` picks a free port; the address
//! is printed either way.
//!
//! # How the store is shared
//!
//! One store for all hubs, split into `--shards` `HashMap`s each behind a
//! `std::sync::Mutex` (`store.rs` says why a thread lock and not a
//! coroutine one). Per-hub private maps would need every command on a
//! foreign key to hop to its owner thread, a cross-thread wake-up per
//! command where a lock costs tens of nanoseconds.
//!
//! The shard count was chosen by `cargo run --release --example
//! service_bench -- --only shards` on this project's 2-core machine:
//!
//! * the store alone, 2 pinned threads doing random GETs and SETs: one
//!   shard cost the least CPU per operation (119 ns, against 135 ns for 8
//!   shards and 166 ns for 64: one map and one lock stay in cache);
//! * two hubs under `redis-benchmark --threads 2 -P 16 -r 1000000`: no
//!   difference between 1, 8 and 64 shards that rose above run-to-run noise
//!   (the machine is shared; the rounds swung by 2x).
//!
//! So one hub gets one shard (the default `--shards 0` means: 1 for one
//! thread), and several hubs get 16 per hub: the measurements could not
//! show contention on 2 cores, but nothing bounds it on more cores except
//! splitting the lock, and splitting cost little here.
//!
//! Flags: `--port N` (6380; 0 = any), `--threads N` (1), `--shards N`
//! (0: 1 for one thread, 16 per thread otherwise), `--max-bulk BYTES`, `--max-query BYTES` (64 MiB, 128 MiB: an
//! eighth of Redis's limits), `--timeout SECS` (0: idle clients stay).

mod commands;
mod conn;
#[path = "../common/linger.rs"]
mod linger;
#[path = "../common/listen.rs"]
mod listen;
mod resp;
mod store;

use std::sync::Arc;
use std::time::Duration;

use listen::{Args, Listeners};

const USAGE: &str = "[--port 6380] [--threads 1] [--shards 0] [--max-bulk BYTES] \
                     [--max-query BYTES] [--timeout SECS]";

fn main() {
    let args = Args::parse("kv_server", USAGE);
    args.only(&[
        "port",
        "threads",
        "shards",
        "max-bulk",
        "max-query",
        "timeout",
    ]);
    let port: u16 = args.get("port", 6380);
    let threads = args.get("threads", 1usize).max(1);
    let shards = match args.get("shards", 0usize) {
        0 if threads == 1 => 1,
        0 => 16 * threads,
        n => n,
    };
    let defaults = conn::Config::default();
    let timeout: u64 = args.get("timeout", 0);
    let cfg = conn::Config {
        max_bulk: args.get("max-bulk", defaults.max_bulk),
        max_query: args.get("max-query", defaults.max_query),
        idle_timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
    };
    let listeners = Listeners::bind(port).unwrap_or_else(|e| {
        eprintln!("kv_server: cannot bind port {port}: {e}");
        std::process::exit(1)
    });
    let store = Arc::new(store::Store::new(shards));
    println!(
        "kv_server: listening on {}, {threads} thread(s), {} shard(s)",
        listeners.addr(),
        store.shard_count()
    );
    moss::run_per_core(threads, move |hub| {
        let l = listeners.take().unwrap_or_else(|e| {
            eprintln!("kv_server: cannot bind {}: {e}", listeners.addr());
            std::process::exit(1)
        });
        let server = conn::server(l, store.clone(), cfg).unwrap_or_else(|e| {
            eprintln!("kv_server: {e}");
            std::process::exit(1)
        });
        if let Err(e) = conn::run(&server, &store, hub, threads) {
            eprintln!("kv_server: {e}");
            std::process::exit(1)
        }
    });
}
