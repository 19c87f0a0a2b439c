//! multiprocessing.Queue in moss: a bounded queue shared with child
//! processes; put/get with timeouts, full/empty/len.
//!
//! Run: `cargo run --example process_queue`

use std::sync::Arc;
use std::time::Duration;

use moss::pool::{Process, ProcessQueue};

fn main() -> std::io::Result<()> {
    // Queue(4): at most four items at a time.
    let q = Arc::new(ProcessQueue::<String>::new(4)?);
    q.put("a".into());
    q.put("b".into());
    println!(
        "len {} empty {} full {}",
        q.len(),
        q.is_empty(),
        q.is_full()
    );
    q.put("c".into());
    q.put("d".into());
    println!(
        "len {} empty {} full {}",
        q.len(),
        q.is_empty(),
        q.is_full()
    );

    // A put on a full queue waits; with a timeout it gives up.
    if let Err(full) = q.put_timeout("e".into(), Duration::from_millis(200)) {
        let msg = full.to_string();
        println!(
            "put timed out ({msg}); the item comes back: {:?}",
            full.into_inner()
        );
    }
    while let Ok(item) = q.get_nowait() {
        println!("got {item}");
    }
    // A get on an empty queue waits; with a timeout it gives up.
    if let Err(e) = q.get_timeout(Duration::from_millis(200)) {
        println!("get timed out: {e}");
    }
    println!("get_nowait on an empty queue: {:?}", q.get_nowait());

    // Producers in child processes, the consumer here.
    let producers: Vec<_> = (0..2)
        .map(|n| {
            let q = q.clone();
            Process::new(move || {
                for i in 0..3 {
                    q.put(format!(
                        "item {i} from producer {n} (pid {})",
                        std::process::id()
                    ));
                }
            })
            .start()
        })
        .collect::<Result<_, _>>()?;
    for _ in 0..6 {
        println!(
            "consumer got: {}",
            q.get_timeout(Duration::from_secs(10))
                .expect("producers stalled")
        );
    }
    for p in producers {
        p.join()?;
    }
    println!("queue empty again: {}", q.is_empty());
    Ok(())
}
