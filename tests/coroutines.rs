//! Coroutine behaviour: overlap, ordering, panics, kill, timeout.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[test]
fn ten_thousand_sleepers_overlap() {
    let t = Instant::now();
    let hs: Vec<_> = (0..10_000)
        .map(|i| {
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(100));
                i
            })
        })
        .collect();
    let sum: u64 = moss::join_all(hs).into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(sum, (0..10_000).sum());
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(100), "{el:?}");
    // Serially this would take 1000 s; allow a very loaded machine.
    assert!(
        el < Duration::from_secs(5),
        "sleeps did not overlap: {el:?}"
    );
}

#[test]
fn yield_now_interleaves_strictly() {
    let trace = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let trace = trace.clone();
            moss::spawn(move || {
                for i in 0..3 {
                    trace.borrow_mut().push(format!("{name}{i}"));
                    moss::yield_now();
                }
            })
        })
        .collect();
    moss::join_all(hs);
    assert_eq!(trace.borrow().join(" "), "a0 b0 c0 a1 b1 c1 a2 b2 c2");
}

#[test]
fn panic_is_returned_by_join_and_others_keep_running() {
    let bad = moss::Builder::new()
        .name("bad")
        .spawn(|| -> u32 {
            moss::yield_now();
            panic!("kaput")
        })
        .unwrap();
    let good = moss::spawn(|| {
        moss::sleep(Duration::from_millis(5));
        7
    });
    let e = bad.join().unwrap_err();
    assert!(e.is_panic() && !e.is_killed());
    assert_eq!(
        e.to_string(),
        format!("coroutine 'bad' (#{}) panicked: kaput", e.id())
    );
    assert_eq!(good.join().unwrap(), 7);
}

struct SetOnDrop(Rc<Cell<bool>>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn kill_unwinds_and_runs_destructors() {
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let h = moss::spawn(move || {
        let _g = SetOnDrop(d);
        moss::sleep(Duration::MAX);
    });
    moss::yield_now();
    assert!(!h.is_finished());
    h.kill();
    assert!(h.is_finished());
    assert!(dropped.get());
    assert!(h.join().unwrap_err().is_killed());
}

#[test]
fn kill_before_start_never_runs() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = moss::spawn(move || r.set(true));
    h.kill();
    h.kill(); // twice is fine
    assert!(h.join().unwrap_err().is_killed());
    moss::yield_now();
    assert!(!ran.get());
}

#[test]
fn blocking_in_destructor_during_kill_works() {
    struct SleepyDrop(Rc<Cell<u32>>);
    impl Drop for SleepyDrop {
        fn drop(&mut self) {
            moss::sleep(Duration::from_millis(10));
            self.0.set(self.0.get() + 1);
        }
    }
    let n = Rc::new(Cell::new(0));
    let m = n.clone();
    let h = moss::spawn(move || {
        let _g = SleepyDrop(m);
        moss::sleep(Duration::MAX);
    });
    moss::yield_now();
    h.kill();
    assert_eq!(n.get(), 1);
    assert!(h.join().unwrap_err().is_killed());
}

#[test]
fn kill_self_unwinds() {
    let slot: Rc<RefCell<Option<moss::JoinHandle<()>>>> = Rc::default();
    let s = slot.clone();
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    let h = moss::spawn(move || {
        moss::yield_now();
        let me = s.borrow_mut().take().unwrap();
        me.kill();
        a.set(true);
    });
    // We cannot hand the coroutine its own handle and join it too; join via
    // a second path: is_finished polling through yield.
    let id = h.id();
    *slot.borrow_mut() = Some(h);
    for _ in 0..10 {
        moss::yield_now();
    }
    assert!(!after.get());
    assert!(slot.borrow().is_none(), "coroutine {id} took its handle");
}

#[test]
fn kill_finished_and_join_after_kill() {
    let h = moss::spawn(|| 5);
    moss::yield_now();
    assert!(h.is_finished());
    h.kill();
    assert_eq!(h.join().unwrap(), 5);
}

/// A kill requested while the victim's own `timeout` is due, that timer firing
/// after the kill but before the victim runs again: the kill still lands.
/// (The expiry used to replace the pending kill; the scope caught it as
/// `Elapsed`, the victim ran on, and a `kill` waiting for it hung.)
fn kill_then_due_timeout(wait: fn()) -> (Result<(), moss::JoinError>, bool) {
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    let victim = moss::spawn(move || {
        let _ = moss::timeout(Duration::from_millis(1), wait);
        a.set(true); // not reached: the kill passes through the scope
    });
    // Runs right after the victim parked, with no poll (no timer) between.
    let killer = moss::spawn(move || {
        // Queued ahead of the victim: more coroutines than the hub resumes
        // between two polls, the first blocking the thread past the victim's
        // deadline, so a poll fires its timer before it runs again.
        for i in 0..1000 {
            moss::spawn(move || {
                if i == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        victim.kill_nowait();
        victim.join()
    });
    (killer.join().unwrap(), after.get())
}

#[test]
fn a_timeout_due_after_a_kill_does_not_replace_it() {
    let waits: [(&str, fn()); 2] = [
        ("an untimed get", || {
            moss::sync::Queue::<u32>::new(1).get();
        }),
        ("a sleep", || moss::sleep(Duration::from_secs(3600))),
    ];
    for (what, wait) in waits {
        let (r, after) = kill_then_due_timeout(wait);
        assert!(!after, "{what}: the victim ran on after its kill");
        assert!(r.unwrap_err().is_killed(), "{what}: not killed");
    }
}

#[test]
fn timeout_fires_and_passes() {
    let r = moss::timeout(Duration::from_millis(20), || {
        moss::sleep(Duration::from_secs(10))
    });
    assert!(r.is_err());
    assert!(r.unwrap_err().to_string().contains("timed out"));
    assert_eq!(moss::timeout(Duration::MAX, || 3), Ok(3));
    assert_eq!(moss::timeout(Duration::ZERO, || 4), Ok(4));
    assert!(moss::timeout(Duration::ZERO, moss::yield_now).is_err());
}

#[test]
fn nested_timeouts_in_both_orders() {
    // Inner shorter: the inner one fires, the outer does not.
    let r = moss::timeout(Duration::from_secs(10), || {
        moss::timeout(Duration::from_millis(10), || {
            moss::sleep(Duration::from_secs(10))
        })
    });
    assert!(matches!(r, Ok(Err(_))));
    // Outer shorter: the outer fires through the inner.
    let r = moss::timeout(Duration::from_millis(10), || {
        moss::timeout(Duration::from_secs(10), || {
            moss::sleep(Duration::from_secs(10))
        })
    });
    assert!(r.is_err());
    // And nothing is left pending afterwards.
    moss::sleep(Duration::from_millis(1));
}

#[test]
fn timeout_inside_coroutines() {
    let hs: Vec<_> = (0..100)
        .map(|i| {
            moss::spawn(move || {
                moss::timeout(Duration::from_millis(20 + i % 2 * 1000), || {
                    moss::sleep(Duration::from_millis(500))
                })
                .is_err()
            })
        })
        .collect();
    let fired = moss::join_all(hs)
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(fired, 50);
}

#[test]
fn join_timeout_returns_the_handle() {
    let h = moss::spawn(|| {
        moss::sleep(Duration::from_millis(30));
        1
    });
    let h = h.join_timeout(Duration::ZERO).unwrap_err();
    let h = h.join_timeout(Duration::from_millis(1)).unwrap_err();
    assert_eq!(h.join_timeout(Duration::from_secs(10)).unwrap().unwrap(), 1);
}

#[test]
fn spawn_later_waits() {
    let t = Instant::now();
    let h = moss::spawn_later(Duration::from_millis(30), move || t.elapsed());
    assert!(h.join().unwrap() >= Duration::from_millis(30));
    let never = moss::spawn_later(Duration::MAX, || ());
    never.kill();
    assert!(never.join().unwrap_err().is_killed());
}

#[test]
fn builder_rejects_bad_stack_sizes() {
    for size in [0, 1, 1024, usize::MAX, 1 << 40] {
        let e = moss::Builder::new()
            .stack_size(size)
            .spawn(|| ())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{size}");
    }
    assert!(
        moss::Builder::new()
            .stack_size(moss::MIN_STACK_SIZE)
            .spawn(|| ())
            .unwrap()
            .join()
            .is_ok()
    );
}

#[test]
fn current_names_and_ids() {
    assert_eq!(moss::current().name(), Some("main"));
    let h = moss::Builder::new()
        .name("w")
        .spawn(|| {
            (
                moss::current().id(),
                moss::current().name().map(String::from),
            )
        })
        .unwrap();
    let id = h.id();
    let (cid, name) = h.join().unwrap();
    assert_eq!(cid, id);
    assert_eq!(name.as_deref(), Some("w"));
    let anon = moss::spawn(|| moss::current().name().is_none());
    assert!(anon.join().unwrap());
}

#[test]
fn root_blocking_forever_panics_clearly() {
    let r = std::thread::spawn(|| {
        let h = moss::spawn(|| moss::sleep(Duration::MAX));
        h.join()
    })
    .join();
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("would block forever"), "{msg}");
}

#[test]
fn run_and_wait() {
    let n = Rc::new(Cell::new(0));
    let m = n.clone();
    moss::run(|| {
        for i in 0..10 {
            let m = m.clone();
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(i));
                m.set(m.get() + 1);
            });
        }
    });
    assert_eq!(n.get(), 10);
}

#[test]
fn hundred_thousand_alive_at_once() {
    let n = 100_000;
    let started = Rc::new(Cell::new(0usize));
    let release = Rc::new(Cell::new(false));
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (started, release) = (started.clone(), release.clone());
            moss::Builder::new()
                .stack_size(16 * 1024)
                .spawn(move || {
                    started.set(started.get() + 1);
                    while !release.get() {
                        moss::sleep(Duration::from_millis(100));
                    }
                    i as u64
                })
                .unwrap()
        })
        .collect();
    while started.get() < n {
        moss::sleep(Duration::from_millis(5));
    }
    // Every one of them is alive and parked (or about to re-park) in its sleep.
    let alive = moss::dump()
        .lines()
        .filter(|l| l.contains("sleep") || l.contains("ready"))
        .count();
    assert_eq!(alive, n);
    release.set(true);
    let sum: u64 = moss::join_all(hs).into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(sum, (0..n as u64).sum());
}

#[test]
fn dump_lists_state_and_spawn_site() {
    let h = moss::Builder::new()
        .name("sleeper")
        .spawn(|| moss::sleep(Duration::from_secs(60)))
        .unwrap();
    moss::yield_now();
    let d = moss::dump();
    let line = d
        .lines()
        .find(|l| l.contains("sleeper"))
        .unwrap()
        .to_owned();
    assert!(line.contains("waiting on sleep"), "{line}");
    assert!(line.contains("spawned at tests/coroutines.rs"), "{line}");
    // The root (running this test) is listed as such, not with a site
    // inside the runtime.
    let root = d.lines().find(|l| l.contains("running")).unwrap();
    assert!(root.ends_with("the thread's root"), "{root}");
    h.kill();
}

/// The seconds in "for N.NNNs" of a dump line.
fn waited(line: &str) -> f64 {
    let rest = &line[line.find(" for ").expect(line) + 5..];
    rest[..rest.find('s').unwrap()].parse().expect(line)
}

/// `dump` shows how long each context has been waiting (and, for a timed
/// wait, the time left): untimed waits on an event and a join, a timed
/// sleep, and the root itself.
#[test]
fn dump_shows_how_long_each_coroutine_has_waited() {
    let ev = std::sync::Arc::new(moss::sync::Event::new());
    let e = ev.clone();
    let waiter = moss::Builder::new()
        .name("waiter")
        .spawn(move || e.wait())
        .unwrap();
    let sleeper = moss::Builder::new()
        .name("sleeper")
        .spawn(|| moss::sleep(Duration::from_secs(60)))
        .unwrap();
    moss::sleep(Duration::from_millis(300));
    let d = moss::Builder::new()
        .name("dumper")
        .spawn(moss::dump)
        .unwrap()
        .join()
        .unwrap();
    let line = |name: &str| d.lines().find(|l| l.contains(name)).unwrap().to_owned();
    let w = line("waiter");
    assert!(w.contains("waiting on Event::wait for "), "{d}");
    assert!(waited(&w) >= 0.29, "{d}");
    let s = line("sleeper");
    assert!(waited(&s) >= 0.29, "{d}");
    assert!(s.contains("s left)"), "{d}");
    // The root waits for the dumper's join, since just now.
    let root = line("the thread's root");
    assert!(root.contains("waiting on join for "), "{d}");
    assert!(waited(&root) < waited(&w), "{d}");
    ev.set();
    waiter.join().unwrap();
    sleeper.kill();
}

#[test]
fn busy_yielders_do_not_starve_timers() {
    let stop = Rc::new(Cell::new(false));
    let spins = Rc::new(Cell::new(0u64));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (stop, spins) = (stop.clone(), spins.clone());
            moss::spawn(move || {
                while !stop.get() {
                    spins.set(spins.get() + 1);
                    moss::yield_now();
                }
            })
        })
        .collect();
    let s = stop.clone();
    let sleeper = moss::spawn(move || {
        let t = Instant::now();
        moss::sleep(Duration::from_millis(20));
        s.set(true);
        t.elapsed()
    });
    let slept = sleeper.join().unwrap();
    moss::join_all(spinners);
    assert!(spins.get() > 0);
    assert!(slept < Duration::from_secs(2), "timer starved: {slept:?}");
}

#[test]
fn thread_exit_with_live_coroutines_is_clean() {
    let t = std::thread::spawn(|| {
        for _ in 0..100 {
            moss::spawn(|| moss::sleep(Duration::from_secs(3600)));
        }
        moss::yield_now();
        moss::dump().lines().count()
    });
    // The hub with 100 parked coroutines is dropped at thread exit.
    assert_eq!(t.join().unwrap(), 102);
}

#[test]
fn coroutines_on_several_threads_are_independent() {
    let ts: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..100u64)
                    .map(|i| {
                        moss::spawn(move || {
                            moss::sleep(Duration::from_millis(10));
                            i * k
                        })
                    })
                    .collect();
                moss::join_all(hs)
                    .into_iter()
                    .map(Result::unwrap)
                    .sum::<u64>()
            })
        })
        .collect();
    let sums: Vec<u64> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(sums, [0, 4950, 9900, 14850]);
}

mod util;

#[test]
fn until_parked_orders_without_sleeping() {
    let _wd = util::watchdog("until_parked", Duration::from_secs(30));
    let drops = util::DropCounter::new();
    let token = drops.token();
    let h = moss::spawn(move || {
        let _t = token;
        moss::sleep(Duration::from_secs(3600));
    });
    util::until_parked(h.id());
    assert_eq!(drops.drops(), 0);
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    assert_eq!(
        drops.drops(),
        1,
        "the killed coroutine's captures were dropped"
    );
}
