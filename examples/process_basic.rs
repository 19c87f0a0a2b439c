//! multiprocessing.Process in moss: a target, a name and arguments; start,
//! join, terminate, and run() in the current process.
//!
//! Run: `cargo run --example process_basic`

use std::time::Duration;

use moss::pool::Process;

/// The target: its arguments are whatever the closure captures.
fn work(name: &str, rounds: u32) {
    for i in 0..rounds {
        println!("[{name}] pid {} round {i}", std::process::id());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> std::io::Result<()> {
    println!("parent pid {}", std::process::id());

    // Process(target=work, name="p1", args=("p1", 3))
    let p1 = Process::new(|| work("p1", 3)).name("p1").start()?;
    let p2 = Process::new(|| work("p2", 2)).name("p2").start()?;
    println!(
        "started {} (pid {}) and {} (pid {})",
        p1.name(),
        p1.pid(),
        p2.name(),
        p2.pid()
    );

    // join() waits for the child; in a coroutine it would yield to the hub.
    println!("{} exited with {}", p1.name(), p1.join()?);
    println!("{} exited with {}", p2.name(), p2.join()?);

    // terminate(): SIGTERM; the exit code is minus the signal number.
    let sleeper = Process::new(|| std::thread::sleep(Duration::from_secs(60)))
        .name("sleeper")
        .start()?;
    std::thread::sleep(Duration::from_millis(100));
    println!("{} alive: {}", sleeper.name(), sleeper.is_alive());
    sleeper.terminate()?;
    println!(
        "{} terminated, exit code {:?}",
        sleeper.name(),
        sleeper.join()?
    );

    // A panicking target exits with 101.
    let bad = Process::new(|| panic!("child failed on purpose")).start()?;
    println!("panicking child exit code {}", bad.join()?);

    // run(): the target in this very process, no child.
    Process::new(|| work("inline", 1)).run();
    Ok(())
}
