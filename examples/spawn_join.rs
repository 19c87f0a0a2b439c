//! Spawning coroutines from a plain `fn main` and joining them: the root
//! runs the hub while it waits, so the ten 100 ms sleeps overlap.
//!
//! Run: `cargo run --example spawn_join`

use std::time::{Duration, Instant};

fn main() {
    let t = Instant::now();
    let handles: Vec<_> = (0..10)
        .map(|i| {
            moss::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    moss::sleep(Duration::from_millis(100));
                    println!(
                        "{} done after {:?}",
                        moss::current().name().unwrap(),
                        t.elapsed()
                    );
                    i * i
                })
                .expect("valid builder")
        })
        .collect();
    println!("{}", moss::dump());
    let squares: Vec<u32> = moss::join_all(handles)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    println!(
        "squares {squares:?} in {:?} (10 x 100 ms slept concurrently)",
        t.elapsed()
    );

    let failing = moss::spawn(|| -> u32 { panic!("something went wrong") });
    match failing.join() {
        Ok(_) => unreachable!(),
        Err(e) => println!("join reported: {e}"),
    }
}
