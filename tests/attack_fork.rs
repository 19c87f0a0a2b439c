//! Attacks: `Process` children forked while other threads of the parent
//! are busy inside moss's thread pools (the resolver's, `ThreadPool`) and
//! moss's sync primitives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moss::pool::{Process, ThreadPool};

mod util;

fn in_process(body: impl FnOnce() + 'static) -> Result<i32, String> {
    let p = Process::new(body).start().unwrap();
    match p.join_timeout(Duration::from_secs(15)).unwrap() {
        Some(code) => Ok(code),
        None => {
            p.kill().unwrap();
            p.join().unwrap();
            Err("the child hung".into())
        }
    }
}

/// Forty children forked while three parent threads hammer one
/// `ThreadPool` (apply from coroutines of their own hubs) and the resolver:
/// every child's own `apply` and `lookup_host` complete.
#[test]
fn children_forked_while_pools_are_busy() {
    let _wd = util::watchdog("fork while busy", Duration::from_secs(300));
    let pool = ThreadPool::new(3);
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|t| {
            let pool = pool.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                moss::run(move || {
                    let hs: Vec<_> = (0..4)
                        .map(|c| {
                            let pool = pool.clone();
                            let stop = stop.clone();
                            moss::spawn(move || {
                                let mut n = 0u64;
                                while !stop.load(Ordering::Relaxed) {
                                    if (t + c) % 2 == 0 {
                                        n += pool.apply(|| 1u64).unwrap();
                                    } else {
                                        n += moss::net::lookup_host("localhost:80").unwrap().count()
                                            as u64;
                                    }
                                }
                                n
                            })
                        })
                        .collect();
                    moss::join_all(hs)
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let mut failures = Vec::new();
    for i in 0..40u64 {
        let p = pool.clone();
        let r = in_process(move || {
            let r = moss::timeout(Duration::from_secs(8), || {
                let a = p.apply(move || i * 3).unwrap();
                let n = moss::net::lookup_host("localhost:443").unwrap().count();
                (a, n)
            });
            let (a, n) = r.expect("hung in the child");
            assert_eq!(a, i * 3);
            assert!(n > 0);
        });
        if r != Ok(0) {
            failures.push((i, r));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        for r in b.join().unwrap() {
            r.unwrap();
        }
    }
    assert!(failures.is_empty(), "children failed: {failures:?}");
}

/// A child forked while another parent thread holds a moss `Mutex` and
/// another waits for it: the child's `try_lock` reports it locked (the
/// documented fork rule), and `lock_timeout` times out instead of hanging.
#[test]
fn child_sees_a_lock_held_by_a_parent_thread() {
    let _wd = util::watchdog("fork with a held lock", Duration::from_secs(60));
    let m = Arc::new(moss::sync::Mutex::new(0u32));
    let (m2, m3) = (m.clone(), m.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _g = m2.lock();
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
    });
    rx.recv().unwrap();
    let waiter = std::thread::spawn(move || *m3.lock() += 1);
    std::thread::sleep(Duration::from_millis(50));
    let m4 = m.clone();
    let r = in_process(move || {
        assert!(m4.try_lock().is_none());
        assert!(m4.lock_timeout(Duration::from_millis(100)).is_err());
    });
    assert_eq!(r, Ok(0));
    holder.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(*m.lock(), 1);
}
