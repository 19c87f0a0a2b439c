//! `OnceCell` and `Barrier`: cooperative initialization (a killed or failed
//! initializer lets another waiter initialize), a 4-thread x 100-coroutine
//! barrier, and kill and timeout of waiters on both.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moss::sync::{Barrier, OnceCell, Timeout};

// ---------------------------------------------------------------- OnceCell

#[test]
fn one_initializer_runs_while_the_others_wait_and_the_hub_keeps_running() {
    let cell = Rc::new(OnceCell::new());
    let runs = Rc::new(Cell::new(0));
    let ticks = Rc::new(Cell::new(0));
    let ticker = {
        let ticks = ticks.clone();
        moss::spawn(move || {
            for _ in 0..5 {
                moss::sleep(Duration::from_millis(2));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    let hs: Vec<_> = (0..10)
        .map(|i| {
            let (cell, runs, ticks) = (cell.clone(), runs.clone(), ticks.clone());
            moss::spawn(move || {
                let v: &String = cell.get_or_init(|| {
                    runs.set(runs.get() + 1);
                    while ticks.get() < 5 {
                        moss::sleep(Duration::from_millis(1)); // blocks cooperatively
                    }
                    format!("from {i}")
                });
                v.clone()
            })
        })
        .collect();
    let got: Vec<String> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    ticker.join().unwrap();
    assert_eq!(runs.get(), 1);
    assert!(got.iter().all(|v| v == "from 0"), "{got:?}");
    assert_eq!(cell.get().map(String::as_str), Some("from 0"));
    assert_eq!(cell.set(String::from("late")), Err(String::from("late")));
}

#[test]
fn a_killed_initializer_lets_a_waiter_initialize() {
    let cell = Rc::new(OnceCell::new());
    let c = cell.clone();
    let first = moss::spawn(move || {
        *c.get_or_init(|| {
            moss::sleep(Duration::from_secs(60)); // killed in here
            1
        })
    });
    util::until_parked(first.id());
    let waiters: Vec<_> = (2..5)
        .map(|v| {
            let c = cell.clone();
            moss::spawn(move || *c.get_or_init(|| v))
        })
        .collect();
    for w in &waiters {
        util::until_parked(w.id());
    }
    assert!(cell.get().is_none());
    first.kill();
    assert!(first.join().unwrap_err().is_killed());
    // The oldest waiter ran its own initializer; the others got its value.
    let got: Vec<i32> = moss::join_all(waiters)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [2, 2, 2]);
    assert_eq!(cell.get(), Some(&2));
}

#[test]
fn a_handed_initialization_is_passed_on_by_a_killed_waiter() {
    let cell = Rc::new(OnceCell::new());
    let c = cell.clone();
    let first = moss::spawn(move || {
        *c.get_or_init(|| {
            moss::sleep(Duration::from_secs(60));
            1
        })
    });
    util::until_parked(first.id());
    let spawn_waiter = |v: i32| {
        let c = cell.clone();
        moss::spawn(move || *c.get_or_init(|| v))
    };
    let (victim, next) = (spawn_waiter(2), spawn_waiter(3));
    util::until_parked(victim.id());
    util::until_parked(next.id());
    // The initializer dies; the victim is handed the initialization, then
    // is killed before it runs.
    first.kill();
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    assert_eq!(next.join().unwrap(), 3);
    assert_eq!(cell.get(), Some(&3));
}

#[test]
fn a_failed_or_panicking_initializer_leaves_the_cell_empty() {
    let cell = OnceCell::new();
    assert_eq!(cell.get_or_try_init(|| Err::<u8, _>("nope")), Err("nope"));
    assert!(cell.get().is_none());
    let p = std::panic::catch_unwind(|| cell.get_or_init(|| panic!("init failed")));
    assert!(p.is_err());
    assert!(cell.get().is_none());
    assert_eq!(cell.get_or_init(|| 5), &5);
    assert_eq!(cell.get_or_try_init(|| Err::<u8, _>("unused")), Ok(&5));
    assert_eq!(cell.set(6), Err(6));
    assert_eq!(cell.into_inner(), Some(5));
    let mut c2 = OnceCell::from(String::from("x"));
    assert_eq!(c2.take().as_deref(), Some("x"));
    assert!(c2.get_mut().is_none());
    assert!(c2.set(String::from("y")).is_ok());
    assert_eq!(c2.get_mut().map(|s| s.as_str()), Some("y"));
}

#[test]
fn reentrant_initialization_panics_instead_of_waiting_for_itself() {
    let cell = OnceCell::<u8>::new();
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cell.get_or_init(|| *cell.get_or_init(|| 1))
    }));
    let msg = p.unwrap_err();
    let msg = msg
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or("");
    assert!(msg.contains("from its own initializer"), "{msg}");
    assert!(cell.get().is_none());
    assert_eq!(cell.get_or_init(|| 2), &2);
}

#[test]
fn wait_timeout_and_a_killed_or_timed_out_waiter() {
    let cell = Rc::new(OnceCell::new());
    assert_eq!(cell.wait_timeout(Duration::from_millis(5)), Err(Timeout));
    let c = cell.clone();
    let killed = moss::spawn(move || *c.wait());
    let c = cell.clone();
    let timed = moss::spawn(move || moss::timeout(Duration::from_millis(5), || *c.wait()));
    let c = cell.clone();
    let waiter = moss::spawn(move || *c.wait());
    util::until_parked(killed.id());
    killed.kill();
    assert!(killed.join().unwrap_err().is_killed());
    assert!(timed.join().unwrap().is_err());
    util::until_parked(waiter.id());
    assert!(cell.set(9).is_ok());
    assert_eq!(waiter.join().unwrap(), 9);
    assert_eq!(cell.wait_timeout(Duration::ZERO), Ok(&9));
}

#[test]
fn coroutines_of_several_threads_and_plain_threads_share_one_initialization() {
    let _wd = util::watchdog("OnceCell across threads", Duration::from_secs(60));
    let cell = Arc::new(OnceCell::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let init = |runs: &AtomicUsize| {
        runs.fetch_add(1, Ordering::SeqCst);
        moss::sleep(Duration::from_millis(20));
        42u64
    };
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (cell, runs) = (cell.clone(), runs.clone());
            std::thread::spawn(move || *cell.get_or_init(|| init(&runs)))
        })
        .collect();
    let (c2, r2) = (cell.clone(), runs.clone());
    let sum = Arc::new(AtomicUsize::new(0));
    let s2 = sum.clone();
    moss::run_per_core(3, move |_| {
        for _ in 0..20 {
            let (cell, runs, sum) = (c2.clone(), r2.clone(), s2.clone());
            moss::spawn(move || {
                let v = *cell.get_or_init(|| init(&runs));
                sum.fetch_add(v as usize, Ordering::SeqCst);
            });
        }
    });
    for t in threads {
        assert_eq!(t.join().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(sum.load(Ordering::SeqCst), 60 * 42);
}

// ---------------------------------------------------------------- Barrier

#[test]
fn four_threads_of_a_hundred_coroutines_pass_a_barrier_together_three_times() {
    let _wd = util::watchdog("Barrier 4x100", Duration::from_secs(60));
    const PARTIES: usize = 400;
    let b = Arc::new(Barrier::new(PARTIES));
    let arrived = Arc::new(AtomicUsize::new(0));
    let leaders = Arc::new(AtomicUsize::new(0));
    let early = Arc::new(AtomicUsize::new(0));
    let (b2, a2, l2, e2) = (b.clone(), arrived.clone(), leaders.clone(), early.clone());
    moss::run_per_core(4, move |_| {
        for _ in 0..100 {
            let (b, arrived, leaders, early) = (b2.clone(), a2.clone(), l2.clone(), e2.clone());
            moss::spawn(move || {
                for round in 1..=3 {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    if b.wait().is_leader() {
                        leaders.fetch_add(1, Ordering::SeqCst);
                    }
                    // Everyone of this round arrived before anyone left.
                    if arrived.load(Ordering::SeqCst) < round * PARTIES {
                        early.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(early.load(Ordering::SeqCst), 0, "a party left early");
    assert_eq!(leaders.load(Ordering::SeqCst), 3, "one leader per round");
    assert_eq!(arrived.load(Ordering::SeqCst), 3 * PARTIES);
}

#[test]
fn plain_threads_and_coroutines_meet_at_a_barrier() {
    let _wd = util::watchdog("Barrier threads", Duration::from_secs(30));
    let b = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.wait().is_leader())
        })
        .collect();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            moss::spawn(move || b.wait().is_leader())
        })
        .collect();
    let mut leaders: usize = moss::join_all(hs)
        .into_iter()
        .map(|r| r.unwrap() as usize)
        .sum();
    leaders += threads
        .into_iter()
        .map(|t| t.join().unwrap() as usize)
        .sum::<usize>();
    assert_eq!(leaders, 1);
}

#[test]
fn a_killed_or_timed_out_party_withdraws_its_arrival() {
    let b = Rc::new(Barrier::new(4));
    let spawn_party = || {
        let b = b.clone();
        moss::spawn(move || b.wait().is_leader())
    };
    let victim = spawn_party();
    util::until_parked(victim.id());
    let b1 = b.clone();
    let timed = moss::spawn(move || b1.wait_timeout(Duration::from_millis(5)));
    let b2 = b.clone();
    let scoped = moss::spawn(move || moss::timeout(Duration::from_millis(5), || b2.wait()));
    assert_eq!(timed.join().unwrap(), Err(Timeout));
    assert!(scoped.join().unwrap().is_err());
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    // Nobody counts as arrived: four new parties are needed.
    let ps: Vec<_> = (0..3).map(|_| spawn_party()).collect();
    for p in &ps {
        util::until_parked(p.id());
    }
    assert!(ps.iter().all(|p| !p.is_finished()));
    assert!(b.wait().is_leader(), "the root arrives fourth");
    let leaders = moss::join_all(ps)
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(leaders, 0);
    // Released, then killed before it ran: the round stays complete.
    let ps: Vec<_> = (0..3).map(|_| spawn_party()).collect();
    for p in &ps {
        util::until_parked(p.id());
    }
    assert!(b.wait().is_leader());
    ps[0].kill();
    let mut rs = moss::join_all(ps).into_iter();
    assert!(rs.next().unwrap().unwrap_err().is_killed());
    assert!(rs.all(|r| !r.unwrap()));
    assert!(Barrier::new(0).wait().is_leader() && Barrier::new(1).wait().is_leader());
}

/// Many cells, each raced by initializers that sleep, fail or panic, with
/// random kills: a cell is initialized at most once, every caller that
/// returns sees that value, and a cell is never left "being initialized"
/// with nobody running (a late `get_or_init` always gets through).
#[test]
fn initializers_killed_failing_and_panicking_at_random_never_wedge_a_cell() {
    let _wd = util::watchdog("OnceCell storm", Duration::from_secs(120));
    let mut seed = 0x5eed_u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for k in 0..300u64 {
        let cell = Rc::new(OnceCell::new());
        let inits = Rc::new(Cell::new(0));
        let hs: Vec<_> = (0..6u64)
            .map(|i| {
                let (cell, inits) = (cell.clone(), inits.clone());
                let (pause, fate) = (rnd(300), rnd(4));
                moss::spawn(move || {
                    let r = cell.get_or_try_init(|| {
                        moss::sleep(Duration::from_micros(pause));
                        match fate {
                            0 => Err("failed"),
                            // A panic, without the hook's message.
                            1 => std::panic::resume_unwind(Box::new("initializer panicked")),
                            _ => {
                                inits.set(inits.get() + 1);
                                Ok(k * 10 + i)
                            }
                        }
                    });
                    r.ok().copied()
                })
            })
            .collect();
        for _ in 0..rnd(6) {
            moss::sleep(Duration::from_micros(rnd(200)));
            let victim = &hs[rnd(hs.len() as u64) as usize];
            victim.kill();
        }
        let results: Vec<_> = moss::join_all(hs)
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .collect();
        assert!(
            inits.get() <= 1,
            "cell {k} initialized {} times",
            inits.get()
        );
        let v = *cell.get_or_init(|| 1_000_000 + k); // never waits for a ghost
        assert!(
            results.iter().all(|r| *r == v),
            "cell {k}: {results:?} vs {v}"
        );
        assert_eq!(inits.get() == 1, v < 1_000_000);
    }
}
