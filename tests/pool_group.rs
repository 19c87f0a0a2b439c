//! `moss::pool::{Pool, Group}`: the size limit, ordered `map` and `imap`,
//! `imap_unordered`, `apply`, `apply_async`, `join`, `kill`,
//! `kill_on_drop` and slot accounting.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::pool::{Group, Pool};

mod util;

fn tracker() -> (Rc<Cell<usize>>, Rc<Cell<usize>>) {
    (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)))
}

#[test]
fn pool_never_exceeds_its_size_and_runs_members_concurrently() {
    let pool = Pool::new(5);
    let (now, max) = tracker();
    let t = Instant::now();
    let hs: Vec<_> = (0..50)
        .map(|i| {
            let (now, max) = (now.clone(), max.clone());
            pool.spawn(move || {
                now.set(now.get() + 1);
                max.set(max.get().max(now.get()));
                moss::sleep(Duration::from_millis(10));
                now.set(now.get() - 1);
                i
            })
        })
        .collect();
    pool.join();
    assert_eq!(max.get(), 5);
    assert!(pool.is_empty());
    assert_eq!(pool.free_count(), 5);
    // 10 rounds of 10 ms: concurrent, but limited.
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(100), "{el:?}");
    assert!(el < Duration::from_secs(3), "{el:?}");
    let sum: i32 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
    assert_eq!(sum, (0..50).sum());
}

#[test]
fn map_preserves_input_order_under_the_limit() {
    let pool = Pool::new(4);
    let (now, max) = tracker();
    let (n2, m2) = (now.clone(), max.clone());
    // Later items finish first.
    let out = pool.map(
        move |i: u64| {
            n2.set(n2.get() + 1);
            m2.set(m2.get().max(n2.get()));
            moss::sleep(Duration::from_millis(20 - i % 20));
            n2.set(n2.get() - 1);
            i * 2
        },
        0..40,
    );
    assert_eq!(out, (0..40).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(max.get(), 4);
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    let pool = Pool::new(3);
    let got: Vec<u64> = pool
        .imap_unordered(
            |ms: u64| {
                moss::sleep(Duration::from_millis(ms));
                ms
            },
            vec![100, 10, 55],
        )
        .collect();
    assert_eq!(got, vec![10, 55, 100]);
    // With a pool of 1 they run one by one, in input order.
    let one = Pool::new(1);
    let got: Vec<u64> = one.imap_unordered(|v: u64| v, 0..5).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn spawn_waits_for_a_free_slot() {
    let pool = Pool::new(2);
    assert_eq!(
        (pool.size(), pool.free_count(), pool.is_full()),
        (2, 2, false)
    );
    let a = pool.spawn(|| moss::sleep(Duration::from_millis(30)));
    let b = pool.spawn(|| moss::sleep(Duration::from_millis(30)));
    assert!(pool.is_full());
    assert_eq!(pool.len(), 2);
    // a and b begin their 30 ms during the 5 ms poll below at the earliest,
    // so a third spawn that waits for a free slot returns 30 ms after `t` or
    // later, however late the poll itself returns on a loaded machine.
    let t = Instant::now();
    assert!(
        pool.wait_available_timeout(Duration::from_millis(5))
            .is_err()
    );
    let c = pool.spawn(|| "third"); // waits until a or b finished
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "{:?}",
        t.elapsed()
    );
    assert!(a.is_finished() || b.is_finished());
    assert_eq!(c.join().unwrap(), "third");
    pool.wait_available();
    assert!(pool.join_timeout(Duration::from_secs(5)));
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn kill_stops_every_member_and_frees_the_slots() {
    let pool = Pool::new(3);
    let dropped = Rc::new(Cell::new(0));
    struct Count(Rc<Cell<i32>>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let c = Count(dropped.clone());
            pool.spawn(move || {
                let _c = c;
                moss::sleep(Duration::from_secs(3600));
            })
        })
        .collect();
    moss::yield_now(); // all three are sleeping
    assert!(!pool.join_timeout(Duration::from_millis(5)));
    let t = Instant::now();
    pool.kill();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(pool.is_empty());
    assert_eq!(dropped.get(), 3);
    assert_eq!(pool.free_count(), 3);
    for h in hs {
        assert!(h.join().unwrap_err().is_killed());
    }
    // A member killed through its own handle frees its slot too.
    let h = pool.spawn(|| moss::sleep(Duration::from_secs(3600)));
    assert_eq!(pool.free_count(), 2);
    h.kill();
    assert_eq!(pool.free_count(), 3);
    pool.join();
}

#[test]
fn a_panicking_map_task_is_reraised_in_the_caller() {
    let pool = Pool::new(2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map(
            |i: u32| {
                if i == 3 {
                    panic!("item {i} failed");
                }
                moss::sleep(Duration::from_millis(5));
                i
            },
            0..8,
        )
    }));
    let p = r.unwrap_err();
    assert_eq!(
        p.downcast_ref::<String>().map(String::as_str),
        Some("item 3 failed")
    );
    assert!(pool.join_timeout(Duration::from_secs(5)));
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn group_is_unbounded() {
    let group = Group::new();
    let (now, max) = tracker();
    let t = Instant::now();
    for _ in 0..1000 {
        let (now, max) = (now.clone(), max.clone());
        group.spawn(move || {
            now.set(now.get() + 1);
            max.set(max.get().max(now.get()));
            moss::sleep(Duration::from_millis(20));
            now.set(now.get() - 1);
        });
    }
    assert_eq!(group.len(), 1000);
    group.join();
    assert_eq!(max.get(), 1000);
    assert!(t.elapsed() < Duration::from_secs(2));
    let out = group.map(|s: &str| s.len(), vec!["a", "bb", "ccc"]);
    assert_eq!(out, vec![1, 2, 3]);
    let g2 = group.clone();
    g2.spawn(|| moss::sleep(Duration::from_secs(3600)));
    moss::yield_now();
    group.kill();
    assert!(group.is_empty() && g2.is_empty());
}

#[test]
#[should_panic(expected = "a pool needs at least one slot")]
fn a_pool_of_zero_is_refused() {
    let _ = Pool::new(0);
}

/// Ordered `imap`: results in input order although later items finish
/// first; items run concurrently under the limit, and the first result
/// comes as soon as it is done (the slowest item waits for a gate that
/// opens only after the first result).
#[test]
fn imap_yields_in_input_order_under_the_limit() {
    let pool = Pool::new(3);
    let (now, max) = tracker();
    let (n2, m2) = (now.clone(), max.clone());
    let gate = Rc::new(moss::sync::Event::new());
    let g2 = gate.clone();
    let mut it = pool.imap(
        move |ms: u64| {
            n2.set(n2.get() + 1);
            m2.set(m2.get().max(n2.get()));
            if ms == 300 {
                // Opened once the first result is out; a pool that held
                // the first result back for this item fails here.
                assert!(
                    g2.wait_timeout(Duration::from_secs(10)),
                    "the first result was not yielded before the slowest item ended"
                );
            }
            moss::sleep(Duration::from_millis(ms));
            n2.set(n2.get() - 1);
            ms
        },
        vec![10, 300, 20, 30, 5, 1],
    );
    assert_eq!(it.next(), Some(10));
    gate.set();
    let rest: Vec<u64> = it.collect();
    assert_eq!(rest, vec![300, 20, 30, 5, 1]);
    assert_eq!(max.get(), 3);
    assert!(pool.is_empty());
    // Lazy input, unbounded group.
    let group = Group::new();
    let got: Vec<usize> = group
        .imap(|s: String| s.len(), ["a", "bb", "ccc"].map(String::from))
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn imap_reraises_a_panic_and_ends_when_its_tasks_are_killed() {
    let pool = Pool::new(2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.imap(
            |i: u32| {
                if i == 2 {
                    panic!("item {i} failed");
                }
                i
            },
            0..5,
        )
        .collect::<Vec<_>>()
    }));
    let p = r.unwrap_err();
    assert_eq!(
        p.downcast_ref::<String>().map(String::as_str),
        Some("item 2 failed")
    );
    assert!(pool.join_timeout(Duration::from_secs(5)));

    // A pool kill ends the iteration: no further item is spawned.
    let started = Rc::new(Cell::new(0));
    let s = started.clone();
    let mut it = pool.imap(
        move |i: u32| {
            s.set(s.get() + 1);
            moss::sleep(Duration::from_secs(3600));
            i
        },
        0..100,
    );
    let p2 = pool.clone();
    let killer = moss::spawn(move || {
        while p2.len() < 2 {
            moss::yield_now();
        }
        p2.kill();
    });
    assert_eq!(it.next(), None);
    killer.join().unwrap();
    drop(it);
    assert!(pool.join_timeout(Duration::from_secs(5)));
    // Two ran when the pool was killed; the feeder may have spawned two
    // more into the freed slots before the iterator saw the kill.
    assert!(started.get() <= 4, "{}", started.get());
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn apply_returns_the_value_and_reraises_a_panic() {
    let pool = Pool::new(1);
    let busy = pool.spawn(|| moss::sleep(Duration::from_millis(50)));
    // Waits for the slot, then runs.
    let t = Instant::now();
    assert_eq!(pool.apply(|| 7 * 6), 42);
    assert!(t.elapsed() >= Duration::from_millis(40));
    assert!(busy.is_finished());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.apply(|| -> u8 { panic!("boom") })
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"boom"));
    assert_eq!(Group::new().apply(|| "g"), "g");
    assert_eq!(pool.free_count(), 1);
}

#[test]
fn apply_async_runs_the_callback_before_join_returns() {
    let pool = Pool::new(2);
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    let h = pool.apply_async(
        || {
            moss::sleep(Duration::from_millis(10));
            5
        },
        move |v| s.set(*v * 2),
    );
    assert_eq!(seen.get(), 0, "nothing ran yet");
    assert_eq!(h.join().unwrap(), 5);
    assert_eq!(seen.get(), 10);
    // A panicking task skips the callback; join reports the panic.
    let s = seen.clone();
    let h = Group::new().apply_async(|| -> u32 { panic!("task") }, move |_| s.set(99));
    assert!(h.join().unwrap_err().is_panic());
    assert_eq!(seen.get(), 10);
}

/// A coroutine that counts ticks until killed.
fn ticking(group: &Group, ticks: &Rc<Cell<u32>>) {
    let t = ticks.clone();
    group.spawn(move || {
        loop {
            t.set(t.get() + 1);
            moss::sleep(Duration::from_millis(1));
        }
    });
}

/// `kill_on_drop` ends the members when its owner ends: returning,
/// killed (the guard drops during the unwind, where it cannot wait), or
/// panicking.
#[test]
fn kill_on_drop_ends_the_members_however_the_owner_ends() {
    util::on_thread(Duration::from_secs(30), || {
        for how in ["return", "kill", "panic"] {
            let ticks = Rc::new(Cell::new(0));
            let members = Group::new();
            let (t, m) = (ticks.clone(), members.clone());
            let owner = moss::spawn(move || {
                let _kill = m.kill_on_drop();
                ticking(&m, &t);
                ticking(&m, &t);
                while t.get() < 4 {
                    moss::sleep(Duration::from_millis(1));
                }
                match how {
                    "return" => {}
                    "panic" => panic!("owner panics"),
                    _ => moss::sleep(Duration::from_secs(3600)),
                }
            });
            util::until("ticks", Duration::from_secs(10), || ticks.get() >= 4);
            if how == "kill" {
                owner.kill();
                assert!(owner.join().unwrap_err().is_killed());
            } else {
                let r = owner.join();
                assert_eq!(r.is_ok(), how == "return", "{how}");
            }
            util::until(how, Duration::from_secs(10), || members.is_empty());
            let n = ticks.get();
            moss::sleep(Duration::from_millis(20));
            assert_eq!(ticks.get(), n, "{how}: a member still ticks");
        }
    });
}
