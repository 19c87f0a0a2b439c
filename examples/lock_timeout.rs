//! Deadlock, and how `Mutex::lock_timeout` avoids it.
//!
//! Two workers need the same two locks but take them in opposite order:
//! worker A locks `left` then `right`, worker B locks `right` then `left`.
//! If each gets its first lock before the other asks for its second, both
//! wait for each other forever: a deadlock.
//!
//! 1. With plain `lock()` the two coroutines deadlock; we notice only
//!    because the whole attempt runs under `moss::timeout`.
//! 2. With `lock_timeout`, a worker that cannot get its second lock in time
//!    releases its first one, backs off and retries: both finish. The same
//!    code then runs on two OS threads.
//!
//! Run: `cargo run --example lock_timeout`

use std::sync::Arc;
use std::time::Duration;

use moss::sync::Mutex;

type Locks = Arc<(Mutex<u32>, Mutex<u32>)>;

/// Takes `first` then `second` with plain `lock()`.
fn naive(name: &str, first: &Mutex<u32>, second: &Mutex<u32>) {
    let mut a = first.lock();
    println!("  {name}: got its first lock");
    moss::sleep(Duration::from_millis(10)); // the other one takes its first lock now
    println!("  {name}: waiting for its second lock...");
    let mut b = second.lock(); // never returns: the other holds it and waits for us
    *a += 1;
    *b += 1;
}

/// Takes `first` then tries `second` for a while; on timeout, releases
/// `first`, backs off and retries. Returns the number of attempts.
fn polite(name: &str, first: &Mutex<u32>, second: &Mutex<u32>, backoff: Duration) -> u32 {
    for attempt in 1.. {
        let mut a = first.lock();
        moss::sleep(Duration::from_millis(10));
        match second.lock_timeout(Duration::from_millis(30)) {
            Ok(mut b) => {
                *a += 1;
                *b += 1;
                println!("  {name}: got both locks on attempt {attempt}");
                return attempt;
            }
            Err(e) => {
                println!("  {name}: second lock: {e}; releasing the first and backing off");
                drop(a);
                moss::sleep(backoff);
            }
        }
    }
    unreachable!()
}

fn main() {
    println!("== 1. plain lock(): A takes left then right, B takes right then left");
    let locks: Locks = Arc::new((Mutex::new(0), Mutex::new(0)));
    let (l1, l2) = (locks.clone(), locks.clone());
    let a =
        moss::spawn(move || moss::timeout(Duration::from_millis(200), || naive("A", &l1.0, &l1.1)));
    let b =
        moss::spawn(move || moss::timeout(Duration::from_millis(200), || naive("B", &l2.1, &l2.0)));
    let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
    assert!(ra.is_err() && rb.is_err());
    println!(
        "  deadlock: neither finished ({}); nothing was changed: {:?}\n",
        ra.unwrap_err(),
        (*locks.0.lock(), *locks.1.lock())
    );

    println!("== 2. lock_timeout() with back-off, two coroutines");
    let (l1, l2) = (locks.clone(), locks.clone());
    // Different back-offs break the symmetry, so one of them wins the next round.
    let a = moss::spawn(move || polite("A", &l1.0, &l1.1, Duration::from_millis(5)));
    let b = moss::spawn(move || polite("B", &l2.1, &l2.0, Duration::from_millis(25)));
    let tries = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((*locks.0.lock(), *locks.1.lock()), (2, 2));
    println!(
        "  both finished (attempts: A {}, B {}); each lock was taken twice\n",
        tries.0, tries.1
    );

    println!("== 3. the same with two OS threads");
    let (l1, l2) = (locks.clone(), locks.clone());
    let a = std::thread::spawn(move || polite("thread A", &l1.0, &l1.1, Duration::from_millis(5)));
    let b = std::thread::spawn(move || polite("thread B", &l2.1, &l2.0, Duration::from_millis(25)));
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!((*locks.0.lock(), *locks.1.lock()), (4, 4));
    println!("  both threads finished");
}
