//! Stack overflow in a coroutine: one clear line on stderr, then abort.
//! Each case runs this test binary again as a child process.

use std::hint::black_box;
use std::time::Duration;

mod util;

fn recurse(n: u64) -> u64 {
    let buf = [n; 128];
    black_box(&buf);
    // `black_box(true)` hides that this never stops.
    if black_box(n == u64::MAX) {
        0
    } else {
        recurse(black_box(n + 1)) + buf[7]
    }
}

fn child(case: &str) -> (Option<i32>, String) {
    let run = util::run_in_child(case, Duration::from_secs(60));
    assert!(!run.timed_out, "{case} hung:\n{}", run.stderr);
    (run.signal, run.stderr)
}

fn in_child(case: &str) -> bool {
    util::in_child(case)
}

#[test]
fn coroutine_overflow_is_reported_and_aborts() {
    if in_child("coroutine_overflow_is_reported_and_aborts") {
        let h = moss::Builder::new()
            .name("deep")
            .stack_size(64 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = h.join();
        unreachable!("the overflow aborts the process");
    }
    let (sig, stderr) = child("coroutine_overflow_is_reported_and_aborts");
    assert_eq!(sig, Some(libc::SIGABRT), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("moss: coroutine"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.starts_with("moss: coroutine 'deep' (#"), "{line}");
    assert!(
        line.ends_with(") has overflowed its stack of 64 KiB"),
        "{line}"
    );
}

#[test]
fn unnamed_coroutine_overflow_names_the_id() {
    if in_child("unnamed_coroutine_overflow_names_the_id") {
        let h = moss::spawn(|| recurse(0));
        let _ = h.join();
        unreachable!();
    }
    let (sig, stderr) = child("unnamed_coroutine_overflow_names_the_id");
    assert_eq!(sig, Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains("has overflowed its stack of 128 KiB"),
        "{stderr}"
    );
}

#[test]
fn thread_overflow_still_reaches_std_handler() {
    if in_child("thread_overflow_still_reaches_std_handler") {
        // Create the hub (and so moss's handler) first, then overflow a plain thread.
        moss::spawn(|| ()).join().unwrap();
        std::thread::Builder::new()
            .name("plain".into())
            .stack_size(256 * 1024)
            .spawn(|| recurse(0))
            .unwrap()
            .join()
            .ok();
        unreachable!();
    }
    let (sig, stderr) = child("thread_overflow_still_reaches_std_handler");
    assert!(sig.is_some(), "{stderr}");
    assert!(
        stderr.contains("thread 'plain'") && stderr.contains("overflowed its stack"),
        "{stderr}"
    );
    assert!(!stderr.contains("moss: coroutine"), "{stderr}");
}

#[test]
fn greenlet_overflow_on_the_root_is_reported_and_aborts() {
    if in_child("greenlet_overflow_on_the_root_is_reported_and_aborts") {
        let g = moss::greenlet::Greenlet::new(|v: u64| recurse(v));
        g.switch(0);
        unreachable!("the overflow aborts the process");
    }
    let (sig, stderr) = child("greenlet_overflow_on_the_root_is_reported_and_aborts");
    assert_eq!(sig, Some(libc::SIGABRT), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("moss: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.starts_with("moss: a greenlet of coroutine 'main' (#"),
        "{line}"
    );
    assert!(
        line.ends_with(") has overflowed its stack of 128 KiB"),
        "{line}"
    );
}

#[test]
fn greenlet_overflow_in_a_coroutine_names_the_coroutine() {
    if in_child("greenlet_overflow_in_a_coroutine_names_the_coroutine") {
        let h = moss::Builder::new()
            .name("driver")
            .spawn(|| moss::greenlet::Greenlet::new(|v: u64| recurse(v)).switch(0))
            .unwrap();
        let _ = h.join();
        unreachable!("the overflow aborts the process");
    }
    let (sig, stderr) = child("greenlet_overflow_in_a_coroutine_names_the_coroutine");
    assert_eq!(sig, Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr.contains("moss: a greenlet of coroutine 'driver' (#"),
        "{stderr}"
    );
    assert!(
        stderr.contains(") has overflowed its stack of 128 KiB"),
        "{stderr}"
    );
}
