//! gevent.subprocess: child processes whose waits and pipes yield.
//!
//! Runs ten `sleep 0.3` commands from ten coroutines (about 0.3 s in total,
//! not 3 s), feeds a child's stdin while reading its output
//! (`communicate`), and shows that unmodified `std::process` code
//! cooperates too after `patch_all`.
//!
//! ```sh
//! cargo run --example subprocess
//! ```

use std::time::{Duration, Instant};

use moss::subprocess::{Command, Stdio};

fn main() -> std::io::Result<()> {
    let t = Instant::now();
    let hs: Vec<_> = (0..10)
        .map(|_| moss::spawn(|| Command::new("sleep").arg("0.3").status()))
        .collect();
    for r in moss::join_all(hs) {
        assert!(r.expect("coroutine")?.success());
    }
    println!("10 x `sleep 0.3` in {:?}", t.elapsed());

    let child = Command::new("sort")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.communicate(b"pear\napple\nfig\n")?;
    print!(
        "sorted by a child:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    match Command::new("no-such-program").status() {
        Err(e) => println!("missing program: {:?}", e.kind()),
        Ok(s) => println!("unexpected: {s}"),
    }

    moss::monkey::patch_all();
    let t = Instant::now();
    let ticker = moss::spawn(|| {
        let mut n = 0;
        while moss::timeout(Duration::from_millis(10), || moss::sleep(Duration::MAX)).is_err() {
            n += 1;
            if n == 20 {
                break;
            }
        }
        n
    });
    let status = std::process::Command::new("sleep").arg("0.3").status()?;
    let ticks = ticker.join().expect("ticker");
    println!(
        "std::process under patch_all: {status} after {:?}, {ticks} ticks meanwhile",
        t.elapsed()
    );
    Ok(())
}
