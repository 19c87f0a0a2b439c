//! Cross-thread stress: many producers and consumers on several hubs and
//! plain threads, with timeouts and kills racing the hand-offs. Every item
//! must arrive exactly once; every permit and lock must come back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use moss::sync::{Mutex, Queue, Semaphore, bounded};

const PER_PRODUCER: usize = 2000;

#[test]
fn items_cross_hubs_and_threads_exactly_once() {
    let q = Arc::new(Queue::new(4));
    let seen = Arc::new(StdMutex::new(vec![0u8; 4 * PER_PRODUCER]));
    // Two plain threads produce.
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    q.put(p * PER_PRODUCER + i);
                }
            })
        })
        .collect();
    // Two hubs: each has a producer coroutine and consumer coroutines that
    // use short timeouts and are sometimes killed mid-wait.
    let (q2, seen2) = (q.clone(), seen.clone());
    let taken = Arc::new(AtomicUsize::new(0));
    let taken2 = taken.clone();
    moss::run_per_core(2, move |hub| {
        let q = q2.clone();
        moss::spawn(move || {
            for i in 0..PER_PRODUCER {
                q.put((2 + hub) * PER_PRODUCER + i);
            }
        });
        for c in 0..3 {
            let (q, seen, taken) = (q2.clone(), seen2.clone(), taken2.clone());
            moss::spawn(move || {
                while taken.load(Ordering::SeqCst) < 4 * PER_PRODUCER {
                    let got = if c == 0 {
                        q.get_timeout(Duration::from_micros(200)).ok()
                    } else {
                        moss::timeout(Duration::from_millis(1), || q.get()).ok()
                    };
                    if let Some(v) = got {
                        seen.lock().unwrap()[v] += 1;
                        taken.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    for p in producers {
        p.join().unwrap();
    }
    assert!(q.is_empty());
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|&n| n == 1),
        "an item was lost or duplicated"
    );
}

#[test]
fn locks_and_permits_survive_racing_timeouts_on_several_hubs() {
    let m = Arc::new(Mutex::new(0u64));
    let sem = Arc::new(Semaphore::new(2));
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (m2, s2, i2, x2, d2) = (
        m.clone(),
        sem.clone(),
        inside.clone(),
        max.clone(),
        done.clone(),
    );
    moss::run_per_core(3, move |_| {
        for _ in 0..4 {
            let (m, sem, inside, max, done) =
                (m2.clone(), s2.clone(), i2.clone(), x2.clone(), d2.clone());
            moss::spawn(move || {
                for i in 0..300 {
                    if sem.acquire_timeout(Duration::from_micros(100)).is_ok() {
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        if i % 7 == 0 {
                            moss::yield_now();
                        }
                        inside.fetch_sub(1, Ordering::SeqCst);
                        sem.release();
                    }
                    match m.lock_timeout(Duration::from_micros(50)) {
                        Ok(mut g) => *g += 1,
                        Err(_) => {
                            *m.lock() += 1;
                        }
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), 12);
    assert_eq!(*m.lock(), 12 * 300);
    assert!(max.load(Ordering::SeqCst) <= 2);
    assert_eq!(sem.available_permits(), 2);
    assert!(!m.is_locked());
}

#[test]
fn rendezvous_channel_between_hubs_with_timed_out_receivers() {
    let (tx, rx) = bounded::<usize>(0);
    let rx = Arc::new(rx);
    let got = Arc::new(AtomicUsize::new(0));
    let sum = Arc::new(AtomicUsize::new(0));
    let sender = std::thread::spawn(move || {
        for i in 1..=1000 {
            tx.send(i).unwrap();
        }
    });
    let (rx2, got2, sum2) = (rx.clone(), got.clone(), sum.clone());
    moss::run_per_core(2, move |_| {
        for _ in 0..2 {
            let (rx, got, sum) = (rx2.clone(), got2.clone(), sum2.clone());
            moss::spawn(move || {
                loop {
                    let r = moss::timeout(Duration::from_micros(300), || rx.recv());
                    match r {
                        Ok(Ok(v)) => {
                            got.fetch_add(1, Ordering::SeqCst);
                            sum.fetch_add(v, Ordering::SeqCst);
                        }
                        Ok(Err(_)) => return, // every sender is gone
                        Err(_) => {}          // timed out: try again
                    }
                }
            });
        }
    });
    sender.join().unwrap();
    assert_eq!(got.load(Ordering::SeqCst), 1000);
    assert_eq!(sum.load(Ordering::SeqCst), 1000 * 1001 / 2);
}
