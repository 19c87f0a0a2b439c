//! Core micro-benchmarks, each next to an in-run baseline.
//!
//! * `switch`: raw corosensei resume+suspend (the floor) vs `moss::yield_now`
//!   between two coroutines (per yield, i.e. one coroutine-to-coroutine switch).
//! * `spawn_join`: `moss::spawn(..).join()` one at a time vs a raw corosensei
//!   coroutine created on a fresh default stack and run to completion, and vs
//!   `std::thread::spawn(..).join()`.
//! * `spawn_1m_join_all`: spawn 1,000,000 coroutines, then join them all
//!   (reported per coroutine).
//!
//! Run: `cargo bench --bench core`.
//!
//! Instructions instead of nanoseconds (under callgrind, see
//! `benches/common/count.rs`): `MOSS_BENCH_COUNT=100000 cargo bench --bench
//! core` prints, per operation, the raw corosensei round trip, `yield_now`
//! between 2 coroutines (per yield), `spawn`+`join` and a `Queue(1)`
//! hand-off between 2 coroutines of one hub.

#[path = "common/count.rs"]
mod count;
#[path = "common/stages.rs"]
mod stages;

use std::hint::black_box;
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult, Yielder};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn switch(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("corosensei resume+suspend (baseline)", |b| {
        let mut co = Coroutine::new(|y, ()| {
            loop {
                y.suspend(());
            }
        });
        b.iter(|| {
            let r: CoroutineResult<(), ()> = co.resume(());
            black_box(r);
        })
    });
    g.bench_function("moss yield_now, 2 coroutines", |b| {
        b.iter_custom(|iters| stages::switch(iters.div_ceil(2)))
    });
    g.finish();
}

fn spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_join");
    g.throughput(Throughput::Elements(1));
    g.bench_function("moss spawn+join", |b| {
        b.iter(|| moss::spawn(|| black_box(1u64)).join())
    });
    g.bench_function("corosensei new stack+run (baseline)", |b| {
        b.iter(|| {
            let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| black_box(1u64));
            black_box(co.resume(()))
        })
    });
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("std thread spawn+join (baseline)", |b| {
        b.iter(|| std::thread::spawn(|| black_box(1u64)).join())
    });
    g.finish();
}

fn spawn_many(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut g = c.benchmark_group("spawn_1m_join_all");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(N));
    g.bench_function("moss spawn 1e6 then join_all", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let hs: Vec<_> = (0..N).map(|i| moss::spawn(move || black_box(i))).collect();
                let r = moss::join_all(hs);
                total += t.elapsed();
                black_box(r);
            }
            total
        })
    });
    g.finish();
}

/// `MOSS_BENCH_COUNT=<n>`: each row `n` times, for instruction counts.
fn count_rows(n: u64) {
    let mut co = Coroutine::new(|y, ()| {
        loop {
            y.suspend(());
        }
    });
    count::counted("corosensei resume+suspend (baseline)", n, n, || {
        let r: CoroutineResult<(), ()> = co.resume(());
        black_box(r);
    });
    // One row call: 2 coroutines, n yields each (the spawns and joins are
    // counted too, a few hundred instructions over 2n yields).
    count::counted("moss yield_now, 2 coroutines (per yield)", 2 * n, 1, || {
        stages::switch(n);
    });
    count::counted("moss spawn+join", n, n, || {
        black_box(moss::spawn(|| black_box(1u64)).join().unwrap());
    });
    count::counted(
        "moss Queue(1) hand-off, 2 coroutines of one hub",
        n,
        1,
        || {
            let q = std::rc::Rc::new(moss::sync::Queue::new(1));
            let q2 = q.clone();
            let producer = moss::spawn(move || (0..n).for_each(|i| q2.put(i)));
            let consumer = moss::spawn(move || {
                (0..n).for_each(|_| {
                    black_box(q.get());
                })
            });
            producer.join().unwrap();
            consumer.join().unwrap();
        },
    );
}

fn count_or_bench(_: &mut Criterion) {
    let Some(n) = count::count_mode() else {
        return;
    };
    if !count::callgrind_table("core") {
        count_rows(n);
    }
    std::process::exit(0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = count_or_bench, switch, spawn_join, spawn_many
}
criterion_main!(benches);
