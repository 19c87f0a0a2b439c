//! multiprocessing's Lock, Value, Semaphore and Event in moss: what child
//! processes share besides queues and pipes.
//!
//! Python:
//!
//! ```text
//! from multiprocessing import Process, Lock, Value, Semaphore, Event
//!
//! def work(lock, counter):
//!     for _ in range(10000):
//!         lock.acquire()
//!         counter.value += 1        # read, add, write: unsafe without the lock
//!         lock.release()
//!
//! lock = Lock()
//! counter = Value('i', 0, lock=False)
//! ps = [Process(target=work, args=(lock, counter)) for _ in range(4)]
//! ...
//! if lock.acquire(timeout=0.5): ...   # deadlock avoidance: give up after a while
//! ```
//!
//! moss: `ProcessLock` (`lock()` returns a guard; `lock_timeout(d)`),
//! `SharedValue<T>` (`get`, `set`, and `update(|v| ..)`, which is atomic on
//! its own), `ProcessSemaphore`, `ProcessEvent`. Create them before starting
//! the children and share them with an `Arc`. A process killed while it
//! holds the lock does not wedge the others: the next waiter takes the lock
//! over and is told so.
//!
//! Run: `cargo run --example process_lock`

use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::{Process, ProcessEvent, ProcessLock, ProcessSemaphore, SharedValue};

fn main() -> std::io::Result<()> {
    // 1. Four processes add 10,000 each to a shared counter, all starting
    //    when the event is set.
    let go = Arc::new(ProcessEvent::new()?);
    let lock = Arc::new(ProcessLock::new()?);
    let counter = Arc::new(SharedValue::new(0u64)?);
    let unsafe_counter = Arc::new(SharedValue::new(0u64)?);
    let ps: Vec<_> = (0..4)
        .map(|_| {
            let (go, lock, counter, unsafe_counter) = (
                go.clone(),
                lock.clone(),
                counter.clone(),
                unsafe_counter.clone(),
            );
            Process::new(move || {
                go.wait();
                for _ in 0..10_000 {
                    {
                        let _g = lock.lock(); // lock.acquire() ... release() at the end of the block
                        let v = counter.get();
                        std::thread::yield_now(); // let the others run in between
                        counter.set(v + 1);
                    }
                    // The same read-add-write without the lock loses updates
                    // when processes interleave (separate processes share no
                    // GIL, in Python as here).
                    let v = unsafe_counter.get();
                    std::thread::yield_now();
                    unsafe_counter.set(v + 1);
                }
            })
            .start()
        })
        .collect::<Result<_, _>>()?;
    go.set();
    for p in ps {
        p.join()?;
    }
    println!("with the lock:    {} (expected 40000)", counter.get());
    println!("without the lock: {} (updates lost)", unsafe_counter.get());

    // 2. lock.acquire(timeout=...): give up instead of deadlocking.
    let g = lock.lock();
    let l2 = lock.clone();
    let p = Process::new(move || match l2.lock_timeout(Duration::from_millis(300)) {
        Ok(_) => println!("child: got the lock"),
        Err(e) => println!("child: lock_timeout gave up ({e}), no deadlock"),
    })
    .start()?;
    p.join()?;
    drop(g);

    // 3. A child killed while holding the lock: the parent takes it over.
    let locked = Arc::new(ProcessEvent::new()?);
    let (l2, e2) = (lock.clone(), locked.clone());
    let p = Process::new(move || {
        let _g = l2.lock();
        e2.set();
        moss::sleep(Duration::from_secs(3600)); // holds it "forever"
    })
    .start()?;
    locked.wait();
    p.kill()?;
    println!("child killed while holding the lock: exit {}", p.join()?);
    let t = Instant::now();
    let g = lock.lock();
    println!(
        "parent took the lock over after {:?}; previous owner died: {}",
        t.elapsed(),
        g.owner_died()
    );
    drop(g);

    // 4. Semaphore(2): at most two children in the section at once;
    //    Event: they all start when the parent says so.
    let sem = Arc::new(ProcessSemaphore::new(2)?);
    let go = Arc::new(ProcessEvent::new()?);
    let inside = Arc::new(SharedValue::new(0u32)?);
    let started = Instant::now();
    let ps: Vec<_> = (0..4)
        .map(|i| {
            let (sem, go, inside) = (sem.clone(), go.clone(), inside.clone());
            Process::new(move || {
                go.wait();
                sem.acquire();
                let n = inside.update(|n| {
                    *n += 1;
                    *n
                });
                println!("  child {i} inside ({n} in the section)");
                moss::sleep(Duration::from_millis(200));
                inside.update(|n| *n -= 1);
                sem.release();
            })
            .start()
        })
        .collect::<Result<_, _>>()?;
    println!("event set: the children start");
    go.set();
    for p in ps {
        p.join()?;
    }
    println!(
        "four 200 ms sections, two at a time: {:?} (about 400 ms)",
        started.elapsed()
    );
    Ok(())
}
