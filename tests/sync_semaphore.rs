//! `moss::sync::{Semaphore, BoundedSemaphore}`: concurrency limits, FIFO,
//! timeouts, over-release and cancellation.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod util;

use moss::sync::{BoundedSemaphore, Semaphore, Timeout};

#[test]
fn semaphore_limits_concurrency_to_exactly_n() {
    let sem = Arc::new(Semaphore::new(3));
    let (now, max) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let t = Instant::now();
    let hs: Vec<_> = (0..30)
        .map(|_| {
            let (sem, now, max) = (sem.clone(), now.clone(), max.clone());
            moss::spawn(move || {
                sem.acquire();
                now.set(now.get() + 1);
                max.set(max.get().max(now.get()));
                moss::sleep(Duration::from_millis(10));
                now.set(now.get() - 1);
                sem.release();
            })
        })
        .collect();
    for r in moss::join_all(hs) {
        r.unwrap();
    }
    assert_eq!(max.get(), 3);
    // 10 rounds of 10 ms, not 30 serial sleeps nor all at once.
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(100), "{el:?}");
    assert!(el < Duration::from_secs(3), "{el:?}");
    assert_eq!(sem.available_permits(), 3);
}

#[test]
fn semaphore_limits_coroutines_of_several_threads() {
    let sem = Arc::new(Semaphore::new(2));
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (s2, n2, m2) = (sem.clone(), now.clone(), max.clone());
    moss::run_per_core(3, move |_| {
        for _ in 0..5 {
            let (sem, now, max) = (s2.clone(), n2.clone(), m2.clone());
            moss::spawn(move || {
                sem.acquire();
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                moss::sleep(Duration::from_millis(5));
                now.fetch_sub(1, Ordering::SeqCst);
                sem.release();
            });
        }
    });
    assert_eq!(max.load(Ordering::SeqCst), 2);
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn waiters_are_served_in_fifo_order() {
    let sem = Arc::new(Semaphore::new(0));
    let order = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..5)
        .map(|i| {
            let (sem, order) = (sem.clone(), order.clone());
            moss::spawn(move || {
                sem.acquire();
                order.borrow_mut().push(i);
            })
        })
        .collect();
    moss::yield_now();
    for _ in 0..5 {
        sem.release();
        assert!(
            !sem.try_acquire(),
            "a newcomer must not take a handed permit"
        );
    }
    moss::join_all(hs);
    assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn acquire_timeout_and_try_acquire() {
    let sem = Semaphore::new(1);
    assert!(sem.try_acquire());
    assert!(!sem.try_acquire());
    let t = Instant::now();
    assert_eq!(sem.acquire_timeout(Duration::from_millis(20)), Err(Timeout));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(sem.acquire_timeout(Duration::ZERO), Err(Timeout));
    sem.release();
    assert_eq!(sem.acquire_timeout(Duration::ZERO), Ok(()));
    // An unbounded semaphore may be released past its initial count.
    sem.release();
    sem.release();
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn bounded_semaphore_refuses_release_past_its_count() {
    let sem = BoundedSemaphore::new(2);
    let err = sem.release().unwrap_err();
    assert_eq!(err.max, 2);
    assert_eq!(
        err.to_string(),
        "semaphore released more times than acquired (its maximum is 2)"
    );
    sem.acquire();
    assert_eq!(sem.release(), Ok(()));
    assert!(sem.release().is_err());
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn a_permit_handed_to_a_killed_waiter_is_not_lost() {
    let sem = Arc::new(BoundedSemaphore::new(1));
    sem.acquire();
    let s1 = sem.clone();
    let victim = moss::spawn(move || s1.acquire());
    let s2 = sem.clone();
    let next = moss::spawn(move || {
        s2.acquire();
        s2.release().unwrap();
        "next ran"
    });
    moss::yield_now();
    sem.release().unwrap(); // handed to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    let next = next
        .join_timeout(Duration::from_secs(5))
        .expect("the permit was passed on");
    assert_eq!(next.unwrap(), "next ran");
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn timeouts_racing_with_releases_from_another_thread_lose_no_permit() {
    let sem = Arc::new(Semaphore::new(0));
    let got = Arc::new(AtomicUsize::new(0));
    let s2 = sem.clone();
    let releaser = std::thread::spawn(move || {
        for _ in 0..300 {
            s2.release();
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (sem, got) = (sem.clone(), got.clone());
            moss::spawn(move || {
                for _ in 0..400 {
                    if sem.acquire_timeout(Duration::from_micros(100)).is_ok() {
                        got.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    moss::join_all(hs);
    releaser.join().unwrap();
    // Every permit was either acquired or is still there.
    assert_eq!(got.load(Ordering::SeqCst) + sem.available_permits(), 300);
}

#[test]
fn release_at_the_largest_count_saturates() {
    // `usize::MAX` permits is how "no limit" is spelled; a release on top of
    // it must neither overflow (a panic in debug) nor wrap to 0 (a semaphore
    // that suddenly has no permits in release builds).
    let sem = Semaphore::new(usize::MAX);
    sem.release();
    assert_eq!(sem.available_permits(), usize::MAX);
    assert!(sem.try_acquire());
    assert_eq!(sem.available_permits(), usize::MAX - 1);
    sem.release();
    sem.release();
    assert_eq!(sem.available_permits(), usize::MAX);
}

/// A permit handed to a waiter that has not run yet still counts against a
/// bounded semaphore's maximum: a release past it fails at once (as in
/// Python), and the give-back of a killed waiter fits.
#[test]
fn a_permit_in_flight_counts_against_the_bound() {
    let sem = Arc::new(BoundedSemaphore::new(1));
    sem.acquire();
    let s1 = sem.clone();
    let victim = moss::spawn(move || s1.acquire());
    util::until_parked(victim.id());
    sem.release().unwrap(); // handed to the victim, which has not run yet
    assert_eq!(
        sem.release().unwrap_err().max,
        1,
        "one permit exists, in flight"
    );
    assert_eq!(sem.available_permits(), 0);
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    assert_eq!(sem.available_permits(), 1);
    assert!(sem.release().is_err());
    // A waiter that runs takes its permit out of flight.
    sem.acquire();
    let s2 = sem.clone();
    let w = moss::spawn(move || {
        s2.acquire();
        s2.release().unwrap();
    });
    util::until_parked(w.id());
    sem.release().unwrap();
    w.join().unwrap();
    assert_eq!(sem.available_permits(), 1);
    assert!(sem.release().is_err());
}
