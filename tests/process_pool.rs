//! ProcessPool: fn(A) -> R tasks in forked worker processes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moss::pool::{PoolError, ProcessPool};

fn square(x: u64) -> u64 {
    x * x
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn gone(pid: u32) -> bool {
    // Reaped children have no /proc entry (a zombie still has one).
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn results_are_computed_in_another_process() {
    let pool = ProcessPool::new(2).unwrap();
    let workers = pool.pids();
    assert_eq!(workers.len(), 2);
    let p = pool.apply(pid, ()).unwrap();
    assert_ne!(p, std::process::id());
    assert!(workers.contains(&p), "{p} not in {workers:?}");
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    assert_eq!(
        pool.map(square, 0..100).unwrap(),
        (0..100).map(square).collect::<Vec<_>>()
    );
    assert_eq!(pool.map(square, Vec::new()).unwrap(), Vec::<u64>::new());
    let strings = pool
        .map(|s: String| s.repeat(2), ["ab", "c"].map(String::from))
        .unwrap();
    assert_eq!(strings, vec!["abab", "cc"]);
    pool.close();
    pool.join();
    assert!(workers.iter().all(|&p| gone(p)), "workers not reaped");
}

/// Spins for 400 ms of wall time; returns (start, end) in ns since the epoch.
fn spin(_: ()) -> (u128, u128) {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    let start = now();
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < Duration::from_millis(400) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    (start, now())
}

#[test]
fn cpu_bound_tasks_run_in_parallel() {
    let pool = ProcessPool::new(2).unwrap();
    let t = Instant::now();
    let a = pool.apply_async(spin, (), |_| {});
    let b = pool.apply_async(spin, (), |_| {});
    let (a, b) = (a.get().unwrap(), b.get().unwrap());
    let elapsed = t.elapsed();
    // The two 400 ms spins overlapped in time: each started before the
    // other ended.
    assert!(a.0 < b.1 && b.0 < a.1, "no overlap: {a:?} {b:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    pool.terminate();
}

fn abort(_: ()) -> u32 {
    std::process::abort()
}

fn exit3(_: ()) -> u32 {
    std::process::exit(3)
}

fn sigkill_self(_: ()) -> u32 {
    // SAFETY: kill has no memory preconditions; it ends this throwaway
    // worker process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(30));
    0
}

fn slow_double(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(200));
    x * 2
}

#[test]
fn a_dying_worker_fails_only_its_task_and_is_replaced() {
    let pool = ProcessPool::new(2).unwrap();
    let before = pool.pids();
    // Other tasks in flight while workers die.
    let others: Vec<_> = (0..4u64)
        .map(|i| {
            let pool = pool.clone();
            moss::spawn(move || pool.apply(slow_double, i))
        })
        .collect();
    match pool.apply(abort, ()).unwrap_err() {
        PoolError::WorkerDied {
            signal: Some(6), ..
        } => {}
        e => panic!("expected death by SIGABRT, got {e:?}"),
    }
    match pool.apply(exit3, ()).unwrap_err() {
        PoolError::WorkerDied {
            exit_code: Some(3),
            signal: None,
            ..
        } => {}
        e => panic!("expected exit 3, got {e:?}"),
    }
    match pool.apply(sigkill_self, ()).unwrap_err() {
        PoolError::WorkerDied {
            signal: Some(9),
            pid,
            ..
        } => assert!(pid > 0),
        e => panic!("expected death by SIGKILL, got {e:?}"),
    }
    let got: Vec<u64> = moss::join_all(others)
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(got, vec![0, 2, 4, 6]);
    // Still serving, with replaced workers.
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    let after = pool.pids();
    assert_eq!(after.len(), 2);
    assert_ne!(after, before);
    pool.close();
    pool.join();
    assert!(
        before.iter().chain(&after).all(|&p| gone(p)),
        "workers not reaped"
    );
}

#[test]
fn many_coroutines_share_the_pool_and_the_hub_keeps_running() {
    let pool = ProcessPool::new(2).unwrap();
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
    let hs: Vec<_> = (0..20u64)
        .map(|i| {
            let pool = pool.clone();
            moss::spawn(move || {
                (
                    pool.apply(square, i).unwrap(),
                    pool.apply(slow_double, i).unwrap(),
                )
            })
        })
        .collect();
    let got: Vec<(u64, u64)> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    done.set(true);
    ticker.join().unwrap();
    assert_eq!(got, (0..20).map(|i| (i * i, 2 * i)).collect::<Vec<_>>());
    // 20 x 200 ms on 2 workers took >= 2 s; the ticker (10 ms sleeps) kept
    // going (a generous floor for a loaded machine).
    assert!(ticks.get() >= 20, "hub blocked: {} ticks", ticks.get());
    pool.terminate();
}

fn boom(x: u32) -> u32 {
    if x == 2 { panic!("bad input {x}") } else { x }
}

#[test]
fn panics_callbacks_close_and_join() {
    let pool = ProcessPool::new(1).unwrap();
    assert_eq!(
        pool.apply(boom, 2).unwrap_err(),
        PoolError::Panicked {
            message: "bad input 2".into()
        }
    );
    assert_eq!(pool.apply(boom, 1).unwrap(), 1);
    assert_eq!(
        pool.map(boom, 0..5).unwrap_err(),
        PoolError::Panicked {
            message: "bad input 2".into()
        }
    );
    let me = std::thread::current().id();
    let seen = Rc::new(Cell::new(None));
    let results: Vec<_> = (1..=3u64)
        .map(|i| {
            let seen = seen.clone();
            pool.apply_async(square, i, move |v| {
                assert_eq!(std::thread::current().id(), me);
                seen.set(Some(seen.get().unwrap_or(0) + *v));
            })
        })
        .collect();
    pool.close();
    assert_eq!(pool.apply(square, 1).unwrap_err(), PoolError::Closed);
    assert_eq!(
        pool.apply_async(square, 1, |_| {}).get(),
        Err(PoolError::Closed)
    );
    pool.join();
    // join waited for the tasks and their callbacks.
    assert_eq!(seen.get(), Some(1 + 4 + 9));
    assert_eq!(
        results.iter().map(|r| r.get().unwrap()).collect::<Vec<_>>(),
        vec![1, 4, 9]
    );
}

fn sleep_long(_: ()) -> u32 {
    std::thread::sleep(Duration::from_secs(60));
    0
}

#[test]
fn terminate_fails_running_and_queued_tasks_and_reaps() {
    let pool = ProcessPool::new(1).unwrap();
    let workers = pool.pids();
    let running = pool.apply_async(sleep_long, (), |_| {});
    let queued = pool.apply_async(square, 3, |_| {});
    moss::sleep(Duration::from_millis(100));
    let t = Instant::now();
    pool.terminate();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(running.get().unwrap_err(), PoolError::Terminated);
    assert_eq!(queued.get().unwrap_err(), PoolError::Terminated);
    assert!(workers.iter().all(|&p| gone(p)), "workers not reaped");
    assert!(pool.pids().is_empty());
}

#[test]
fn bad_sizes_and_use_from_a_child_are_errors() {
    // 0 is Python's `Pool()`: one worker per CPU.
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(ProcessPool::new(0).unwrap().size(), cpus);
    assert_eq!(
        ProcessPool::builder(1)
            .max_tasks_per_child(0)
            .build()
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::InvalidInput
    );
    let pool = ProcessPool::new(1).unwrap();
    let p = pool.clone();
    // In a forked child the pool's manager thread does not exist.
    let child = moss::pool::Process::new(move || {
        let e = p.apply(square, 2).unwrap_err();
        assert!(
            matches!(
                e,
                PoolError::Io {
                    kind: std::io::ErrorKind::Unsupported,
                    ..
                }
            ),
            "{e:?}"
        );
    })
    .start()
    .unwrap();
    assert_eq!(child.join().unwrap(), 0);
    pool.terminate();
}

#[test]
fn tasks_queued_behind_a_dying_task_still_run_exactly_once() {
    let pool = ProcessPool::new(2).unwrap();
    // Many tiny tasks make the pool pipeline several per worker.
    let first: Vec<_> = (0..300u64)
        .map(|i| pool.apply_async(square, i, |_| {}))
        .collect();
    let dying: Vec<_> = (0..3)
        .map(|_| pool.apply_async(abort, (), |_| {}))
        .collect();
    let second: Vec<_> = (300..600u64)
        .map(|i| pool.apply_async(square, i, |_| {}))
        .collect();
    for (i, r) in first.iter().chain(&second).enumerate() {
        assert_eq!(r.get().unwrap(), square(i as u64));
    }
    for r in &dying {
        assert!(
            matches!(
                r.get(),
                Err(PoolError::WorkerDied {
                    signal: Some(6),
                    ..
                })
            ),
            "{:?}",
            r.get()
        );
    }
    pool.close();
    pool.join();
}

fn reverse(v: Vec<u8>) -> Vec<u8> {
    v.into_iter().rev().collect()
}

#[test]
fn large_arguments_results_and_maps_arrive_whole() {
    let pool = ProcessPool::new(2).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let back = pool.apply(reverse, big.clone()).unwrap();
    assert!(back.iter().rev().eq(big.iter()), "payload corrupted");
    // Several large replies buffered at once in the manager.
    let rs: Vec<_> = (0..6)
        .map(|_| pool.apply_async(reverse, big.clone(), |_| {}))
        .collect();
    for r in &rs {
        assert_eq!(r.take().unwrap().len(), big.len());
    }
    // Tiny tasks first: the pool then pipelines several map chunks per
    // worker, so large replies arrive back to back.
    let tiny: Vec<_> = (0..3000u64)
        .map(|i| pool.apply_async(square, i, |_| {}))
        .collect();
    assert!(
        tiny.iter()
            .enumerate()
            .all(|(i, r)| r.take() == Ok(square(i as u64)))
    );
    let n = 300_000u64;
    let out = pool.map(square, 0..n).unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == square(i as u64)));
    pool.close();
    pool.join();
}

fn segfault(_: ()) -> u32 {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass; the default disposition
    // is restored (moss and std catch SIGSEGV to report stack overflows) and
    // the signal sent to this throwaway worker process, which it kills.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    std::thread::sleep(Duration::from_secs(30));
    0
}

#[test]
fn a_segfaulting_worker_is_reported_and_replaced() {
    let pool = ProcessPool::new(1).unwrap();
    match pool.apply(segfault, ()).unwrap_err() {
        PoolError::WorkerDied {
            signal: Some(11), ..
        } => {}
        e => panic!("expected death by SIGSEGV, got {e:?}"),
    }
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
    pool.terminate();
}
