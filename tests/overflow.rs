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

/// Runs `body` as the test `case` in a child process, where it must end
/// the process by `SIGABRT`; returns the child's stderr.
fn aborts(case: &str, body: impl FnOnce()) -> String {
    if util::in_child(case) {
        body();
        unreachable!("the overflow aborts the process");
    }
    let run = util::run_in_child(case, Duration::from_secs(60));
    assert!(!run.timed_out, "{case} hung:\n{}", run.stderr);
    assert_eq!(run.signal, Some(libc::SIGABRT), "{}", run.stderr);
    run.stderr
}

#[test]
fn coroutine_overflow_is_reported_and_aborts() {
    let stderr = aborts("coroutine_overflow_is_reported_and_aborts", || {
        let h = moss::Builder::new()
            .name("deep")
            .stack_size(64 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = h.join();
    });
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
    let stderr = aborts("unnamed_coroutine_overflow_names_the_id", || {
        let _ = moss::spawn(|| recurse(0)).join();
    });
    assert!(
        stderr.contains("has overflowed its stack of 128 KiB"),
        "{stderr}"
    );
}

#[test]
fn thread_overflow_still_reaches_std_handler() {
    // std's handler reports the overflow and aborts.
    let stderr = aborts("thread_overflow_still_reaches_std_handler", || {
        // Create the hub (and so moss's handler) first, then overflow a plain thread.
        moss::spawn(|| ()).join().unwrap();
        std::thread::Builder::new()
            .name("plain".into())
            .stack_size(256 * 1024)
            .spawn(|| recurse(0))
            .unwrap()
            .join()
            .ok();
    });
    assert!(
        stderr.contains("thread 'plain'") && stderr.contains("overflowed its stack"),
        "{stderr}"
    );
    assert!(!stderr.contains("moss: coroutine"), "{stderr}");
}

#[test]
fn greenlet_overflow_on_the_root_is_reported_and_aborts() {
    let stderr = aborts(
        "greenlet_overflow_on_the_root_is_reported_and_aborts",
        || {
            moss::greenlet::Greenlet::new(|v: u64| recurse(v)).switch(0);
        },
    );
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
    let stderr = aborts(
        "greenlet_overflow_in_a_coroutine_names_the_coroutine",
        || {
            let h = moss::Builder::new()
                .name("driver")
                .spawn(|| moss::greenlet::Greenlet::new(|v: u64| recurse(v)).switch(0))
                .unwrap();
            let _ = h.join();
        },
    );
    assert!(
        stderr.contains("moss: a greenlet of coroutine 'driver' (#"),
        "{stderr}"
    );
    assert!(
        stderr.contains(") has overflowed its stack of 128 KiB"),
        "{stderr}"
    );
}
