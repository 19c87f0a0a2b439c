//! multiprocessing.Pipe in moss: a two-way channel between a parent and a
//! child process.
//!
//! Python:
//!
//! ```text
//! from multiprocessing import Process, Pipe
//!
//! def worker(conn):
//!     while True:
//!         msg = conn.recv()
//!         if msg is None:
//!             break
//!         conn.send(msg.upper())
//!     conn.close()
//!
//! parent_conn, child_conn = Pipe()
//! p = Process(target=worker, args=(child_conn,))
//! p.start()
//! parent_conn.send("hello")
//! print(parent_conn.recv())
//! if not parent_conn.poll(0.2): ...
//! ```
//!
//! moss: `pipe::<T>()` gives two ends; each can `send(&T)` and `recv()`
//! (any serde type), `recv_timeout(d)` and `poll(d)`. The child gets its end
//! by moving it into its closure (Python's `args=(child_conn,)`). When the
//! child exits, its end closes and the parent's `recv` reports end-of-file
//! (Python's `EOFError`).
//!
//! Run: `cargo run --example pipe`

use std::time::Duration;

use moss::pool::{Process, pipe};

fn main() -> std::io::Result<()> {
    // Option<String>: None tells the child to stop.
    let (parent_conn, child_conn) = pipe::<Option<String>>()?;

    let p = Process::new(move || {
        while let Ok(Some(msg)) = child_conn.recv() {
            if msg == "slow" {
                moss::sleep(Duration::from_millis(200)); // a long job
            }
            let reply = format!("{} (from pid {})", msg.to_uppercase(), std::process::id());
            child_conn.send(&Some(reply)).expect("parent gone");
        }
    })
    .name("upper")
    .start()?;

    for word in ["hello", "pipe", "world"] {
        parent_conn.send(&Some(word.to_string()))?;
        println!("parent got: {:?}", parent_conn.recv()?);
    }

    // poll(timeout): is there anything to read? Nothing was asked, so no.
    println!(
        "poll(0.2 s) with nothing sent: {}",
        parent_conn.poll(Duration::from_millis(200))
    );
    // recv with a timeout gives up instead of waiting forever.
    match parent_conn.recv_timeout(Duration::from_millis(200)) {
        Ok(m) => println!("unexpected: {m:?}"),
        Err(e) => println!("recv_timeout: {e}"),
    }

    // While the parent waits in recv for a slow answer, its other
    // coroutines run.
    let ticker = moss::spawn(|| {
        for i in 1..=3 {
            moss::sleep(Duration::from_millis(50));
            println!("  tick {i} (the parent's hub keeps running)");
        }
    });
    parent_conn.send(&Some("slow".to_string()))?;
    println!("parent got: {:?}", parent_conn.recv()?);
    ticker.join().expect("ticker");

    // Tell the child to stop; once it has exited its end is closed.
    parent_conn.send(&None)?;
    println!("child {} exited with {}", p.name(), p.join()?);
    match parent_conn.recv() {
        Ok(m) => println!("unexpected: {m:?}"),
        Err(e) => println!("recv after the child exited: {e} ({:?})", e.kind()),
    }
    Ok(())
}
