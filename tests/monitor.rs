//! `moss::monitor` (a hub blocked by one coroutine is reported once, with
//! the coroutine's id, name and spawn site) and `moss::dump_all`.
//!
//! The monitor and its report function are the process's: every case here
//! shares them, so each looks only at reports naming its own coroutines
//! or threads (the names are unique per case).

mod util;

use std::io::{Read, Write};
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moss::monitor::BlockReport;

/// The threshold: well under the 300 ms blocks the cases cause, so the
/// monitor sees each block on a loaded machine.
const MAX_BLOCKING: Duration = Duration::from_millis(50);

static REPORTS: Mutex<Vec<BlockReport>> = Mutex::new(Vec::new());

/// The phase `hubs_that_wait_or_switch_are_not_reported` holds its hub in
/// (0: none), and the reports naming that hub made during a phase.
static QUIET_PHASE: AtomicU8 = AtomicU8::new(0);
static QUIET_REPORTS: Mutex<Vec<(u8, BlockReport)>> = Mutex::new(Vec::new());

fn enable() {
    moss::monitor::set_report(|r| {
        REPORTS.lock().unwrap().push(r.clone());
        let phase = QUIET_PHASE.load(Ordering::SeqCst);
        if phase != 0 && r.thread_name.as_deref() == Some("quiet-hub") {
            QUIET_REPORTS.lock().unwrap().push((phase, r.clone()));
        }
    });
    moss::monitor::enable(MAX_BLOCKING);
}

/// The reports so far for which `f` holds.
fn reports(f: impl Fn(&BlockReport) -> bool) -> Vec<BlockReport> {
    REPORTS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| f(r))
        .cloned()
        .collect()
}

/// Waits (up to 20 s) for a report that `f` accepts, then a little longer
/// for any second one; returns them all.
fn wait_for_reports(what: &str, f: impl Fn(&BlockReport) -> bool) -> Vec<BlockReport> {
    let t = Instant::now();
    while reports(&f).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no report for {what}; all reports: {:?}",
            REPORTS.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Several looks of the monitor: a second report would come now.
    std::thread::sleep(MAX_BLOCKING * 8);
    reports(f)
}

fn named(name: &'static str) -> impl Fn(&BlockReport) -> bool {
    move |r| r.coroutine_name.as_deref() == Some(name)
}

#[test]
fn a_coroutine_that_blocks_its_thread_is_named_in_exactly_one_report() {
    let _wd = util::watchdog("blocking coroutine", Duration::from_secs(60));
    enable();
    let (site, id) = util::on_thread(Duration::from_secs(30), || {
        // A ticker to be held up, and the culprit: std's sleep, unpatched.
        let (ticks, ticker) = util::ticker();
        let site = Location::caller();
        let h = moss::Builder::new()
            .name("the-sleeper")
            .spawn(|| std::thread::sleep(Duration::from_millis(300)))
            .unwrap();
        let id = h.id();
        h.join().unwrap();
        // The episode ended: the ticker runs again.
        let before = ticks.get();
        util::until("a tick after the block", Duration::from_secs(10), || {
            ticks.get() > before
        });
        ticker.kill();
        (site, id)
    });
    let rs = wait_for_reports("the sleeper", named("the-sleeper"));
    assert_eq!(rs.len(), 1, "one episode, one report: {rs:?}");
    let r = &rs[0];
    assert_eq!(r.coroutine_id, id);
    let s = r.spawn_site.expect("a spawned coroutine has a spawn site");
    assert_eq!(s.file(), site.file());
    assert_eq!(s.line(), site.line() + 3, "the line of spawn(): {s}");
    assert!(r.blocked_for > MAX_BLOCKING, "{:?}", r.blocked_for);
    assert!(
        r.blocked_for < Duration::from_secs(10),
        "{:?}",
        r.blocked_for
    );
    let line = r.to_string();
    assert!(
        line.contains("the-sleeper") && line.contains(&format!("#{id}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("{}:{}", s.file(), s.line())),
        "{line}"
    );
}

#[test]
fn a_root_that_blocks_its_coroutines_is_reported_as_the_root() {
    let _wd = util::watchdog("blocking root", Duration::from_secs(60));
    enable();
    let t = std::thread::Builder::new()
        .name("blocking-root".into())
        .spawn(|| {
            let (_ticks, ticker) = util::ticker();
            // The root runs with a coroutine to hold up, and blocks.
            std::thread::sleep(Duration::from_millis(300));
            ticker.kill();
            ticker.join().unwrap_err();
        })
        .unwrap();
    t.join().unwrap();
    let rs = wait_for_reports("the root", |r| {
        r.thread_name.as_deref() == Some("blocking-root")
    });
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(rs[0].coroutine_name.as_deref(), Some("main"));
    assert_eq!(rs[0].spawn_site, None);
    assert!(rs[0].to_string().contains("the thread's root"), "{}", rs[0]);
}

/// Three phases of the thread "quiet-hub", each held until the monitor has
/// reported a blocker on another thread (so it was looking all along), not
/// for a fixed time: (1) a coroutine waits (the hub sleeps in its loop),
/// (2) a coroutine keeps switching, (3) the root, alone (nobody to block),
/// makes a blocking call. No report may name the quiet hub during a phase,
/// except the switcher: a loaded machine can deschedule its thread for
/// longer than the threshold between two of its yields, a true block.
#[test]
fn hubs_that_wait_or_switch_are_not_reported() {
    let _wd = util::watchdog("quiet hubs", Duration::from_secs(120));
    enable();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (waiter_end, mut wake_waiter) = std::os::unix::net::UnixStream::pair().unwrap();
    let waiting = Arc::new(AtomicBool::new(false));
    let switched = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (w, sw, st, rel) = (
        waiting.clone(),
        switched.clone(),
        stop.clone(),
        release.clone(),
    );
    let t = std::thread::Builder::new()
        .name("quiet-hub".into())
        .spawn(move || {
            // SAFETY: a plain syscall without arguments.
            ready_tx.send(unsafe { libc::gettid() }).unwrap();
            let waiter = moss::Builder::new()
                .name("quiet-waiter")
                .spawn(move || {
                    let mut end = moss::net::UnixStream::from(waiter_end);
                    w.store(true, Ordering::SeqCst);
                    end.read_exact(&mut [0u8]).unwrap();
                })
                .unwrap();
            waiter.join().unwrap();
            let switcher = moss::Builder::new()
                .name("quiet-switcher")
                .spawn(move || {
                    while !st.load(Ordering::SeqCst) {
                        sw.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        moss::yield_now();
                    }
                })
                .unwrap();
            switcher.join().unwrap();
            // Nothing left on this hub: the root blocking is nobody's wait.
            ready_tx.send(0).unwrap();
            while !rel.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    let tid = ready.recv().unwrap();
    // (1) The waiter runs (so the root waits in its join), then parks in its
    // read: the hub sleeps in the kernel.
    while !waiting.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    util::until_thread_sleeps(tid);
    quiet_phase(1, "quiet-control-1");
    wake_waiter.write_all(b"x").unwrap();
    // (2) The switcher switched at least once: the root waits in its join.
    while switched.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    quiet_phase(2, "quiet-control-2");
    stop.store(true, Ordering::SeqCst);
    // (3) Both joined: the root blocks alone until released.
    assert_eq!(ready.recv().unwrap(), 0);
    quiet_phase(3, "quiet-control-3");
    release.store(true, Ordering::SeqCst);
    t.join().unwrap();
    let wrong: Vec<_> = QUIET_REPORTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(phase, r)| *phase != 2 || r.coroutine_name.as_deref() != Some("quiet-switcher"))
        .cloned()
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// Holds phase `phase` of the quiet hub (see above) until a coroutine
/// named `control` blocking another thread has been reported.
fn quiet_phase(phase: u8, control: &'static str) {
    QUIET_PHASE.store(phase, Ordering::SeqCst);
    util::on_thread(Duration::from_secs(30), move || {
        moss::Builder::new()
            .name(control)
            .spawn(move || {
                let t = Instant::now();
                while reports(named(control)).is_empty() {
                    assert!(
                        t.elapsed() < Duration::from_secs(20),
                        "{control}: no report"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    QUIET_PHASE.store(0, Ordering::SeqCst);
}

#[test]
fn dump_all_lists_every_hub_and_names_a_blocked_one() {
    let _wd = util::watchdog("dump_all", Duration::from_secs(60));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (name, blocks) in [("dumped-waiter", false), ("dumped-blocker", true)] {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            moss::Builder::new()
                .name(name)
                .spawn(move || {
                    tx.send(()).unwrap();
                    if blocks {
                        std::thread::sleep(Duration::from_secs(3));
                    } else {
                        moss::sleep(Duration::from_secs(3));
                    }
                })
                .unwrap()
                .join()
                .unwrap();
        }));
    }
    rx.recv().unwrap();
    rx.recv().unwrap();
    // From a plain thread, and from a coroutine of a third hub.
    let plain = moss::dump_all();
    let from_hub = util::on_thread(Duration::from_secs(30), || {
        let _h = moss::Builder::new()
            .name("dumped-own")
            .spawn(|| moss::sleep(Duration::from_millis(500)))
            .unwrap();
        moss::spawn(moss::dump_all).join().unwrap()
    });
    for t in threads {
        t.join().unwrap();
    }
    for d in [&plain, &from_hub] {
        let waiter = d.lines().find(|l| l.contains("dumped-waiter"));
        assert!(
            waiter.is_some_and(|l| l.contains("waiting on")),
            "the waiter's hub answered with its dump:\n{d}"
        );
        let blocker = d.lines().find(|l| l.contains("dumped-blocker"));
        assert!(
            blocker.is_some_and(|l| l.contains("no answer") && l.contains("running #")),
            "the blocked hub is described by what it runs:\n{d}"
        );
    }
    assert!(from_hub.contains("dumped-own"), "{from_hub}");
}

#[test]
fn the_monitor_works_in_a_forked_child_after_use_in_the_parent() {
    let _wd = util::watchdog("monitor in a child", Duration::from_secs(60));
    enable();
    // The parent's monitor runs and has seen hubs.
    util::on_thread(Duration::from_secs(30), || {
        moss::Builder::new()
            .name("parent-blocker")
            .spawn(|| std::thread::sleep(Duration::from_millis(300)))
            .unwrap()
            .join()
            .unwrap();
    });
    wait_for_reports("the parent's blocker", named("parent-blocker"));
    let code = util::in_process(|| {
        // The child's own monitor thread and registry; its report here.
        static SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        moss::monitor::set_report(|r| {
            if r.coroutine_name.as_deref() == Some("child-blocker") {
                SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let (_ticks, ticker) = util::ticker();
        moss::Builder::new()
            .name("child-blocker")
            .spawn(|| std::thread::sleep(Duration::from_millis(300)))
            .unwrap()
            .join()
            .unwrap();
        ticker.kill();
        let t = Instant::now();
        while SEEN.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no report in the child"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(moss::dump_all().contains("main"));
    });
    assert_eq!(code, 0);
}

#[test]
fn bad_input() {
    let r = std::panic::catch_unwind(|| moss::monitor::enable(Duration::ZERO));
    let msg = moss::panic_message(&*r.unwrap_err())
        .unwrap_or_default()
        .to_owned();
    assert!(msg.contains("max_blocking"), "{msg}");
}

#[test]
fn hubs_and_coroutines_that_come_and_go_under_a_1_ms_monitor() {
    // The monitor reads a blocked coroutine's control block while its hub
    // may finish it or exit: hundreds of short blocks on threads that end
    // right after, a monitor looking every millisecond, dump_all called in
    // a loop, and a report function that panics now and then. In a child
    // process (the threshold and the report function are the process's).
    let case = "hubs_and_coroutines_that_come_and_go_under_a_1_ms_monitor";
    if util::in_child(case) {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        static REPORTED: AtomicUsize = AtomicUsize::new(0);
        moss::monitor::set_report(|_| {
            if REPORTED.fetch_add(1, Ordering::SeqCst) % 7 == 3 {
                panic!("a report function that panics");
            }
        });
        moss::monitor::enable(Duration::from_millis(1));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let dumper = std::thread::spawn(move || {
            let mut n = 0;
            while !d.load(Ordering::SeqCst) {
                let _ = moss::dump_all();
                n += 1;
            }
            n
        });
        for round in 0..40u64 {
            let ts: Vec<_> = (0..5u64)
                .map(|k| {
                    std::thread::spawn(move || {
                        let hs: Vec<_> = (0..4u64)
                            .map(|i| {
                                moss::Builder::new()
                                    .name(format!("churn-{round}-{k}-{i}"))
                                    .spawn(move || {
                                        std::thread::sleep(Duration::from_millis(
                                            (round + k + i) % 4,
                                        ));
                                        i
                                    })
                                    .unwrap()
                            })
                            .collect();
                        let sum: u64 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
                        assert_eq!(sum, 6);
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
        }
        done.store(true, Ordering::SeqCst);
        assert!(dumper.join().unwrap() > 0);
        assert!(
            REPORTED.load(Ordering::SeqCst) > 0,
            "the monitor saw the blocks"
        );
        return;
    }
    let r = util::run_in_child(case, Duration::from_secs(120));
    assert!(r.success() && !r.timed_out, "{r:?}\nstderr:\n{}", r.stderr);
}
