//! moss::thread: OS threads whose join yields in a coroutine.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[test]
fn join_from_coroutines_yields_to_the_hub() {
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let ticker = {
        let (ticks, done) = (ticks.clone(), done.clone());
        moss::spawn(move || {
            while !done.get() {
                moss::sleep(Duration::from_millis(10));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    let t = Instant::now();
    let joiners: Vec<_> = (0..4u64)
        .map(|i| {
            moss::spawn(move || {
                let h = moss::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    i * 10
                });
                h.join().unwrap()
            })
        })
        .collect();
    let results: Vec<u64> = moss::join_all(joiners)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let elapsed = t.elapsed();
    done.set(true);
    ticker.join().unwrap();
    assert_eq!(results, vec![0, 10, 20, 30]);
    assert!(
        elapsed < Duration::from_secs(2),
        "joins did not overlap: {elapsed:?}"
    );
    // The hub kept running the ticker while four coroutines waited ~300 ms.
    assert!(ticks.get() >= 5, "ticker starved: {} ticks", ticks.get());
}

#[test]
fn panic_comes_back_from_join() {
    let h = moss::thread::spawn(|| -> u32 { panic!("thread went wrong") });
    let err = h.join().unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"thread went wrong"));
}

#[test]
fn join_timeout_gives_the_handle_back() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = moss::thread::spawn(move || {
        rx.recv().unwrap();
        7
    });
    let h = match h.join_timeout(Duration::from_millis(50)) {
        Err(h) => h,
        Ok(_) => panic!("joined a thread that was still blocked"),
    };
    assert!(!h.is_finished());
    tx.send(()).unwrap();
    let Ok(r) = h.join_timeout(Duration::from_secs(10)) else {
        panic!("thread did not finish")
    };
    assert_eq!(r.unwrap(), 7);
}

#[test]
fn builder_names_the_thread() {
    let h = moss::thread::Builder::new()
        .name("worker-1")
        .stack_size(512 * 1024)
        .spawn(|| std::thread::current().name().map(str::to_owned))
        .unwrap();
    assert_eq!(h.thread().name(), Some("worker-1"));
    assert_eq!(h.join().unwrap().as_deref(), Some("worker-1"));
}

#[test]
fn bad_name_is_an_error() {
    let r = moss::thread::Builder::new().name("a\0b").spawn(|| ());
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}

struct Collector {
    items: Vec<u32>,
    out: std::sync::Arc<moss::sync::Queue<(Option<String>, u32)>>,
}

impl moss::thread::Runnable for Collector {
    fn run(self) {
        let name = std::thread::current().name().map(str::to_owned);
        self.out.put((name, self.items.iter().sum()));
    }
    fn name(&self) -> Option<String> {
        Some("collector".into())
    }
}

#[test]
fn custom_thread_type() {
    use moss::thread::Runnable;
    let out = std::sync::Arc::new(moss::sync::Queue::new(1));
    let h = Collector {
        items: vec![1, 2, 3],
        out: out.clone(),
    }
    .start()
    .unwrap();
    // The root waits on the queue (the hub blocks until the thread puts).
    assert_eq!(out.get(), (Some("collector".to_owned()), 6));
    h.join().unwrap();
}
