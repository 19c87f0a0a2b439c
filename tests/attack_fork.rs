//! Attacks: `Process` children forked while other threads of the parent
//! are busy inside moss's thread pools (the resolver's, `ThreadPool`) and
//! moss's sync primitives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use moss::pool::ThreadPool;

mod util;

/// Forty children forked while three parent threads hammer one
/// `ThreadPool` (apply from coroutines of their own hubs) and the resolver:
/// every child's own `apply` and `lookup_host` complete. (A child forked
/// while a resolver thread was inside `getaddrinfo` used to wait forever in
/// its own lookup, on a lock of glibc's that no fork handler resets.)
#[test]
fn children_forked_while_pools_are_busy() {
    let _wd = util::watchdog("fork while busy", Duration::from_secs(300));
    let pool = ThreadPool::new(3);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let busy: Vec<_> = (0..3)
        .map(|t| {
            let pool = pool.clone();
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::spawn(move || {
                moss::run(move || {
                    let hs: Vec<_> = (0..4)
                        .map(|c| {
                            let pool = pool.clone();
                            let (stop, started) = (stop.clone(), started.clone());
                            moss::spawn(move || {
                                let mut n = 0u64;
                                let mut first = true;
                                while !stop.load(Ordering::Relaxed) {
                                    if (t + c) % 2 == 0 {
                                        n += pool.apply(|| 1u64).unwrap();
                                    } else {
                                        n += moss::net::lookup_host("localhost:80").unwrap().count()
                                            as u64;
                                    }
                                    if std::mem::take(&mut first) {
                                        started.fetch_add(1, Ordering::SeqCst);
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
    // The forks begin once all twelve are busy.
    util::until(
        "every busy coroutine's first call",
        Duration::from_secs(60),
        || started.load(Ordering::SeqCst) == 12,
    );
    let mut failures = Vec::new();
    for i in 0..40u64 {
        let p = pool.clone();
        let r = util::in_process_within(Duration::from_secs(30), move || {
            let r = moss::timeout(Duration::from_secs(20), || {
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
    let (release_tx, release) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _g = m2.lock();
        tx.send(()).unwrap();
        release.recv().unwrap(); // held until the child is done
    });
    rx.recv().unwrap();
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        // SAFETY: a plain syscall without arguments.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        *m3.lock() += 1
    });
    util::until_thread_sleeps(tid.recv().unwrap()); // waiting for the lock
    let m4 = m.clone();
    let r = util::in_process(move || {
        assert!(m4.try_lock().is_none());
        assert!(m4.lock_timeout(Duration::from_millis(100)).is_err());
    });
    assert_eq!(r, 0);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(*m.lock(), 1);
}
