//! threading in moss: OS threads whose join yields, a custom thread type
//! (run()), a shared lock (with a timeout, the notes' way to avoid
//! deadlock), a producer/consumer queue, and a thread pool.
//!
//! Run: `cargo run --example threads`

use std::sync::Arc;
use std::time::Duration;

use moss::pool::ThreadPool;
use moss::sync::{Mutex, Queue};
use moss::thread::Runnable;

/// A custom thread type: the notes' "subclass Thread, override run()".
struct Greeter {
    name: String,
}

impl Runnable for Greeter {
    fn run(self) {
        println!(
            "{} says hello from {:?}",
            self.name,
            std::thread::current().name()
        );
    }

    fn name(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

fn main() {
    // Thread(target, name, args) + start + join: four threads share a counter
    // under a lock.
    let counter = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let counter = counter.clone();
            moss::thread::Builder::new()
                .name(format!("adder-{n}"))
                .spawn(move || {
                    for _ in 0..10_000 {
                        *counter.lock() += 1;
                    }
                })
                .expect("spawn")
        })
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    println!("counter = {} (4 threads x 10000)", *counter.lock());

    Greeter {
        name: "greeter".into(),
    }
    .start()
    .expect("spawn")
    .join()
    .unwrap();

    // lock with a timeout: give up instead of deadlocking.
    let guard = counter.lock();
    let c = counter.clone();
    let waiter = moss::thread::spawn(move || c.lock_timeout(Duration::from_millis(100)).is_ok());
    println!("second locker got the lock: {}", waiter.join().unwrap());
    drop(guard);

    // Producer / consumer between two threads through a bounded queue.
    let q = Arc::new(Queue::new(2));
    let producer = {
        let q = q.clone();
        moss::thread::spawn(move || {
            for i in 0..5 {
                q.put(i);
                println!("produced {i}");
            }
            q.put(-1); // done
        })
    };
    let consumer = {
        let q = q.clone();
        moss::thread::spawn(move || {
            let mut sum = 0;
            loop {
                let v: i32 = q.get();
                if v < 0 {
                    break sum;
                }
                println!("consumed {v}");
                sum += v;
            }
        })
    };
    producer.join().unwrap();
    println!("consumer sum = {}", consumer.join().unwrap());

    // Coroutines waiting on a thread pool: the hub keeps running them all.
    let pool = ThreadPool::new(4);
    let hs: Vec<_> = (0..4u64)
        .map(|i| {
            let pool = pool.clone();
            moss::spawn(move || {
                pool.apply(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    i * 10
                })
                .unwrap()
            })
        })
        .collect();
    let got: Vec<u64> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    println!("thread pool results {got:?}");
    pool.close();
    pool.join();
}
