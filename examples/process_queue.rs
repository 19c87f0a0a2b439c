//! multiprocessing.Queue in moss: a bounded queue shared with child
//! processes; put/get with timeouts, full/empty/len.
//!
//! Run: `cargo run --example process_queue`

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use moss::pool::{Process, ProcessQueue};

fn main() -> std::io::Result<()> {
    // Queue(4): at most four items at a time.
    let q = Arc::new(ProcessQueue::<String>::new(4)?);
    q.put("a".into())?;
    q.put("b".into())?;
    println!(
        "len {} empty {} full {}",
        q.len(),
        q.is_empty(),
        q.is_full()
    );
    q.put("c".into())?;
    q.put("d".into())?;
    println!(
        "len {} empty {} full {}",
        q.len(),
        q.is_empty(),
        q.is_full()
    );

    // A put on a full queue waits; with a timeout it gives up.
    match q.put_timeout("e".into(), Duration::from_millis(200)) {
        Err(e) if e.kind() == ErrorKind::TimedOut => println!("put timed out: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    while let Ok(item) = q.get_nowait() {
        println!("got {item}");
    }
    // A get on an empty queue waits; with a timeout it gives up.
    if let Err(e) = q.get_timeout(Duration::from_millis(200)) {
        println!("get timed out: {e}");
    }

    // Producers in child processes, the consumer here.
    let producers: Vec<_> = (0..2)
        .map(|n| {
            let q = q.clone();
            Process::new(move || {
                for i in 0..3 {
                    q.put(format!(
                        "item {i} from producer {n} (pid {})",
                        std::process::id()
                    ))
                    .unwrap();
                }
            })
            .start()
        })
        .collect::<Result<_, _>>()?;
    for _ in 0..6 {
        println!("consumer got: {}", q.get_timeout(Duration::from_secs(10))?);
    }
    for p in producers {
        p.join()?;
    }
    println!("queue empty again: {}", q.is_empty());
    Ok(())
}
