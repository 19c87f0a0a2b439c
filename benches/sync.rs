//! `moss::sync` micro-benchmarks, each next to an in-run baseline.
//!
//! * `mutex_uncontended`: lock + unlock of `moss::sync::Mutex` vs
//!   `std::sync::Mutex`, from one thread, nobody else around.
//! * `threading_uncontended`: the same for `RLock` (first entry, and
//!   re-entry while held), `RwLock` read and write vs `std::sync::RwLock`,
//!   `OnceCell::get` vs `std::sync::OnceLock::get`, and a `notify_one`
//!   nobody waits for vs `std::sync::Condvar`'s.
//! * `pingpong_one_hub`: two coroutines of one hub bounce a value through two
//!   capacity-1 queues (`Queue`, and `bounded(1)` channels); reported per
//!   hand-off (a put that wakes the blocked getter, plus the switch to it).
//! * `pingpong_two_threads`: the same between two OS threads (a plain thread
//!   parks in its hub's `epoll_wait`), vs `std::sync::mpsc::sync_channel(1)`.
//! * `block_on`: `moss::block_on(std::future::ready(x))` vs
//!   `futures::executor::block_on`; and a `futures` oneshot ping-pong between
//!   two coroutines of one hub, each side waiting in `moss::block_on` (per
//!   hand-off, beside the `Queue(1)` row), vs the same two async tasks on a
//!   `futures` `LocalPool` and on a current-thread tokio runtime.
//! * `compat_tokio` (with `--features tokio`): a `moss::compat::tokio` round
//!   trip from a coroutine vs tokio's `Handle::block_on(spawn(..))` from a
//!   thread.
//!
//! Run: `cargo bench --bench sync --features tokio` (well under a minute).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::channel::oneshot;
use moss::sync::{Condvar, Mutex, OnceCell, Queue, RLock, RwLock, bounded};

fn mutex_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("mutex_uncontended");
    g.throughput(Throughput::Elements(1));
    let m = Mutex::new(0u64);
    g.bench_function("moss::sync::Mutex lock+unlock", |b| {
        b.iter(|| *black_box(&m).lock() += 1)
    });
    let s = std::sync::Mutex::new(0u64);
    g.bench_function("std::sync::Mutex lock+unlock (baseline)", |b| {
        b.iter(|| *black_box(&s).lock().unwrap() += 1)
    });
    g.finish();
}

fn threading_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("threading_uncontended");
    g.throughput(Throughput::Elements(1));
    let r = RLock::new(std::cell::Cell::new(0u64));
    g.bench_function("moss::sync::RLock lock+unlock", |b| {
        b.iter(|| {
            let g = black_box(&r).lock();
            g.set(g.get() + 1);
        })
    });
    g.bench_function("moss::sync::RLock re-entry while held", |b| {
        let _held = r.lock();
        b.iter(|| {
            let g = black_box(&r).lock();
            g.set(g.get() + 1);
        })
    });
    let l = RwLock::new(0u64);
    g.bench_function("moss::sync::RwLock read+unlock", |b| {
        b.iter(|| *black_box(&l).read())
    });
    let s = std::sync::RwLock::new(0u64);
    g.bench_function("std::sync::RwLock read+unlock (baseline)", |b| {
        b.iter(|| *black_box(&s).read().unwrap())
    });
    g.bench_function("moss::sync::RwLock write+unlock", |b| {
        b.iter(|| *black_box(&l).write() += 1)
    });
    g.bench_function("std::sync::RwLock write+unlock (baseline)", |b| {
        b.iter(|| *black_box(&s).write().unwrap() += 1)
    });
    let once = OnceCell::from(7u64);
    g.bench_function("moss::sync::OnceCell get", |b| {
        b.iter(|| *black_box(&once).get().unwrap())
    });
    let std_once = std::sync::OnceLock::from(7u64);
    g.bench_function("std::sync::OnceLock get (baseline)", |b| {
        b.iter(|| *black_box(&std_once).get().unwrap())
    });
    let cv = Condvar::new();
    g.bench_function("moss::sync::Condvar notify_one, no waiter", |b| {
        b.iter(|| black_box(&cv).notify_one())
    });
    let std_cv = std::sync::Condvar::new();
    g.bench_function("std::sync::Condvar notify_one, no waiter (baseline)", |b| {
        b.iter(|| black_box(&std_cv).notify_one())
    });
    g.finish();
}

/// `n` round trips (2n hand-offs) between two coroutines of this hub.
fn queue_pingpong_coroutines(n: u64) -> Duration {
    let (ab, ba) = (Arc::new(Queue::new(1)), Arc::new(Queue::new(1)));
    let (ab2, ba2) = (ab.clone(), ba.clone());
    let echo = moss::spawn(move || {
        for _ in 0..n {
            let v: u64 = ab2.get();
            ba2.put(v);
        }
    });
    let t = Instant::now();
    let pinger = moss::spawn(move || {
        for i in 0..n {
            ab.put(i);
            black_box(ba.get());
        }
    });
    pinger.join().unwrap();
    let el = t.elapsed();
    echo.join().unwrap();
    el
}

fn channel_pingpong_coroutines(n: u64) -> Duration {
    let (tx_ab, rx_ab) = bounded::<u64>(1);
    let (tx_ba, rx_ba) = bounded::<u64>(1);
    let echo = moss::spawn(move || {
        for v in rx_ab.iter() {
            tx_ba.send(v).unwrap();
        }
    });
    let t = Instant::now();
    let pinger = moss::spawn(move || {
        for i in 0..n {
            tx_ab.send(i).unwrap();
            black_box(rx_ba.recv().unwrap());
        }
    });
    pinger.join().unwrap();
    let el = t.elapsed();
    echo.join().unwrap();
    el
}

fn pingpong_one_hub(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong_one_hub");
    g.throughput(Throughput::Elements(1));
    g.bench_function("moss Queue(1), per hand-off", |b| {
        b.iter_custom(|iters| queue_pingpong_coroutines(iters.div_ceil(2)))
    });
    g.bench_function("moss bounded(1) channel, per hand-off", |b| {
        b.iter_custom(|iters| channel_pingpong_coroutines(iters.div_ceil(2)))
    });
    g.bench_function(
        "moss yield_now between 2 coroutines (baseline: a bare switch)",
        |b| {
            b.iter_custom(|iters| {
                let n = iters.div_ceil(2);
                let t = Instant::now();
                let hs: Vec<_> = (0..2)
                    .map(|_| moss::spawn(move || (0..n).for_each(|_| moss::yield_now())))
                    .collect();
                moss::join_all(hs);
                t.elapsed()
            })
        },
    );
    g.finish();
}

fn queue_pingpong_threads(n: u64) -> Duration {
    let (ab, ba) = (Arc::new(Queue::new(1)), Arc::new(Queue::new(1)));
    let (ab2, ba2) = (ab.clone(), ba.clone());
    let echo = std::thread::spawn(move || {
        for _ in 0..n {
            let v: u64 = ab2.get();
            ba2.put(v);
        }
    });
    let t = Instant::now();
    for i in 0..n {
        ab.put(i);
        black_box(ba.get());
    }
    let el = t.elapsed();
    echo.join().unwrap();
    el
}

fn mpsc_pingpong_threads(n: u64) -> Duration {
    let (tx_ab, rx_ab) = std::sync::mpsc::sync_channel::<u64>(1);
    let (tx_ba, rx_ba) = std::sync::mpsc::sync_channel::<u64>(1);
    let echo = std::thread::spawn(move || {
        for v in rx_ab.iter() {
            tx_ba.send(v).unwrap();
        }
    });
    let t = Instant::now();
    for i in 0..n {
        tx_ab.send(i).unwrap();
        black_box(rx_ba.recv().unwrap());
    }
    let el = t.elapsed();
    drop(tx_ab);
    echo.join().unwrap();
    el
}

fn pingpong_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong_two_threads");
    g.throughput(Throughput::Elements(1));
    g.bench_function("moss Queue(1), per hand-off", |b| {
        b.iter_custom(|iters| queue_pingpong_threads(iters.div_ceil(2)))
    });
    g.bench_function(
        "std::sync::mpsc::sync_channel(1), per hand-off (baseline)",
        |b| b.iter_custom(|iters| mpsc_pingpong_threads(iters.div_ceil(2))),
    );
    g.finish();
}

/// One message of the oneshot ping-pong: the value, the channel the next
/// request comes on, and where to answer.
struct Ping(u64, oneshot::Receiver<Ping>, oneshot::Sender<u64>);

/// `n` round trips (2n hand-offs): the pinger sends a value with the
/// receiver of its next request and a sender for the answer; the echo
/// answers and waits on the next receiver. `wait` is how each side awaits.
async fn oneshot_pinger(n: u64, mut next: oneshot::Sender<Ping>) {
    for i in 0..n {
        let (tx, rx) = oneshot::channel();
        let (back_tx, back_rx) = oneshot::channel();
        if next.send(Ping(i, rx, back_tx)).is_err() {
            panic!("echo gone");
        }
        next = tx;
        black_box(back_rx.await.unwrap());
    }
}

async fn oneshot_echo(mut rx: oneshot::Receiver<Ping>) {
    while let Ok(Ping(v, next, back)) = rx.await {
        let _ = back.send(v);
        rx = next;
    }
}

fn oneshot_pingpong_coroutines(n: u64) -> Duration {
    let (tx, rx) = oneshot::channel();
    let echo = moss::spawn(move || {
        let mut rx: oneshot::Receiver<Ping> = rx;
        while let Ok(Ping(v, next, back)) = moss::block_on(rx) {
            let _ = back.send(v);
            rx = next;
        }
    });
    let t = Instant::now();
    let pinger = moss::spawn(move || {
        let mut next = tx;
        for i in 0..n {
            let (tx, rx) = oneshot::channel();
            let (back_tx, back_rx) = oneshot::channel();
            if next.send(Ping(i, rx, back_tx)).is_err() {
                panic!("echo gone");
            }
            next = tx;
            black_box(moss::block_on(back_rx).unwrap());
        }
    });
    pinger.join().unwrap();
    let el = t.elapsed();
    echo.join().unwrap();
    el
}

fn oneshot_pingpong_local_pool(n: u64) -> Duration {
    use futures::task::LocalSpawnExt;
    let mut pool = futures::executor::LocalPool::new();
    let (tx, rx) = oneshot::channel();
    pool.spawner().spawn_local(oneshot_echo(rx)).unwrap();
    let t = Instant::now();
    pool.run_until(oneshot_pinger(n, tx));
    let el = t.elapsed();
    pool.run();
    el
}

fn oneshot_pingpong_tokio(n: u64) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (tx, rx) = oneshot::channel();
    rt.block_on(async move {
        let echo = tokio::spawn(oneshot_echo(rx));
        let t = Instant::now();
        tokio::spawn(oneshot_pinger(n, tx)).await.unwrap();
        let el = t.elapsed();
        echo.await.unwrap();
        el
    })
}

fn block_on(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_on");
    g.throughput(Throughput::Elements(1));
    g.bench_function("moss::block_on(ready(x))", |b| {
        b.iter(|| moss::block_on(std::future::ready(black_box(7u64))))
    });
    g.bench_function("futures::executor::block_on(ready(x)) (baseline)", |b| {
        b.iter(|| futures::executor::block_on(std::future::ready(black_box(7u64))))
    });
    g.bench_function(
        "moss oneshot via block_on, 2 coroutines, per hand-off",
        |b| b.iter_custom(|iters| oneshot_pingpong_coroutines(iters.div_ceil(2))),
    );
    g.bench_function(
        "futures LocalPool oneshot, 2 tasks, per hand-off (peer)",
        |b| b.iter_custom(|iters| oneshot_pingpong_local_pool(iters.div_ceil(2))),
    );
    g.bench_function(
        "tokio current-thread oneshot, 2 tasks, per hand-off (peer)",
        |b| b.iter_custom(|iters| oneshot_pingpong_tokio(iters.div_ceil(2))),
    );
    g.finish();
}

/// `moss::compat::tokio` round trip (spawn on moss's tokio runtime, wake the
/// coroutine back through its hub) vs a plain thread doing the same with
/// tokio's own `Handle::block_on` on a runtime of the same size. Only with
/// `--features tokio`.
fn compat_tokio(c: &mut Criterion) {
    #[cfg(not(feature = "tokio"))]
    let _ = c;
    #[cfg(feature = "tokio")]
    {
        let mut g = c.benchmark_group("compat_tokio");
        g.throughput(Throughput::Elements(1));
        g.bench_function("moss::compat::tokio(async { x }) from a coroutine", |b| {
            b.iter_custom(|iters| {
                moss::spawn(move || {
                    let t = Instant::now();
                    for i in 0..iters {
                        black_box(moss::compat::tokio(async move { black_box(i) }));
                    }
                    t.elapsed()
                })
                .join()
                .unwrap()
            })
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(moss::compat::TOKIO_WORKER_THREADS)
            .build()
            .unwrap();
        g.bench_function(
            "tokio Handle::block_on(spawn(async { x })) from a thread (peer)",
            |b| {
                b.iter(|| {
                    let x = black_box(7u64);
                    rt.block_on(rt.spawn(async move { black_box(x) })).unwrap()
                })
            },
        );
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = mutex_uncontended, threading_uncontended, pingpong_one_hub, block_on, compat_tokio, pingpong_two_threads
}
criterion_main!(benches);
