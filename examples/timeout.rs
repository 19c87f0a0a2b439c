//! `moss::timeout` around blocking work, `join_timeout`, and `kill`.
//!
//! Run: `cargo run --example timeout`

use std::time::{Duration, Instant};

struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        println!("cleanup ran for {}", self.0);
    }
}

fn slow_answer() -> u32 {
    let _c = Cleanup("slow_answer");
    moss::sleep(Duration::from_secs(10));
    42
}

fn main() {
    let t = Instant::now();
    match moss::timeout(Duration::from_millis(100), slow_answer) {
        Ok(v) => println!("got {v}"),
        Err(e) => println!("timeout: {e} (after {:?})", t.elapsed()),
    }

    let h = moss::spawn(|| {
        moss::sleep(Duration::from_millis(50));
        "fast"
    });
    let h = match h.join_timeout(Duration::from_millis(10)) {
        Ok(r) => return println!("unexpectedly finished: {r:?}"),
        Err(h) => {
            println!("not finished after 10 ms, waiting more");
            h
        }
    };
    println!(
        "joined: {:?}",
        h.join_timeout(Duration::from_secs(5))
            .ok()
            .map(Result::unwrap)
    );

    let sleeper = moss::spawn(slow_answer);
    moss::sleep(Duration::from_millis(10));
    sleeper.kill();
    println!("killed: {}", sleeper.join().unwrap_err());
}
