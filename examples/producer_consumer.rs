//! A producer and a consumer talking through a bounded `moss::sync::Queue`,
//! once as two coroutines of one thread and once as two OS threads: the
//! same queue type and the same blocking code in both cases.
//!
//! The producer is faster than the consumer, so the queue (capacity 3) fills
//! up and `put` waits; the trace shows the two sides taking turns, and the
//! consumer gets every item in order.
//!
//! Run: `cargo run --example producer_consumer`

use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::sync::Queue;

const ITEMS: u32 = 10;
const CAPACITY: usize = 3;

fn produce(q: &Queue<u32>, who: &str, start: Instant) {
    for i in 0..ITEMS {
        q.put(i); // waits while the queue is full
        println!(
            "{:>6.1} ms  {who} producer: put {i} (queue holds {})",
            ms(start),
            q.len()
        );
    }
}

fn consume(q: &Queue<u32>, who: &str, start: Instant, work: impl Fn()) -> Vec<u32> {
    (0..ITEMS)
        .map(|_| {
            let v = q.get(); // waits while the queue is empty
            println!("{:>6.1} ms  {who} consumer: got {v}", ms(start));
            work(); // the consumer is the slow side
            v
        })
        .collect()
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    println!("== two coroutines of one thread, queue capacity {CAPACITY}");
    let start = Instant::now();
    let q = Arc::new(Queue::new(CAPACITY));
    let tx = q.clone();
    let producer = moss::spawn(move || produce(&tx, "coroutine", start));
    let rx = q.clone();
    let consumer = moss::spawn(move || {
        consume(&rx, "coroutine", start, || {
            moss::sleep(Duration::from_millis(5))
        })
    });
    producer.join().unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
    println!(
        "coroutines: all {ITEMS} items arrived in order in {:.1} ms\n",
        ms(start)
    );

    println!("== two OS threads, the same queue type");
    let start = Instant::now();
    let q = Arc::new(Queue::new(CAPACITY));
    let tx = q.clone();
    let producer = std::thread::spawn(move || produce(&tx, "thread", start));
    let rx = q.clone();
    let consumer = std::thread::spawn(move || {
        // A plain thread blocks in `get`; moss::sleep just sleeps here.
        consume(&rx, "thread", start, || {
            moss::sleep(Duration::from_millis(5))
        })
    });
    producer.join().unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
    println!(
        "threads: all {ITEMS} items arrived in order in {:.1} ms",
        ms(start)
    );
}
