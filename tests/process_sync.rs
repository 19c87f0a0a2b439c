//! Cross-process primitives: ProcessLock, ProcessSemaphore, ProcessEvent
//! and SharedValue, between forked children (multiprocessing's Lock,
//! Semaphore, Event and Value).

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::{Plain, ProcessEvent, ProcessLock, ProcessSemaphore, SharedValue};
use moss::sync::Timeout;

use util::{Reap, start};

/// A child that holds `lock` until the returned event is set.
fn child_holding(lock: &Arc<ProcessLock>) -> (Reap, Arc<ProcessEvent>) {
    let (locked, release) = (
        Arc::new(ProcessEvent::new().unwrap()),
        Arc::new(ProcessEvent::new().unwrap()),
    );
    let child = {
        let (lock, locked, release) = (lock.clone(), locked.clone(), release.clone());
        start(move || {
            let _g = lock.lock();
            locked.set();
            release.wait();
        })
    };
    assert!(locked.wait_timeout(Duration::from_secs(30)));
    (child, release)
}

fn join_ok(children: Vec<Reap>) {
    for c in &children {
        assert_eq!(c.0.join().unwrap(), 0, "child {} failed", c.0.pid());
    }
}

/// Runs `body` in four children that start together, and returns the most
/// of them that ran `body` at once (the overlap a mutual-exclusion test
/// needs to mean anything).
fn four_at_once(body: impl Fn() + Clone + 'static) -> u32 {
    let go = Arc::new(ProcessEvent::new().unwrap());
    // (running now, most running at once)
    let running = Arc::new(SharedValue::new((0u32, 0u32)).unwrap());
    let children = (0..4)
        .map(|_| {
            let (go, running, body) = (go.clone(), running.clone(), body.clone());
            start(move || {
                go.wait();
                running.update(|(now, most)| {
                    *now += 1;
                    *most = (*most).max(*now);
                });
                body();
                running.update(|(now, _)| *now -= 1);
            })
        })
        .collect();
    go.set();
    join_ok(children);
    running.get().1
}

#[test]
fn four_processes_increment_a_counter_10000_times_each_under_the_lock() {
    let _wd = util::watchdog("counter under ProcessLock", Duration::from_secs(240));
    let lock = Arc::new(ProcessLock::new().unwrap());
    // get and set are separate steps: only the lock makes the pair atomic.
    let counter = Arc::new(SharedValue::new(0u64).unwrap());
    let (l, c) = (lock.clone(), counter.clone());
    let overlap = four_at_once(move || {
        for _ in 0..10_000 {
            let g = l.lock();
            assert!(!g.owner_died());
            let v = c.get();
            std::thread::yield_now(); // invite the others in
            c.set(v + 1);
        }
    });
    assert!(overlap >= 2, "the children never ran at the same time");
    assert_eq!(counter.get(), 40_000);
    assert!(!lock.is_locked());
}

#[test]
fn four_processes_update_a_shared_value_10000_times_each() {
    let _wd = util::watchdog("SharedValue::update", Duration::from_secs(240));
    let counter = Arc::new(SharedValue::new(0u64).unwrap());
    let c = counter.clone();
    let overlap = four_at_once(move || {
        for _ in 0..10_000 {
            c.update(|v| {
                let old = *v;
                std::thread::yield_now();
                *v = old + 1;
            });
        }
    });
    assert!(overlap >= 2, "the children never ran at the same time");
    assert_eq!(counter.get(), 40_000);
}

#[test]
fn an_unlock_wakes_a_waiter_in_another_process_and_the_waiting_hub_runs_on() {
    let _wd = util::watchdog("cross-process wake-up", Duration::from_secs(60));
    let lock = Arc::new(ProcessLock::new().unwrap());
    let (waiting, got) = (
        Arc::new(ProcessEvent::new().unwrap()),
        Arc::new(ProcessEvent::new().unwrap()),
    );
    let g = lock.lock();
    let child = {
        let (lock, waiting, got) = (lock.clone(), waiting.clone(), got.clone());
        start(move || {
            waiting.set();
            let _g = lock.lock();
            got.set();
        })
    };
    assert!(waiting.wait_timeout(Duration::from_secs(30)));
    assert!(
        !got.wait_timeout(Duration::from_millis(100)),
        "the child got a held lock"
    );
    drop(g);
    assert!(got.wait_timeout(Duration::from_secs(30)));
    join_ok(vec![child]);

    // Now the parent waits for a lock the child holds, in a coroutine,
    // while a ticker of the same hub keeps ticking.
    let (child, release) = child_holding(&lock);
    let (ticks, ticker) = util::ticker();
    let l2 = lock.clone();
    let waiter = moss::spawn(move || {
        let t = Instant::now();
        let _g = l2.lock();
        t.elapsed()
    });
    util::until(
        "ticks while the lock is held",
        Duration::from_secs(30),
        || ticks.get() >= 3,
    );
    release.set();
    let waited = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(20), "{waited:?}");
    ticker.kill();
    join_ok(vec![child]);
}

#[test]
fn try_lock_and_lock_timeout_while_another_process_holds_it() {
    let lock = Arc::new(ProcessLock::new().unwrap());
    let (child, release) = child_holding(&lock);
    assert!(lock.is_locked());
    assert!(lock.try_lock().is_none());
    let t = Instant::now();
    assert_eq!(
        lock.lock_timeout(Duration::from_millis(100)).err(),
        Some(Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(lock.lock_timeout(Duration::ZERO).err(), Some(Timeout));
    // moss::timeout around lock() cancels the wait the same way.
    assert!(moss::timeout(Duration::from_millis(50), || lock.lock()).is_err());
    release.set();
    let g = lock.lock_timeout(Duration::from_secs(30)).unwrap();
    assert!(!g.owner_died());
    drop(g);
    join_ok(vec![child]);
    assert!(lock.try_lock().is_some());
}

#[test]
fn a_holder_killed_with_sigkill_is_taken_over_by_a_waiter() {
    let _wd = util::watchdog("holder killed", Duration::from_secs(60));
    let lock = Arc::new(ProcessLock::new().unwrap());
    let value = Arc::new(SharedValue::new(0u32).unwrap());
    let locked = Arc::new(ProcessEvent::new().unwrap());
    let child = {
        let (lock, value, locked) = (lock.clone(), value.clone(), locked.clone());
        start(move || {
            let _g = lock.lock();
            value.set(1); // half of an update the lock protects
            locked.set();
            moss::sleep(Duration::MAX);
        })
    };
    assert!(locked.wait_timeout(Duration::from_secs(30)));
    // Alive: a timed wait times out (it checks the holder at its deadline).
    assert!(lock.lock_timeout(Duration::from_millis(50)).is_err());
    // A waiter parked before the kill is the one that takes over.
    let l2 = lock.clone();
    let waiter = moss::spawn(move || {
        let g = l2.lock();
        g.owner_died()
    });
    util::until_parked(waiter.id());
    child.0.kill().unwrap();
    assert_eq!(child.0.join().unwrap(), -libc::SIGKILL);
    let t = Instant::now();
    assert!(waiter.join().unwrap(), "the guard reports the dead holder");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(value.get(), 1);
    // The lock works as before, and no longer reports a death.
    let g = lock.lock_timeout(Duration::from_secs(5)).unwrap();
    assert!(!g.owner_died());
}

#[test]
fn a_child_that_exits_holding_the_lock_does_not_wedge_it() {
    let _wd = util::watchdog("holder exited", Duration::from_secs(60));
    let lock = Arc::new(ProcessLock::new().unwrap());
    let l = lock.clone();
    let child = start(move || std::mem::forget(l.lock()));
    assert_eq!(child.0.join().unwrap(), 0);
    assert!(lock.is_locked(), "nobody unlocked it");
    assert!(
        lock.try_lock().is_none(),
        "try_lock does not check the holder"
    );
    let g = lock.lock_timeout(Duration::from_secs(20)).unwrap();
    assert!(g.owner_died());
}

#[test]
fn a_child_forked_while_the_lock_is_held_waits_for_the_parent() {
    let _wd = util::watchdog("fork while held", Duration::from_secs(60));
    let lock = Arc::new(ProcessLock::new().unwrap());
    let (checked, got) = (
        Arc::new(ProcessEvent::new().unwrap()),
        Arc::new(ProcessEvent::new().unwrap()),
    );
    let g = lock.lock();
    let child = {
        let (lock, checked, got) = (lock.clone(), checked.clone(), got.clone());
        start(move || {
            // The parent's hold is not the child's.
            assert!(lock.try_lock().is_none());
            assert!(lock.lock_timeout(Duration::from_millis(50)).is_err());
            checked.set();
            let g = lock.lock();
            assert!(!g.owner_died());
            got.set();
        })
    };
    assert!(checked.wait_timeout(Duration::from_secs(30)));
    assert!(!got.wait_timeout(Duration::from_millis(50)));
    drop(g);
    assert!(got.wait_timeout(Duration::from_secs(30)));
    join_ok(vec![child]);
}

#[test]
fn a_guard_copied_into_a_child_does_not_unlock_the_parents_lock() {
    let lock: &'static ProcessLock = Box::leak(Box::new(ProcessLock::new().unwrap()));
    let g = lock.lock();
    let done = Arc::new(ProcessEvent::new().unwrap());
    // The child gets a copy of the guard (forked memory) and drops it.
    let g_ptr = &g as *const _ as usize;
    let d = done.clone();
    let child = start(move || {
        // The child's memory is a copy of the parent's, where `g` is a live
        // guard at `g_ptr`; the child never returns into the parent's frames.
        // SAFETY: so the child's copy of `g` is valid and never dropped there:
        // this read takes it over, as a guard inherited by fork would be.
        let copy: moss::pool::ProcessLockGuard<'static> =
            unsafe { std::ptr::read(g_ptr as *const moss::pool::ProcessLockGuard<'static>) };
        drop(copy);
        assert!(
            lock.is_locked(),
            "the child's copy unlocked the parent's lock"
        );
        d.set();
    });
    assert!(done.wait_timeout(Duration::from_secs(30)));
    join_ok(vec![child]);
    assert!(lock.is_locked());
    assert!(lock.try_lock().is_none());
    drop(g);
    assert!(lock.try_lock().is_some());
}

#[test]
fn killed_and_timed_out_waiters_take_nothing_from_any_primitive() {
    let _wd = util::watchdog("kill waiters", Duration::from_secs(60));
    let lock = Rc::new(ProcessLock::new().unwrap());
    let sem = Rc::new(ProcessSemaphore::new(0).unwrap());
    let ev = Rc::new(ProcessEvent::new().unwrap());
    let g = lock.lock();
    let reached = Rc::new(Cell::new(0));
    let mut hs = Vec::new();
    for i in 0..9 {
        let (lock, sem, ev, reached) = (lock.clone(), sem.clone(), ev.clone(), reached.clone());
        hs.push(moss::spawn(move || {
            match i % 3 {
                0 => drop(lock.lock()),
                1 => sem.acquire(),
                _ => ev.wait(),
            }
            reached.set(reached.get() + 1);
        }));
    }
    for h in &hs {
        util::until_parked(h.id());
    }
    for h in hs {
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
    }
    assert_eq!(reached.get(), 0);
    // Timeouts likewise.
    assert!(moss::timeout(Duration::from_millis(20), || sem.acquire()).is_err());
    assert!(moss::timeout(Duration::from_millis(20), || ev.wait()).is_err());
    assert_eq!(sem.acquire_timeout(Duration::from_millis(20)), Err(Timeout));
    assert!(!ev.wait_timeout(Duration::from_millis(20)));
    // Nothing was taken: a release, a set and an unlock go to new waiters.
    let (l2, s2, e2) = (lock.clone(), sem.clone(), ev.clone());
    let after = moss::spawn(move || {
        s2.acquire();
        e2.wait();
        drop(l2.lock());
        "all three"
    });
    util::until_parked(after.id());
    sem.release();
    ev.set();
    drop(g);
    assert_eq!(after.join().unwrap(), "all three");
    assert_eq!(sem.available_permits(), 0);
    assert!(lock.try_lock().is_some());
}

#[test]
fn semaphore_bounds_how_many_processes_are_inside() {
    let _wd = util::watchdog("semaphore", Duration::from_secs(120));
    let sem = Arc::new(ProcessSemaphore::new(2).unwrap());
    let go = Arc::new(ProcessEvent::new().unwrap());
    // (inside now, most inside at once)
    let inside = Arc::new(SharedValue::new((0u32, 0u32)).unwrap());
    let children = (0..6)
        .map(|_| {
            let (sem, go, inside) = (sem.clone(), go.clone(), inside.clone());
            start(move || {
                go.wait();
                sem.acquire();
                inside.update(|(now, most)| {
                    *now += 1;
                    *most = (*most).max(*now);
                });
                moss::sleep(Duration::from_millis(300));
                inside.update(|(now, _)| *now -= 1);
                sem.release();
            })
        })
        .collect();
    go.set();
    join_ok(children);
    let (now, most) = inside.get();
    assert_eq!(now, 0);
    assert!(most <= 2, "{most} processes inside a 2-permit semaphore");
    assert_eq!(most, 2, "the two permits were never used at once");
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn semaphore_release_in_one_process_wakes_an_acquire_in_another() {
    let sem = Arc::new(ProcessSemaphore::new(0).unwrap());
    assert!(!sem.try_acquire());
    let waiting = Arc::new(ProcessEvent::new().unwrap());
    let child = {
        let (sem, waiting) = (sem.clone(), waiting.clone());
        start(move || {
            waiting.set();
            sem.acquire_timeout(Duration::from_secs(30)).unwrap();
            sem.acquire_timeout(Duration::from_secs(30)).unwrap();
        })
    };
    assert!(waiting.wait_timeout(Duration::from_secs(30)));
    sem.release();
    sem.release();
    join_ok(vec![child]);
    assert_eq!(sem.available_permits(), 0);
    // Releases beyond the initial count add permits (as in Python).
    sem.release();
    assert!(sem.try_acquire());
    // ... up to usize::MAX, where a release panics instead of wrapping to 0.
    let full = ProcessSemaphore::new(usize::MAX).unwrap();
    let r = std::panic::catch_unwind(|| full.release());
    assert!(r.is_err());
    assert_eq!(full.available_permits(), usize::MAX);
}

#[test]
fn an_event_set_wakes_every_waiting_process() {
    let _wd = util::watchdog("event", Duration::from_secs(60));
    let ev = Arc::new(ProcessEvent::new().unwrap());
    let ready = Arc::new(ProcessSemaphore::new(0).unwrap());
    let woke = Arc::new(SharedValue::new(0u32).unwrap());
    let children = (0..4)
        .map(|_| {
            let (ev, ready, woke) = (ev.clone(), ready.clone(), woke.clone());
            start(move || {
                // Two waiters per process: a coroutine and the root.
                let e2 = ev.clone();
                let w2 = woke.clone();
                let h = moss::spawn(move || {
                    assert!(e2.wait_timeout(Duration::from_secs(30)));
                    w2.update(|n| *n += 1);
                });
                ready.release();
                assert!(ev.wait_timeout(Duration::from_secs(30)));
                woke.update(|n| *n += 1);
                h.join().unwrap();
            })
        })
        .collect();
    for _ in 0..4 {
        ready.acquire_timeout(Duration::from_secs(30)).unwrap();
    }
    assert!(!ev.is_set());
    ev.set();
    assert!(ev.is_set());
    join_ok(children);
    assert_eq!(woke.get(), 8);
    ev.clear();
    assert!(!ev.is_set());
    assert!(!ev.wait_timeout(Duration::from_millis(20)));
}

#[test]
fn threads_without_a_hub_and_coroutines_share_a_lock() {
    let _wd = util::watchdog("threads", Duration::from_secs(120));
    let lock = Arc::new(ProcessLock::new().unwrap());
    let counter = Arc::new(SharedValue::new(0u64).unwrap());
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (lock, counter) = (lock.clone(), counter.clone());
            std::thread::spawn(move || {
                let body = move || {
                    for _ in 0..500 {
                        let _g = lock.lock();
                        let v = counter.get();
                        counter.set(v + 1);
                    }
                };
                if t == 0 {
                    body(); // a plain thread: no hub, the waits block
                } else {
                    // two coroutines of one hub contend too
                    let b = Arc::new(body);
                    let hs: Vec<_> = (0..2)
                        .map(|_| {
                            let b = b.clone();
                            moss::spawn(move || b())
                        })
                        .collect();
                    moss::join_all(hs);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.get(), 2_500);
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Padded {
    tag: u8,
    // 7 bytes of padding before this field
    big: u64,
    flag: bool,
    c: char,
}

// SAFETY: numbers, a bool and a char: nothing that points anywhere.
unsafe impl Plain for Padded {}

#[test]
fn shared_values_of_many_types_including_padding_and_zero_size() {
    let p = Arc::new(
        SharedValue::new(Padded {
            tag: 1,
            big: u64::MAX,
            flag: false,
            c: 'a',
        })
        .unwrap(),
    );
    let b = Arc::new(SharedValue::new(false).unwrap());
    let arr = Arc::new(SharedValue::new([0u64; 512]).unwrap());
    let opt = Arc::new(SharedValue::new(None::<(i16, f64)>).unwrap());
    let unit = SharedValue::new(()).unwrap();
    let child = {
        let (p, b, arr, opt) = (p.clone(), b.clone(), arr.clone(), opt.clone());
        start(move || {
            p.update(|v| {
                v.tag += 1;
                v.flag = true;
                v.c = '✓';
            });
            b.set(true);
            arr.update(|a| {
                a.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = i as u64 * 3)
            });
            opt.set(Some((-7, 2.5)));
        })
    };
    join_ok(vec![child]);
    assert_eq!(
        p.get(),
        Padded {
            tag: 2,
            big: u64::MAX,
            flag: true,
            c: '✓'
        }
    );
    assert!(b.get());
    assert_eq!(arr.get()[511], 511 * 3);
    assert_eq!(opt.get(), Some((-7, 2.5)));
    unit.set(());
    assert_eq!(unit.update(|_| 5), 5);
    assert_eq!(format!("{:?}", b), "SharedValue { value: true }");
}

#[test]
fn an_update_that_panics_changes_nothing_and_using_the_value_inside_its_update_panics() {
    let v = SharedValue::new(10i32).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.update(|x| {
            *x = 99;
            panic!("changed my mind")
        })
    }));
    assert!(r.is_err());
    assert_eq!(v.get(), 10, "a panicking update stores nothing");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.update(|x| *x = v.get() + 1)
    }));
    let msg = moss::panic_message(&*r.unwrap_err())
        .unwrap_or_default()
        .to_owned();
    assert!(msg.contains("inside its own update"), "{msg}");
    assert_eq!(v.get(), 10);
    // Debug never waits for the lock.
    assert_eq!(
        v.update(|_| format!("{v:?}")),
        "SharedValue { value: <locked> }"
    );
    assert_eq!(format!("{v:?}"), "SharedValue { value: 10 }");
    // Another coroutine waits for a blocked update, it is not refused.
    let v = Rc::new(v);
    let v2 = v.clone();
    let slow = moss::spawn(move || {
        v2.update(|x| {
            moss::sleep(Duration::from_millis(30));
            *x = 11;
        })
    });
    util::until_parked(slow.id());
    assert_eq!(v.get(), 11);
    slow.join().unwrap();
}

#[test]
fn a_process_killed_inside_an_update_leaves_the_last_whole_value() {
    let _wd = util::watchdog("killed in update", Duration::from_secs(60));
    let v = Arc::new(SharedValue::new((1u64, 'x', true)).unwrap());
    let inside = Arc::new(ProcessEvent::new().unwrap());
    let child = {
        let (v, inside) = (v.clone(), inside.clone());
        start(move || {
            v.update(|t| {
                *t = (2, 'y', false);
                inside.set();
                moss::sleep(Duration::MAX);
            })
        })
    };
    assert!(inside.wait_timeout(Duration::from_secs(30)));
    child.0.kill().unwrap();
    child.0.join().unwrap();
    // The next access takes the lock over and reads the last whole value.
    assert_eq!(v.get(), (1, 'x', true));
    v.set((3, 'z', false));
    assert_eq!(v.get(), (3, 'z', false));
}

/// Locks (or tries to, with a timeout) in its destructor, which runs while
/// its coroutine unwinds from a panic; records what happened.
struct LocksOnDrop {
    lock: Rc<ProcessLock>,
    timed: bool,
    log: Rc<std::cell::RefCell<Vec<String>>>,
}

impl Drop for LocksOnDrop {
    fn drop(&mut self) {
        self.log.borrow_mut().push("dropping".into());
        let got = if self.timed {
            self.lock.lock_timeout(Duration::from_secs(3600)).is_ok()
        } else {
            drop(self.lock.lock());
            true
        };
        self.log.borrow_mut().push(format!("got the lock: {got}"));
    }
}

#[test]
fn a_kill_during_an_unwind_neither_aborts_nor_breaks_a_lock_wait() {
    // Run in a child: the failure mode would be an abort.
    util::isolated(
        "a_kill_during_an_unwind_neither_aborts_nor_breaks_a_lock_wait",
        Duration::from_secs(60),
        || {
            let lock = Rc::new(ProcessLock::new().unwrap());
            for timed in [false, true] {
                let g = lock.lock();
                let log = Rc::new(std::cell::RefCell::new(Vec::new()));
                let d = LocksOnDrop {
                    lock: lock.clone(),
                    timed,
                    log: log.clone(),
                };
                let h = moss::spawn(move || {
                    let _d = d;
                    panic!("unwinding");
                });
                util::until("the destructor waits", Duration::from_secs(10), || {
                    log.borrow().len() == 1
                });
                // The kill cannot be delivered during the unwind.
                h.kill_nowait();
                if timed {
                    // A timed wait ends early, as at its deadline.
                    assert!(h.kill_timeout(Duration::from_secs(10)));
                    drop(g);
                } else {
                    // An untimed lock keeps waiting until the lock is free.
                    assert!(!h.kill_timeout(Duration::from_millis(100)));
                    drop(g);
                    assert!(h.kill_timeout(Duration::from_secs(10)));
                }
                assert!(h.join().unwrap_err().is_panic());
                assert_eq!(
                    *log.borrow(),
                    ["dropping".to_string(), format!("got the lock: {}", !timed)]
                );
                assert!(lock.try_lock().is_some(), "nothing held it afterwards");
            }
        },
    );
}
