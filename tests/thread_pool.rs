//! ThreadPool: tasks on OS threads, waited on without blocking the hub.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moss::pool::{PoolError, ThreadPool};

#[test]
fn hub_keeps_running_while_8_coroutines_wait_on_tasks() {
    let pool = ThreadPool::new(8);
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let ticker = {
        let (ticks, done) = (ticks.clone(), done.clone());
        moss::spawn(move || {
            while !done.get() {
                moss::sleep(Duration::from_millis(10));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    let t = Instant::now();
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            let pool = pool.clone();
            moss::spawn(move || {
                pool.apply(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    i + 100
                })
            })
        })
        .collect();
    let results: Vec<u64> = moss::join_all(hs)
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let elapsed = t.elapsed();
    done.set(true);
    ticker.join().unwrap();
    assert_eq!(results, (100..108).collect::<Vec<_>>());
    // 8 tasks of 300 ms on 8 threads overlap.
    assert!(
        elapsed < Duration::from_secs(2),
        "tasks did not overlap: {elapsed:?}"
    );
    assert!(ticks.get() >= 5, "hub blocked: {} ticks", ticks.get());
}

#[test]
fn a_panicking_task_is_an_error_and_the_worker_survives() {
    let pool = ThreadPool::new(1);
    let e = pool
        .apply(|| -> u32 { panic!("task exploded") })
        .unwrap_err();
    assert_eq!(
        e,
        PoolError::Panicked {
            message: "task exploded".into()
        }
    );
    let worker = pool.apply(|| std::thread::current().id()).unwrap();
    assert_eq!(pool.apply(|| 2 + 2).unwrap(), 4);
    // Still the same (only) thread.
    assert_eq!(pool.apply(|| std::thread::current().id()).unwrap(), worker);
}

#[test]
fn apply_async_runs_the_callback_on_the_callers_hub_thread() {
    let pool = ThreadPool::new(2);
    let me = std::thread::current().id();
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let r = pool.apply_async(
        || {
            std::thread::sleep(Duration::from_millis(20));
            (std::thread::current().id(), 21 * 2)
        },
        move |(_, v): &(std::thread::ThreadId, u32)| s.set(Some((std::thread::current().id(), *v))),
    );
    let (worker, v) = r.get();
    assert_eq!(v, 42);
    assert_ne!(worker, me);
    // The callback ran before get returned, on this thread.
    assert_eq!(seen.get(), Some((me, 42)));

    let bad = pool.apply_async(|| -> u32 { panic!("async boom") }, |_| unreachable!());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bad.get())).unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"async boom"));
}

#[test]
fn map_and_imap_keep_input_order() {
    let pool = ThreadPool::new(3);
    let out = pool
        .map(
            |i: u64| {
                // Later items finish first.
                std::thread::sleep(Duration::from_millis(30 - i * 3));
                i * 2
            },
            0..10,
        )
        .unwrap();
    assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    let it = pool
        .imap(|s: String| s.to_uppercase(), ["a", "b"].map(String::from))
        .unwrap();
    assert_eq!(it.map(Result::unwrap).collect::<Vec<_>>(), vec!["A", "B"]);
    let err = pool
        .map(|i: u32| if i == 3 { panic!("item 3") } else { i }, 0..6)
        .unwrap_err();
    assert_eq!(
        err,
        PoolError::Panicked {
            message: "item 3".into()
        }
    );
}

#[test]
fn close_refuses_new_tasks_and_join_waits_for_queued_ones() {
    let pool = ThreadPool::new(2);
    let count = Arc::new(AtomicUsize::new(0));
    let mut pending = Vec::new();
    for _ in 0..6 {
        let c = count.clone();
        pending.push(pool.apply_async(
            move || {
                std::thread::sleep(Duration::from_millis(20));
                c.fetch_add(1, Ordering::SeqCst);
            },
            |_| {},
        ));
    }
    pool.close();
    assert_eq!(pool.apply(|| 1).unwrap_err(), PoolError::Closed);
    let refused = pool.apply_async(|| 1, |_| {});
    assert!(refused.ready() && !refused.successful());
    let caught =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| refused.get())).unwrap_err();
    assert_eq!(caught.downcast_ref::<PoolError>(), Some(&PoolError::Closed));
    let t = Instant::now();
    pool.join();
    assert_eq!(count.load(Ordering::SeqCst), 6);
    assert!(pending.iter().all(|r| r.ready()));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn works_from_a_plain_thread_without_coroutines() {
    let pool = ThreadPool::new(1);
    let p = pool.clone();
    let v = std::thread::spawn(move || p.apply(|| "from a thread").unwrap())
        .join()
        .unwrap();
    assert_eq!(v, "from a thread");
}

/// 0 is Python's `ThreadPool()`: one thread per CPU, as `ProcessPool::new(0)`;
/// that many tasks run at once (each waits until all have started).
#[test]
fn zero_threads_means_one_per_cpu() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let pool = ThreadPool::new(0);
    assert_eq!(pool.size(), cpus);
    let started = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..cpus)
        .map(|_| {
            let (pool, started) = (pool.clone(), started.clone());
            moss::spawn(move || {
                pool.apply(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let t = Instant::now();
                    while started.load(Ordering::SeqCst) < cpus {
                        assert!(
                            t.elapsed() < Duration::from_secs(30),
                            "tasks ran one by one"
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
        })
        .collect();
    for r in moss::join_all(hs) {
        r.unwrap().unwrap();
    }
}
