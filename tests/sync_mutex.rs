//! `moss::sync::Mutex`: exclusion across coroutines and threads, FIFO
//! hand-off, timeouts, cancellation and the absence of poisoning.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::sync::{Mutex, Timeout};

#[test]
fn counter_incremented_by_coroutines_on_four_threads_is_exact() {
    let m = Arc::new(Mutex::new(0u64));
    let m2 = m.clone();
    moss::run_per_core(4, move |_| {
        for _ in 0..25 {
            let m = m2.clone();
            moss::spawn(move || {
                for i in 0..100 {
                    let mut g = m.lock();
                    let v = *g;
                    if i % 10 == 0 {
                        // Switch inside the critical section: others of this
                        // hub run and must wait for the lock.
                        moss::yield_now();
                    }
                    *g = v + 1;
                }
            });
        }
    });
    assert_eq!(*m.lock(), 4 * 25 * 100);
    assert!(!m.is_locked());
}

#[test]
fn waiters_get_the_lock_in_fifo_order() {
    let m = Arc::new(Mutex::new(Vec::new()));
    let held = m.lock();
    let hs: Vec<_> = (0..10)
        .map(|i| {
            let m = m.clone();
            moss::spawn(move || m.lock().push(i))
        })
        .collect();
    moss::yield_now(); // all ten are queued
    // A newcomer cannot overtake them, even when it asks right at the unlock.
    drop(held);
    assert!(m.try_lock().is_none());
    for r in moss::join_all(hs) {
        r.unwrap();
    }
    assert_eq!(*m.lock(), (0..10).collect::<Vec<_>>());
}

#[test]
fn lock_timeout_gives_up_then_succeeds() {
    let m = Arc::new(Mutex::new(1));
    let m2 = m.clone();
    let holder = moss::spawn(move || {
        let mut g = m2.lock();
        moss::sleep(Duration::from_millis(60));
        *g = 2;
        drop(g);
        // The lock was handed to the waiter: still locked right after.
        m2.is_locked()
    });
    moss::yield_now(); // the holder has the lock now
    let t = Instant::now();
    assert_eq!(
        m.lock_timeout(Duration::from_millis(20)).err(),
        Some(Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert!(m.lock_timeout(Duration::ZERO).is_err());
    assert!(m.try_lock().is_none());
    let g = m
        .lock_timeout(Duration::from_secs(5))
        .expect("released after 60 ms");
    assert_eq!(*g, 2);
    drop(g);
    assert!(holder.join().unwrap());
}

#[test]
fn a_waiter_killed_after_the_hand_off_passes_the_lock_on() {
    let m = Arc::new(Mutex::new(Vec::new()));
    let held = m.lock();
    let m1 = m.clone();
    let victim = moss::spawn(move || m1.lock().push("victim"));
    let m2 = m.clone();
    let next = moss::spawn(move || m2.lock().push("next"));
    moss::yield_now();
    drop(held); // handed to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    let next = next
        .join_timeout(Duration::from_secs(5))
        .expect("the lock was passed on");
    next.unwrap();
    assert_eq!(*m.lock(), vec!["next"]);
    assert!(!m.is_locked());
}

#[test]
fn timed_out_and_killed_waiters_leave_the_mutex_usable() {
    let m = Arc::new(Mutex::new(0));
    let held = m.lock();
    let m1 = m.clone();
    let timed = moss::spawn(move || moss::timeout(Duration::from_millis(10), || *m1.lock() += 1));
    let m2 = m.clone();
    let killed = moss::spawn(move || *m2.lock() += 1);
    moss::yield_now();
    killed.kill();
    assert!(timed.join().unwrap().is_err());
    drop(held);
    assert_eq!(*m.lock(), 0);
    assert!(!m.is_locked());
}

#[test]
fn a_panic_while_locked_does_not_poison() {
    let m = Rc::new(Mutex::new(String::from("before")));
    let m2 = m.clone();
    let h = moss::spawn(move || {
        let mut g = m2.lock();
        g.push_str(" during");
        panic!("inside the critical section");
    });
    assert!(h.join().unwrap_err().is_panic());
    assert_eq!(*m.lock(), "before during");
}

#[test]
fn plain_threads_and_coroutines_share_one_mutex() {
    let m = Arc::new(Mutex::new(0u32));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *m.lock() += 1;
                }
            })
        })
        .collect();
    let order = Rc::new(RefCell::new(0));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (m, order) = (m.clone(), order.clone());
            moss::spawn(move || {
                for _ in 0..500 {
                    let mut g = m.lock();
                    moss::yield_now();
                    *g += 1;
                    *order.borrow_mut() += 1;
                }
            })
        })
        .collect();
    for r in moss::join_all(hs) {
        r.unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.borrow(), 2000);
    assert_eq!(*m.lock(), 4000);
}

#[test]
fn guard_can_move_to_another_thread() {
    let m = Mutex::new(5);
    let t = std::thread::scope(|s| {
        let g = m.lock();
        s.spawn(move || *g * 2).join().unwrap()
    });
    assert_eq!(t, 10);
    assert!(!m.is_locked());
    assert_eq!(format!("{m:?}"), "Mutex { value: 5 }");
}

/// A failed `try_lock` leaves the lock with its owner (and its waiters).
#[test]
fn a_failed_try_lock_changes_nothing() {
    let m = Arc::new(Mutex::new(0));
    let mut g = m.lock();
    for _ in 0..3 {
        assert!(m.try_lock().is_none());
        assert!(m.lock_timeout(Duration::ZERO).is_err());
    }
    assert!(m.is_locked(), "still held by its owner");
    let m2 = m.clone();
    let waiter = moss::spawn(move || *m2.lock() += 10);
    moss::yield_now();
    assert!(m.try_lock().is_none());
    assert!(!waiter.is_finished(), "the waiter still waits");
    *g += 1;
    drop(g);
    waiter.join().unwrap();
    assert_eq!(*m.lock(), 11);
}
