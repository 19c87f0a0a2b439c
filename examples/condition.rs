//! Producer and consumer with a condition variable (Python's
//! `threading.Condition`): a bounded buffer guarded by a `moss::sync::Mutex`,
//! with one `Condvar` for "not empty" and one for "not full".
//!
//! Python:
//!
//! ```text
//! with cond:
//!     while len(buf) >= CAPACITY:
//!         cond.wait()
//!     buf.append(item)
//!     cond.notify()
//! ```
//!
//! moss: `cv.wait_while(mutex.lock(), |buf| buf.len() >= CAPACITY)`, then
//! `notify_one()`. The same code runs once as two coroutines of one thread
//! and once as two OS threads. At the end the consumer waits with a timeout
//! (`cond.wait(timeout=...)`) for an item that never comes.
//!
//! Run: `cargo run --example condition`

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::sync::{Condvar, Mutex};

const ITEMS: u32 = 8;
const CAPACITY: usize = 2;

/// The shared buffer and its two conditions.
struct Shelf {
    items: Mutex<VecDeque<u32>>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Shelf {
    fn new() -> Shelf {
        Shelf {
            items: Mutex::new(VecDeque::new()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        }
    }

    fn put(&self, v: u32) -> usize {
        // Waits (releasing the mutex) while the shelf is full.
        let mut items = self
            .not_full
            .wait_while(self.items.lock(), |items| items.len() >= CAPACITY);
        items.push_back(v);
        let len = items.len();
        drop(items);
        self.not_empty.notify_one();
        len
    }

    fn get(&self) -> u32 {
        let mut items = self
            .not_empty
            .wait_while(self.items.lock(), |items| items.is_empty());
        let v = items.pop_front().expect("not empty");
        drop(items);
        self.not_full.notify_one();
        v
    }
}

fn produce(shelf: &Shelf, who: &str, start: Instant) {
    for i in 0..ITEMS {
        let len = shelf.put(i);
        println!(
            "{:>6.1} ms  {who} producer: put {i} (shelf holds {len})",
            ms(start)
        );
    }
}

fn consume(shelf: &Shelf, who: &str, start: Instant) -> Vec<u32> {
    (0..ITEMS)
        .map(|_| {
            let v = shelf.get();
            println!("{:>6.1} ms  {who} consumer: got {v}", ms(start));
            moss::sleep(Duration::from_millis(3)); // the consumer is the slow side
            v
        })
        .collect()
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    println!("== two coroutines of one thread, shelf capacity {CAPACITY}");
    let start = Instant::now();
    let shelf = Arc::new(Shelf::new());
    let s = shelf.clone();
    let producer = moss::spawn(move || produce(&s, "coroutine", start));
    let s = shelf.clone();
    let consumer = moss::spawn(move || consume(&s, "coroutine", start));
    producer.join().unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
    println!("coroutines: all {ITEMS} items in order\n");

    println!("== two OS threads, the same code");
    let start = Instant::now();
    let s = shelf.clone();
    let producer = std::thread::spawn(move || produce(&s, "thread", start));
    let s = shelf.clone();
    let consumer = std::thread::spawn(move || consume(&s, "thread", start));
    producer.join().unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
    println!("threads: all {ITEMS} items in order\n");

    println!("== waiting with a timeout for an item nobody puts");
    let (items, r) = shelf.not_empty.wait_timeout_while(
        shelf.items.lock(),
        Duration::from_millis(20),
        |items| items.is_empty(),
    );
    assert!(r.timed_out() && items.is_empty());
    println!("timed out after 20 ms: the shelf is still empty");
}
