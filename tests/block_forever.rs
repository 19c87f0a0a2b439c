//! "Would block forever": a root that waits on something nothing can ever
//! wake panics with a report (what each coroutine waits on) instead of
//! hanging, and `moss::wait` on the root returns. Waits on `moss::sync`
//! objects count as stuck only when no other thread exists to wake them, so
//! these cases run in a forked child (`moss::pool::Process`), which has one
//! thread: its body runs in a coroutine that the child's root joins, then
//! the root waits for the coroutines the body left.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moss::pool::{PANIC_EXIT_CODE, Process};

mod util;

/// Runs `body` in a forked child and returns its exit code (0, or
/// `PANIC_EXIT_CODE` if the body or the root panicked) and the message of
/// the last panic there, if any.
fn in_child(body: impl FnOnce() + 'static) -> (i32, Option<String>) {
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "block_forever-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&log);
    let path = log.clone();
    let p = Process::new(move || {
        std::panic::set_hook(Box::new(move |info| {
            let _ = std::fs::write(&path, info.to_string());
        }));
        body()
    })
    .start()
    .unwrap();
    let code = match p.join_timeout(Duration::from_secs(60)).unwrap() {
        Some(code) => code,
        None => {
            p.kill().unwrap();
            p.join().unwrap();
            panic!("the child hung");
        }
    };
    (code, std::fs::read_to_string(&log).ok())
}

#[test]
fn a_root_joining_a_coroutine_stuck_on_an_event_panics_with_a_report() {
    let _wd = util::watchdog("stuck on an Event", Duration::from_secs(120));
    let (code, msg) = in_child(|| {
        let ev = Arc::new(moss::sync::Event::new());
        let e = ev.clone();
        moss::Builder::new()
            .name("stuck")
            .spawn(move || e.wait())
            .unwrap()
            .join()
            .unwrap();
    });
    assert_eq!(code, PANIC_EXIT_CODE);
    let msg = msg.expect("a panic message");
    assert!(msg.contains("would block forever"), "{msg}");
    assert!(msg.contains("the root is waiting on 'join'"), "{msg}");
    // The dump: the body waits for "stuck", which waits on the event.
    let line = msg.lines().find(|l| l.contains("stuck")).expect(&msg);
    assert!(line.contains("waiting on Event::wait for "), "{msg}");
}

#[test]
fn a_coroutine_stuck_on_a_queue_nobody_else_holds_is_reported() {
    let _wd = util::watchdog("stuck on a Queue", Duration::from_secs(120));
    let (code, msg) = in_child(|| {
        let q = moss::sync::Queue::<u32>::unbounded();
        let _ = q.get();
    });
    assert_eq!(code, PANIC_EXIT_CODE);
    let msg = msg.expect("a panic message");
    assert!(msg.contains("would block forever"), "{msg}");
}

#[test]
fn the_roots_wait_returns_when_the_rest_can_never_be_woken() {
    let _wd = util::watchdog("wait with stuck coroutines", Duration::from_secs(120));
    let (code, msg) = in_child(|| {
        let q = Arc::new(moss::sync::Queue::<u32>::unbounded());
        let (a, b, fed) = (q.clone(), q.clone(), q.clone());
        // One of the two gets the item a sleeping coroutine puts (while its
        // timer is pending nothing is stuck); the other then waits for
        // good, and the child's root returns from its `moss::wait`.
        moss::spawn(move || a.get());
        moss::spawn(move || b.get());
        moss::spawn(move || {
            moss::sleep(Duration::from_millis(50));
            fed.put(7);
        });
    });
    assert_eq!((code, msg), (0, None));
}

#[test]
fn another_thread_keeps_the_root_waiting_until_it_ends() {
    let _wd = util::watchdog("a thread, then none", Duration::from_secs(120));
    let (code, msg) = in_child(|| {
        // The thread sets one event after the root's first look (which
        // finds it alive), then ends holding the other, which nobody can
        // set any more.
        let set_late = Arc::new(moss::sync::Event::new());
        let never = Arc::new(moss::sync::Event::new());
        let (s, n) = (set_late.clone(), never.clone());
        let t = moss::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            s.set();
            drop(n);
        });
        set_late.wait();
        t.join().unwrap();
        never.wait();
    });
    assert_eq!(code, PANIC_EXIT_CODE);
    let msg = msg.expect("a panic message");
    assert!(msg.contains("would block forever"), "{msg}");
    assert!(msg.contains("waiting on Event::wait"), "{msg}");
}

#[test]
fn the_monitor_thread_does_not_count_as_one_that_could_wake() {
    let _wd = util::watchdog("stuck with a monitor", Duration::from_secs(120));
    let (code, msg) = in_child(|| {
        // Its thread only reads: the event still can never be set.
        moss::monitor::enable(Duration::from_secs(30));
        moss::sync::Event::new().wait();
    });
    assert_eq!(code, PANIC_EXIT_CODE);
    let msg = msg.expect("a panic message");
    assert!(msg.contains("would block forever"), "{msg}");
}
