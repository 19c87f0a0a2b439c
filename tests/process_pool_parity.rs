//! The rest of multiprocessing.Pool on ProcessPool: imap, imap_unordered,
//! map_async, chunk sizes, error callbacks, starmap, initializer and
//! max_tasks_per_child.

mod util;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moss::pool::{PoolError, ProcessEvent, ProcessPool, SharedValue};

fn square(x: u64) -> u64 {
    x * x
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn fail_on_three(x: u32) -> u32 {
    assert!(x != 3, "three is not allowed");
    x * 10
}

/// Opened by the test once it has the first result of `imap`; the last
/// item's task waits for it.
static GATE: OnceLock<ProcessEvent> = OnceLock::new();
const LAST: u32 = 7;

fn gated(x: u32) -> u32 {
    if x == LAST {
        assert!(
            GATE.get().unwrap().wait_timeout(Duration::from_secs(60)),
            "the gate never opened"
        );
    }
    x
}

#[test]
fn imap_yields_the_first_result_before_the_last_task_finishes() {
    let _wd = util::watchdog("imap", Duration::from_secs(120));
    // Created before the workers are forked: they inherit it.
    GATE.set(ProcessEvent::new().unwrap()).unwrap();
    let pool = ProcessPool::new(2).unwrap();
    // The last item's task cannot finish before the gate opens, and the
    // gate opens only after the first result arrived here.
    let mut it = pool.imap(gated, 0..=LAST);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    GATE.get().unwrap().set();
    let rest: Vec<u32> = it.map(Result::unwrap).collect();
    assert_eq!(rest, (1..=LAST).collect::<Vec<_>>());
}

fn slow_when_small(x: u64) -> u64 {
    // The first items take longest.
    std::thread::sleep(Duration::from_millis(30 * (4 - x)));
    x
}

/// Opened once `imap_unordered` has given a result: item 0 waits for it.
static GATE_ZERO: OnceLock<ProcessEvent> = OnceLock::new();

fn zero_waits(x: u64) -> u64 {
    if x == 0 {
        assert!(
            GATE_ZERO
                .get()
                .unwrap()
                .wait_timeout(Duration::from_secs(60))
        );
    }
    x
}

#[test]
fn imap_keeps_input_order_and_imap_unordered_does_not() {
    let _wd = util::watchdog("imap order", Duration::from_secs(120));
    GATE_ZERO.set(ProcessEvent::new().unwrap()).unwrap();
    let pool = ProcessPool::new(4).unwrap();
    // Later items finish first; imap still yields them in input order.
    let ordered: Vec<u64> = pool
        .imap(slow_when_small, 0..4)
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, [0, 1, 2, 3]);
    // Item 0 cannot finish before a result has come back: unordered, it
    // is not first.
    let mut it = pool.imap_unordered(zero_waits, 0..4);
    let first = it.next().unwrap().unwrap();
    assert_ne!(first, 0);
    GATE_ZERO.get().unwrap().set();
    let mut all: Vec<u64> = it.map(Result::unwrap).collect();
    all.push(first);
    all.sort();
    assert_eq!(all, [0, 1, 2, 3]);
}

#[test]
fn imap_consumes_its_input_lazily_with_a_chunk_size() {
    let _wd = util::watchdog(
        "imap_consumes_its_input_lazily_with_a_chunk_size",
        Duration::from_secs(120),
    );
    let pool = ProcessPool::new(2).unwrap();
    let pulled = Rc::new(RefCell::new(0u64));
    let p2 = pulled.clone();
    let input = (0u64..).inspect(move |_| *p2.borrow_mut() += 1);
    let mut it = pool.imap(square, input).chunksize(3);
    let first: Vec<u64> = it.by_ref().take(5).map(Result::unwrap).collect();
    assert_eq!(first, [0, 1, 4, 9, 16]);
    // A window of chunks ahead, not the endless input.
    let n = *pulled.borrow();
    assert!((5..=3 * 2 * 2 + 3).contains(&n), "pulled {n} items");
    let more: Vec<u64> = it.take(100).map(Result::unwrap).collect();
    assert_eq!(more[99], 104 * 104);
}

#[test]
fn imap_reports_a_failed_task_as_an_item_and_goes_on() {
    let _wd = util::watchdog(
        "imap_reports_a_failed_task_as_an_item_and_goes_on",
        Duration::from_secs(120),
    );
    let pool = ProcessPool::new(2).unwrap();
    let out: Vec<Result<u32, PoolError>> = pool.imap(fail_on_three, 0..6).collect();
    assert_eq!(out.len(), 6);
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u32 * 10),
            Err(PoolError::Panicked { message }) => {
                assert_eq!(i, 3);
                assert!(message.contains("three is not allowed"), "{message}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    // With chunks, the failure takes its whole chunk (items 2 and 3).
    let out: Vec<bool> = pool
        .imap_unordered(fail_on_three, 0..6)
        .chunksize(2)
        .map(|r| r.is_ok())
        .collect();
    assert_eq!(out.iter().filter(|ok| !**ok).count(), 2);
    // A closed pool: each item is an error, and the input is left alone.
    pool.close();
    let out: Vec<_> = pool.imap(square, 0..).take(3).collect();
    assert_eq!(out, [Err(PoolError::Closed)]);
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_coroutine_waiting_in_imap_yields_and_a_kill_loses_nothing() {
    let _wd = util::watchdog("imap kill", Duration::from_secs(120));
    let pool = ProcessPool::new(2).unwrap();
    let (ticks, ticker) = util::ticker();
    let it = Rc::new(RefCell::new(pool.imap(sleepy, [300, 1, 2])));
    let i2 = it.clone();
    let waiter = moss::spawn(move || i2.borrow_mut().next());
    util::until_parked(waiter.id());
    waiter.kill();
    assert!(waiter.join().unwrap_err().is_killed());
    // The next call picks up the same first item.
    let it = Rc::try_unwrap(it).ok().unwrap().into_inner();
    let all: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(all, [300, 1, 2]);
    assert!(ticks.get() >= 2, "the hub ran while imap waited");
    ticker.kill();
}

#[test]
fn map_with_a_chunk_size_and_starmap_over_tuples() {
    let _wd = util::watchdog(
        "map_with_a_chunk_size_and_starmap_over_tuples",
        Duration::from_secs(120),
    );
    fn add((a, b): (u32, u32)) -> u32 {
        a + b
    }
    let pool = ProcessPool::new(3).unwrap();
    for chunk in [0, 1, 2, 7, 1000] {
        assert_eq!(
            pool.map_chunked(square, 0..20, chunk).unwrap(),
            (0..20).map(|x| x * x).collect::<Vec<_>>(),
            "chunk size {chunk}"
        );
    }
    assert_eq!(pool.map(add, [(1, 2), (30, 40)]).unwrap(), [3, 70]);
    assert_eq!(
        pool.map_chunked(square, Vec::new(), 4).unwrap(),
        Vec::<u64>::new()
    );
}

#[test]
fn map_async_runs_its_callback_on_the_callers_hub() {
    let _wd = util::watchdog(
        "map_async_runs_its_callback_on_the_callers_hub",
        Duration::from_secs(120),
    );
    let pool = ProcessPool::new(2).unwrap();
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let me = std::thread::current().id();
    let r = pool.map_async(square, 1..=5, move |v: &Vec<u64>| {
        assert_eq!(std::thread::current().id(), me);
        *s.borrow_mut() = Some(v.iter().sum::<u64>());
    });
    assert_eq!(r.get().unwrap(), [1, 4, 9, 16, 25]);
    assert_eq!(*seen.borrow(), Some(55));
    // join waits for the callback too.
    let seen2 = Rc::new(RefCell::new(false));
    let s2 = seen2.clone();
    let _r = pool.map_async(square, 0..100, move |_| *s2.borrow_mut() = true);
    pool.join();
    assert!(*seen2.borrow());
}

#[test]
fn error_callbacks_get_the_error_instead_of_the_callback() {
    let _wd = util::watchdog(
        "error_callbacks_get_the_error_instead_of_the_callback",
        Duration::from_secs(120),
    );
    let pool = ProcessPool::new(2).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let r = pool.map_async_with(
        fail_on_three,
        0..6,
        move |_| l1.borrow_mut().push("ok".to_string()),
        move |e| l2.borrow_mut().push(e.to_string()),
    );
    assert!(matches!(r.get(), Err(PoolError::Panicked { .. })));
    assert_eq!(log.borrow().len(), 1);
    assert!(log.borrow()[0].contains("three is not allowed"));
    let (l1, l2) = (log.clone(), log.clone());
    let r = pool.apply_async_with(
        fail_on_three,
        4,
        move |v| l1.borrow_mut().push(format!("ok {v}")),
        move |e| l2.borrow_mut().push(e.to_string()),
    );
    assert_eq!(r.get(), Ok(40));
    assert_eq!(log.borrow()[1], "ok 40");
    // A refused task: the result is ready at once, the error callback runs.
    pool.close();
    let l3 = log.clone();
    let r = pool.apply_async_with(
        fail_on_three,
        1,
        |_| {},
        move |e| l3.borrow_mut().push(e.to_string()),
    );
    assert_eq!(r.get(), Err(PoolError::Closed));
    moss::yield_now();
    assert_eq!(log.borrow()[2], PoolError::Closed.to_string());
}

/// In a process of its own: a thread of this process that panics while
/// another test's pool forks a worker would leave std's panic-output lock
/// held in that worker (see the pool's docs on fork).
#[test]
fn a_panicking_error_callback_leaves_the_error_as_the_result() {
    util::isolated(
        "a_panicking_error_callback_leaves_the_error_as_the_result",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::new(1).unwrap();
            let r = pool.apply_async_with(fail_on_three, 3, |_| {}, |_| panic!("error callback"));
            assert!(
                matches!(r.get(), Err(PoolError::Panicked { message }) if message.contains("three"))
            );
            // A panicking callback turns a success into the panic.
            let r = pool.apply_async_with(fail_on_three, 4, |_| panic!("callback"), |_| {});
            assert!(
                matches!(r.get(), Err(PoolError::Panicked { message }) if message == "callback")
            );
            pool.join();
        },
    );
}

#[test]
fn max_tasks_per_child_one_gives_a_new_pid_per_task() {
    let _wd = util::watchdog("max_tasks_per_child", Duration::from_secs(120));
    let pool = ProcessPool::builder(2)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..6).map(|_| pool.apply(pid, ()).unwrap()).collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 6, "{pids:?}");
    // Chunks count as tasks: a map of 8 items in chunks of 2 uses 4 workers.
    let pids = pool.map_chunked(pid, vec![(); 8], 2).unwrap();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "{pids:?}");
    // k = 3: the same worker serves at most three tasks.
    let pool = ProcessPool::builder(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..7).map(|_| pool.apply(pid, ()).unwrap()).collect();
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[5]);
    assert_ne!(pids[5], pids[6]);
    assert!(
        ProcessPool::builder(1)
            .max_tasks_per_child(0)
            .build()
            .is_err(),
        "0 is refused"
    );
}

static INIT_VALUE: AtomicU32 = AtomicU32::new(0);

fn init_value() {
    INIT_VALUE.store(std::process::id(), Ordering::SeqCst);
}

fn init_of_this_worker(_: ()) -> (u32, u32) {
    (INIT_VALUE.load(Ordering::SeqCst), std::process::id())
}

#[test]
fn the_initializer_runs_once_in_every_worker_before_its_tasks() {
    let _wd = util::watchdog(
        "the_initializer_runs_once_in_every_worker_before_its_tasks",
        Duration::from_secs(120),
    );
    let pool = ProcessPool::builder(2)
        .initializer(init_value)
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    for _ in 0..8 {
        let (init, pid) = pool.apply(init_of_this_worker, ()).unwrap();
        assert_eq!(init, pid, "this worker ran the initializer itself");
    }
    assert_eq!(INIT_VALUE.load(Ordering::SeqCst), 0, "not in the parent");
}

fn init_panics() {
    panic!("no config file");
}

fn init_exits() {
    std::process::exit(3);
}

#[test]
fn an_initializer_that_panics_fails_build_instead_of_hanging() {
    let _wd = util::watchdog("initializer panics", Duration::from_secs(60));
    let e = ProcessPool::builder(2)
        .initializer(init_panics)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("no config file"), "{e}");
    let e = ProcessPool::builder(1)
        .initializer(init_exits)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("exited with code 3"), "{e}");
}

/// Counts initializer runs across workers; set before the pool starts.
static INIT_RUNS: OnceLock<SharedValue<u32>> = OnceLock::new();

fn init_fails_from_the_third_worker() {
    let n = INIT_RUNS.get().unwrap().update(|n| {
        *n += 1;
        *n
    });
    assert!(n <= 2, "initializer run {n} fails");
}

#[test]
fn an_initializer_failing_in_a_replacement_worker_breaks_the_pool_with_a_clear_error() {
    let _wd = util::watchdog("initializer fails later", Duration::from_secs(60));
    INIT_RUNS.set(SharedValue::new(0).unwrap()).unwrap();
    let pool = ProcessPool::builder(2)
        .initializer(init_fails_from_the_third_worker)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    // Two tasks at once use up both workers; their replacements fail to
    // start.
    let a = pool.apply_async(pid, (), |_| {});
    let b = pool.apply_async(pid, (), |_| {});
    assert!(a.get().is_ok() && b.get().is_ok());
    let t = Instant::now();
    let e = pool.apply(pid, ()).unwrap_err();
    assert!(
        // Either replacement may report first.
        matches!(&e, PoolError::Initializer { message }
            if message.contains("initializer run 3 fails") || message.contains("initializer run 4 fails")),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    // Later tasks fail at once with the same error; close and join end.
    assert!(matches!(
        pool.apply(pid, ()),
        Err(PoolError::Initializer { .. })
    ));
    let r = pool.map_async(square, 0..3, |_| {});
    assert!(matches!(r.get(), Err(PoolError::Initializer { .. })));
    pool.close();
    pool.join();
}

#[test]
fn zero_workers_means_one_per_cpu() {
    let _wd = util::watchdog("zero_workers_means_one_per_cpu", Duration::from_secs(120));
    let cpus = std::thread::available_parallelism().unwrap().get();
    let pool = ProcessPool::new(0).unwrap();
    assert_eq!(pool.size(), cpus);
    assert_eq!(pool.pids().len(), cpus);
    let pool = ProcessPool::builder(0)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    assert_eq!(pool.size(), cpus);
    assert_eq!(pool.map(square, 0..4).unwrap(), [0, 1, 4, 9]);
}

#[test]
fn a_timeout_in_imap_unordered_loses_nothing_and_dropping_it_lets_join_end() {
    let _wd = util::watchdog("imap timeout", Duration::from_secs(120));
    let pool = ProcessPool::new(2).unwrap();
    let mut it = pool.imap_unordered(sleepy, [400, 500]);
    // Neither result can be there within 10 ms; the timeout ends the wait.
    assert!(moss::timeout(Duration::from_millis(10), || it.next()).is_err());
    let mut all: Vec<u64> = it.map(Result::unwrap).collect();
    all.sort();
    assert_eq!(all, [400, 500]);
    // Dropped with tasks in flight: they still run, and join waits for them.
    let t = Instant::now();
    let mut it = pool.imap(sleepy, [200, 200, 200, 200]);
    assert_eq!(it.next().unwrap().unwrap(), 200);
    drop(it);
    pool.close();
    pool.join();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "join waited for the rest"
    );
    assert_eq!(pool.apply(square, 2), Err(PoolError::Closed));
}

#[test]
fn map_async_killed_waiter_and_terminate_fail_cleanly() {
    let _wd = util::watchdog("map_async terminate", Duration::from_secs(120));
    let pool = ProcessPool::new(2).unwrap();
    let r = pool.map_async(sleepy, [60_000, 60_000, 1], |_| panic!("not called"));
    // A coroutine waiting for the result can be killed.
    let r2 = r.clone();
    let waiter = moss::spawn(move || r2.get());
    util::until_parked(waiter.id());
    waiter.kill();
    assert!(waiter.join().unwrap_err().is_killed());
    // terminate fails the running chunks at once, and the result with them.
    let t = Instant::now();
    pool.terminate();
    assert_eq!(r.get(), Err(PoolError::Terminated));
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// The pid of the worker whose initializer runs; set before the pool starts.
static SLOW_INIT_PID: OnceLock<SharedValue<u32>> = OnceLock::new();

fn slow_init() {
    SLOW_INIT_PID.get().unwrap().set(std::process::id());
    std::thread::sleep(Duration::from_secs(3600));
}

#[test]
fn a_kill_while_a_slow_initializer_runs_kills_the_workers() {
    let _wd = util::watchdog("slow initializer", Duration::from_secs(120));
    SLOW_INIT_PID.set(SharedValue::new(0).unwrap()).unwrap();
    let (ticks, ticker) = util::ticker();
    let builder = moss::spawn(|| ProcessPool::builder(1).initializer(slow_init).build());
    // Events, not a clock: the initializer runs, then the builder is killed.
    util::until("the initializer runs", Duration::from_secs(60), || {
        SLOW_INIT_PID.get().unwrap().get() != 0
    });
    let before = ticks.get();
    util::until(
        "the hub runs while build waits",
        Duration::from_secs(60),
        || ticks.get() >= before + 2,
    );
    assert!(!builder.is_finished(), "build waits for the initializer");
    builder.kill();
    assert!(builder.join().unwrap_err().is_killed());
    ticker.kill();
    let pid = SLOW_INIT_PID.get().unwrap().get();
    util::until(
        "the worker is killed and reaped",
        Duration::from_secs(60),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    );
}

#[test]
fn the_pools_chunksize_applies_to_map_map_async_and_imap() {
    let _wd = util::watchdog("pool chunksize", Duration::from_secs(120));
    // One task per worker: the pids count the tasks.
    let pool = ProcessPool::builder(2)
        .max_tasks_per_child(1)
        .chunksize(3)
        .build()
        .unwrap();
    let distinct = |pids: Vec<u32>| pids.into_iter().collect::<HashSet<u32>>().len();
    assert_eq!(distinct(pool.map(pid, vec![(); 9]).unwrap()), 3);
    assert_eq!(
        distinct(pool.map_async(pid, vec![(); 7], |_| {}).get().unwrap()),
        3
    );
    let pids: Vec<u32> = pool.imap(pid, vec![(); 6]).map(Result::unwrap).collect();
    assert_eq!(distinct(pids), 2);
    let pids: Vec<u32> = pool
        .imap_unordered(pid, vec![(); 6])
        .map(Result::unwrap)
        .collect();
    assert_eq!(distinct(pids), 2);
    // A call's own chunk size wins.
    assert_eq!(distinct(pool.map_chunked(pid, vec![(); 4], 1).unwrap()), 4);
    let pids: Vec<u32> = pool
        .imap(pid, vec![(); 4])
        .chunksize(4)
        .map(Result::unwrap)
        .collect();
    assert_eq!(distinct(pids), 1);
}
