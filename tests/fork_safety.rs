//! Internal thread pools (the resolver's, `ThreadPool`) used in a parent
//! keep working in a forked child: the child starts its own threads instead
//! of waiting on the parent's, which do not exist there.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use moss::pool::ThreadPool;

mod util;

#[test]
fn lookup_host_in_a_child_after_the_parent_resolved() {
    let _wd = util::watchdog("lookup in a child", Duration::from_secs(60));
    let before: Vec<_> = moss::net::lookup_host("localhost:80").unwrap().collect();
    assert!(!before.is_empty());
    // Let the resolver thread go idle: a child that inherits an idle worker
    // count would hand its lookup to a thread that does not exist there.
    std::thread::sleep(Duration::from_millis(100));
    let code = util::in_process(move || {
        let r = moss::timeout(Duration::from_secs(10), || {
            moss::net::lookup_host("localhost:80").map(|i| i.collect::<Vec<_>>())
        });
        let addrs = r.expect("the lookup hung in the child").unwrap();
        assert_eq!(addrs, before);
    });
    assert_eq!(code, 0);
}

#[test]
fn thread_pool_apply_in_a_child_after_use_in_the_parent() {
    let _wd = util::watchdog("pool in a child", Duration::from_secs(60));
    let pool = ThreadPool::new(2);
    // Two workers started and idle in the parent.
    assert_eq!(pool.map(|x: u32| x + 1, vec![1, 2]).unwrap(), vec![2, 3]);
    // And one busy at the fork, holding a task.
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let busy = pool.apply_async(move || g.wait().is_leader(), |_| ());
    let p2 = pool.clone();
    let code = util::in_process(move || {
        let r = moss::timeout(Duration::from_secs(10), || {
            let hs: Vec<_> = (0..4u64)
                .map(|i| {
                    let p = p2.clone();
                    moss::spawn(move || p.apply(move || i * 10).unwrap())
                })
                .collect();
            moss::join_all(hs)
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        });
        assert_eq!(r.expect("apply hung in the child"), vec![0, 10, 20, 30]);
        // The child's own tasks only: join returns.
        p2.close();
        p2.join();
    });
    assert_eq!(code, 0);
    // The parent's pool is untouched by the child's.
    gate.wait();
    busy.get();
    assert_eq!(pool.apply(|| 5).unwrap(), 5);
}

#[test]
fn a_pool_closed_in_the_parent_stays_closed_in_the_child() {
    let pool = ThreadPool::new(1);
    assert_eq!(pool.apply(|| 1).unwrap(), 1);
    pool.close();
    let code = util::in_process(move || {
        assert!(matches!(
            pool.apply(|| 1),
            Err(moss::pool::PoolError::Closed)
        ));
    });
    assert_eq!(code, 0);
}

#[test]
fn subprocess_reaping_in_a_child_after_the_parent_used_the_reaper() {
    let _wd = util::watchdog("reaper in a child", Duration::from_secs(60));
    let gone = |pid: u32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    // The parent's reaper thread exists (a dropped, running child).
    let c = moss::subprocess::Command::new("sleep")
        .arg("0.05")
        .spawn()
        .unwrap();
    let pid = c.id();
    drop(c);
    util::until(
        "the parent's orphan to be reaped",
        Duration::from_secs(20),
        || gone(pid),
    );
    let code = util::in_process(move || {
        // The child's own orphan goes to a reaper of its own.
        let c = moss::subprocess::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let pid = c.id();
        drop(c);
        util::until(
            "the child's orphan to be reaped",
            Duration::from_secs(10),
            || gone(pid),
        );
        // And waits there work as usual.
        let out = moss::subprocess::Command::new("echo")
            .arg("hi")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
    });
    assert_eq!(code, 0);
}
