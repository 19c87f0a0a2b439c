//! `moss::compat::tokio` (cargo feature `tokio`): futures that need tokio's
//! reactor and timer run on moss's tokio runtime while the calling coroutine
//! parks; cancellation aborts the task; panics come back; a forked child gets
//! a fresh runtime; the runtime is shut down at exit; and a real client
//! library (redis' async API) against a real `redis-server`.
#![cfg(feature = "tokio")]

mod util;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::compat;
use util::DropCounter;
use util::redis::RedisServer;

#[test]
fn tokio_sleeps_overlap_and_the_hub_keeps_running() {
    let _wd = util::watchdog("tokio sleeps", Duration::from_secs(60));
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        for _ in 0..20 {
            t.set(t.get() + 1);
            moss::sleep(Duration::from_millis(2));
        }
    });
    let start = Instant::now();
    let hs: Vec<_> = (0..50u64)
        .map(|i| {
            moss::spawn(move || {
                compat::tokio(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    i
                })
            })
        })
        .collect();
    let sum: u64 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
    let took = start.elapsed();
    assert_eq!(sum, (0..50).sum());
    // 50 x 100 ms one after the other would take 5 s.
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    ticker.join().unwrap();
    assert_eq!(ticks.get(), 20);
}

#[test]
fn tokio_tcp_client_against_a_moss_server() {
    let _wd = util::watchdog("tokio client, moss server", Duration::from_secs(60));
    let listener = moss::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = moss::spawn(move || {
        for _ in 0..10 {
            let (mut s, _) = listener.accept().unwrap();
            moss::spawn(move || {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap();
                buf[..n].reverse();
                s.write_all(&buf[..n]).unwrap();
            });
        }
    });
    let hs: Vec<_> = (0..10)
        .map(|i| {
            moss::spawn(move || {
                compat::tokio(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                    c.write_all(format!("abc{i}").as_bytes()).await.unwrap();
                    let mut out = Vec::new();
                    c.read_to_end(&mut out).await.unwrap();
                    out
                })
            })
        })
        .collect();
    for (i, r) in moss::join_all(hs).into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("{i}cba").into_bytes());
    }
    server.join().unwrap();
    moss::wait();
}

/// Holds a counted value; pending for an hour.
async fn hold_for_an_hour(c: util::Counted) {
    let _c = c;
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[test]
fn kill_aborts_the_tokio_task() {
    let _wd = util::watchdog("kill aborts", Duration::from_secs(60));
    let drops = DropCounter::new();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let c = drops.token();
    let h = moss::spawn(move || {
        compat::tokio(async move {
            let _ = tx.send(()); // running on tokio now
            hold_for_an_hour(c).await
        })
    });
    moss::block_on(rx).unwrap();
    util::until_parked(h.id());
    assert_eq!(drops.drops(), 0);
    h.kill();
    // Dropped by tokio before the kill returned.
    assert_eq!(drops.drops(), 1);
    assert!(h.join().unwrap_err().is_killed());
}

#[test]
fn timeout_aborts_the_tokio_task() {
    let _wd = util::watchdog("timeout aborts", Duration::from_secs(60));
    let drops = DropCounter::new();
    let c = drops.token();
    let h = moss::spawn(move || {
        let t = Instant::now();
        let r = moss::timeout(Duration::from_millis(50), || {
            compat::tokio(hold_for_an_hour(c))
        });
        (r.is_err(), t.elapsed())
    });
    let (elapsed, took) = h.join().unwrap();
    assert!(elapsed);
    assert!(took >= Duration::from_millis(50), "{took:?}");
    assert_eq!(drops.drops(), 1);
    // The root can time it out too.
    let c = drops.token();
    assert!(
        moss::timeout(Duration::from_millis(20), || compat::tokio(
            hold_for_an_hour(c)
        ))
        .is_err()
    );
    assert_eq!(drops.drops(), 2);
}

#[test]
fn a_panic_in_the_future_is_resumed_in_the_caller() {
    let h = moss::spawn(|| {
        compat::tokio(async {
            tokio::task::yield_now().await;
            panic!("tokio side failed");
        })
    });
    let e = h.join().unwrap_err();
    assert!(e.is_panic());
    assert_eq!(
        e.into_panic().downcast_ref::<&str>(),
        Some(&"tokio side failed")
    );
    // The runtime is still fine.
    assert_eq!(compat::tokio(async { 5 }), 5);
}

#[test]
fn on_the_root_and_on_a_plain_thread() {
    let _wd = util::watchdog("root and plain thread", Duration::from_secs(60));
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        for _ in 0..5 {
            t.set(t.get() + 1);
            moss::yield_now();
        }
    });
    let v = compat::tokio(async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        "root"
    });
    assert_eq!(v, "root");
    assert_eq!(ticks.get(), 5);
    ticker.join().unwrap();
    let t = std::thread::spawn(|| {
        compat::tokio(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            "thread"
        })
    });
    assert_eq!(t.join().unwrap(), "thread");
}

#[test]
fn calling_it_from_moss_s_own_tokio_threads_is_a_clear_error() {
    let h = moss::spawn(|| compat::tokio(async { compat::tokio(async { 1 }) }));
    let e = h.join().unwrap_err();
    assert!(e.to_string().contains("own tokio runtime"), "{e}");
}

#[test]
fn a_forked_child_gets_a_fresh_runtime() {
    let _wd = util::watchdog("fork", Duration::from_secs(60));
    // The parent's runtime is running (its threads do not exist in a child).
    assert_eq!(compat::tokio(async { 1 }), 1);
    let p = util::Reap(
        moss::pool::Process::new(|| {
            let v = compat::tokio(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                let c = tokio::spawn(tokio::net::TcpStream::connect(addr));
                l.accept().await.unwrap();
                c.await.unwrap().unwrap();
                42
            });
            std::process::exit(v);
        })
        .start()
        .unwrap(),
    );
    assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), Some(42));
    assert_eq!(compat::tokio(async { 2 }), 2);
}

#[test]
fn the_runtime_is_shut_down_at_exit() {
    struct Marker;
    impl Drop for Marker {
        fn drop(&mut self) {
            eprintln!("moss-test: a tokio task was dropped at shutdown");
        }
    }
    if util::in_child("the_runtime_is_shut_down_at_exit") {
        // A task that outlives the call, pending when the process exits.
        compat::tokio(async {
            let m = Marker;
            tokio::spawn(async move {
                let _m = m;
                std::future::pending::<()>().await
            });
        });
        return;
    }
    let r = util::run_in_child("the_runtime_is_shut_down_at_exit", Duration::from_secs(60));
    assert!(r.success(), "{r:?}");
    assert!(
        r.stderr.contains("a tokio task was dropped at shutdown"),
        "{r:?}"
    );
}

#[test]
fn hundred_coroutines_query_redis_concurrently() {
    let _wd = util::watchdog("redis", Duration::from_secs(120));
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = format!("redis://{}/", server.addr);
    let client = redis::Client::open(url).unwrap();
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let (t, d) = (ticks.clone(), done.clone());
    let ticker = moss::spawn(move || {
        while !d.get() {
            t.set(t.get() + 1);
            moss::sleep(Duration::from_millis(5));
        }
    });
    let start = Instant::now();
    let hs: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            moss::spawn(move || {
                compat::tokio(async move {
                    let cfg = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(30)))
                        .set_response_timeout(Some(Duration::from_secs(30)));
                    let mut con = client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?;
                    let key = format!("moss:key:{i}");
                    let () = redis::cmd("SET")
                        .arg(&key)
                        .arg(format!("value {i}"))
                        .query_async(&mut con)
                        .await?;
                    let v: String = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
                    // The server waits 200 ms for an item that never comes,
                    // without blocking its other clients.
                    let popped: Option<(String, String)> = redis::cmd("BLPOP")
                        .arg(format!("moss:empty:{i}"))
                        .arg(0.2)
                        .query_async(&mut con)
                        .await?;
                    Ok::<_, redis::RedisError>((v, popped))
                })
            })
        })
        .collect();
    for (i, r) in moss::join_all(hs).into_iter().enumerate() {
        let (v, popped) = r.unwrap().unwrap();
        assert_eq!(v, format!("value {i}"));
        assert_eq!(popped, None);
    }
    let took = start.elapsed();
    done.set(true);
    ticker.join().unwrap();
    // One after the other, the waits alone would take 100 x 200 ms = 20 s.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The hub ran its other coroutine throughout.
    assert!(ticks.get() >= 10, "{}", ticks.get());
    // The same connection type from the root, and a value set by a
    // coroutine read back.
    let n: usize = compat::tokio(async move {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("DBSIZE").query_async(&mut con).await.unwrap()
    });
    assert_eq!(n, 100);
}

#[test]
fn tokio_tasks_await_results_that_coroutines_produce() {
    let _wd = util::watchdog("tokio awaits coroutines", Duration::from_secs(60));
    // Ten tasks on moss's tokio runtime each await an AsyncResult that a
    // coroutine of this hub sets; the coroutines wait for the tasks with
    // compat::tokio, the root sets the results.
    let results: Vec<_> = (0..10)
        .map(|_| moss::sync::AsyncResult::<u32>::new())
        .collect();
    let hs: Vec<_> = results
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, r)| {
            moss::spawn(move || {
                compat::tokio(async move {
                    let handle = tokio::spawn(async move { r.await * 2 });
                    handle.await.unwrap() + i as u32
                })
            })
        })
        .collect();
    moss::sleep(Duration::from_millis(20));
    for (i, r) in results.iter().enumerate() {
        r.set(i as u32 * 10);
    }
    let got: Vec<u32> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(got, (0..10).map(|i| i * 21).collect::<Vec<_>>());
}

#[test]
fn a_kill_while_tokio_drops_a_timed_out_future_waits_for_the_drop() {
    // The coroutine's timeout fires; while it waits (in its unwind) for
    // tokio to drop the future, whose destructor is slow, it is killed: no
    // second unwind (an abort), the wait goes on until the future is gone,
    // and the kill lands at the next blocking point.
    struct SlowDrop(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        #[allow(dead_code)] util::Counted,
    );
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    if util::in_child("a_kill_while_tokio_drops_a_timed_out_future_waits_for_the_drop") {
        let drops = DropCounter::new();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow = SlowDrop(started.clone(), drops.token());
        let h = moss::spawn(move || {
            let r = moss::timeout(Duration::from_millis(20), || {
                compat::tokio(async move {
                    let _s = slow;
                    std::future::pending::<()>().await
                })
            });
            assert!(r.is_err());
            moss::sleep(Duration::from_secs(10)); // the kill lands here
        });
        util::until("the slow drop to start", Duration::from_secs(10), || {
            started.load(std::sync::atomic::Ordering::SeqCst)
        });
        util::until_parked(h.id());
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        assert_eq!(drops.drops(), 1);
        println!("moss-test: killed cleanly");
        return;
    }
    let r = util::run_in_child(
        "a_kill_while_tokio_drops_a_timed_out_future_waits_for_the_drop",
        Duration::from_secs(60),
    );
    assert!(
        r.success() && r.stdout.contains("moss-test: killed cleanly"),
        "{r:?}"
    );
}

#[test]
fn first_use_from_many_threads_at_once_starts_one_runtime() {
    if util::in_child("first_use_from_many_threads_at_once_starts_one_runtime") {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let ts: Vec<_> = (0..8)
            .map(|i| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    compat::tokio(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let name = std::thread::current().name().map(str::to_owned);
                        (i, name)
                    })
                })
            })
            .collect();
        for (i, t) in ts.into_iter().enumerate() {
            let (j, name) = t.join().unwrap();
            assert_eq!(i, j);
            assert_eq!(name.as_deref(), Some("moss-tokio"));
        }
        let threads = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter(|e| {
                let comm = e.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "moss-tokio")
            })
            .count();
        println!("moss-test: moss-tokio threads: {threads}");
        return;
    }
    let r = util::run_in_child(
        "first_use_from_many_threads_at_once_starts_one_runtime",
        Duration::from_secs(60),
    );
    assert!(r.success(), "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "moss-tokio threads: {}",
            compat::TOKIO_WORKER_THREADS
        )),
        "{r:?}"
    );
}

#[test]
fn works_under_patch_all() {
    // Patching is process-wide: in a child of its own.
    if util::in_child("works_under_patch_all") {
        moss::monkey::patch_all();
        let start = Instant::now();
        let hs: Vec<_> = (0..20u64)
            .map(|i| {
                moss::spawn(move || {
                    // Blocking std code in the coroutine, async code on tokio.
                    std::thread::sleep(Duration::from_millis(20));
                    compat::tokio(async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        i
                    })
                })
            })
            .collect();
        let sum: u64 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
        assert_eq!(sum, 190);
        let took = start.elapsed();
        // One after the other: 20 x 70 ms = 1.4 s.
        assert!(took < Duration::from_millis(1000), "{took:?}");
        println!("moss-test: patched ok");
        return;
    }
    let r = util::run_in_child("works_under_patch_all", Duration::from_secs(60));
    assert!(
        r.success() && r.stdout.contains("moss-test: patched ok"),
        "{r:?}"
    );
}
