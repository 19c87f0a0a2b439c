//! Attacks on the futex hook: std's Mutex, Condvar and RwLock shared by
//! coroutines of several hubs and plain threads at once (moss-side and
//! kernel waiters mixed), with timeouts.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod util;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// 3 hubs x 6 coroutines and 3 plain threads increment one std Mutex'd
/// counter (some holding it across a moss sleep / a thread yield), read a
/// std RwLock, and move items through a std Condvar bounded buffer with
/// timed waits: exact counts, every item exactly once, no hang.
#[test]
fn std_sync_mixed_waiters_stress() {
    util::isolated_patched(
        "std_sync_mixed_waiters_stress",
        Duration::from_secs(120),
        || {
            const PER: u64 = 5000;
            let counter = Arc::new(Mutex::new(0u64));
            let rw = Arc::new(RwLock::new(0u64));
            let buf = Arc::new((
                Mutex::new(VecDeque::<u64>::new()),
                Condvar::new(),
                Condvar::new(),
            ));
            let got = Arc::new(Mutex::new(Vec::<u64>::new()));
            let produced = Arc::new(AtomicU64::new(0));
            let work = {
                let (counter, rw, buf, got, produced) = (
                    counter.clone(),
                    rw.clone(),
                    buf.clone(),
                    got.clone(),
                    produced.clone(),
                );
                move |who: u64, in_coroutine: bool| {
                    for i in 0..PER {
                        {
                            let mut g = counter.lock().unwrap();
                            *g += 1;
                            if i % 97 == 0 {
                                if in_coroutine {
                                    moss::sleep(Duration::from_micros(200));
                                } else {
                                    std::thread::yield_now();
                                }
                            }
                        }
                        if i % 5 == 0 {
                            *rw.write().unwrap() += 1;
                        } else {
                            let _r = *rw.read().unwrap();
                        }
                        // Producers: even `who`; consumers: odd.
                        let (m, not_full, not_empty) = &*buf;
                        if who.is_multiple_of(2) {
                            let mut q = m.lock().unwrap();
                            while q.len() >= 4 {
                                q = not_full
                                    .wait_timeout(q, Duration::from_millis(3))
                                    .unwrap()
                                    .0;
                            }
                            q.push_back(who * PER + i);
                            produced.fetch_add(1, Ordering::SeqCst);
                            drop(q);
                            not_empty.notify_one();
                        } else {
                            let mut q = m.lock().unwrap();
                            loop {
                                if let Some(v) = q.pop_front() {
                                    drop(q);
                                    not_full.notify_one();
                                    got.lock().unwrap().push(v);
                                    break;
                                }
                                q = not_empty
                                    .wait_timeout(q, Duration::from_millis(3))
                                    .unwrap()
                                    .0;
                            }
                        }
                    }
                }
            };
            let mut threads = Vec::new();
            for h in 0..3u64 {
                let work = work.clone();
                threads.push(std::thread::spawn(move || {
                    moss::run(move || {
                        let hs: Vec<_> = (0..6u64)
                            .map(|c| {
                                let work = work.clone();
                                moss::spawn(move || work(h * 6 + c, true))
                            })
                            .collect();
                        for r in moss::join_all(hs) {
                            r.unwrap();
                        }
                    })
                }));
            }
            for t in 0..4u64 {
                let work = work.clone();
                threads.push(std::thread::spawn(move || work(18 + t, false)));
            }
            for t in threads {
                t.join().unwrap();
            }
            let parties = 22u64;
            assert_eq!(*counter.lock().unwrap(), parties * PER);
            assert_eq!(*rw.read().unwrap(), parties * PER / 5);
            let mut got = got.lock().unwrap().clone();
            got.sort_unstable();
            let mut want: Vec<u64> = (0..parties)
                .filter(|w| w % 2 == 0)
                .flat_map(|w| (0..PER).map(move |i| w * PER + i))
                .collect();
            want.sort_unstable();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "items lost or duplicated");
        },
    );
}

fn cpu_time() -> Duration {
    // SAFETY: a valid out-pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `f` and returns it with the CPU time the process used meanwhile,
/// as a share of one core over the wall time.
fn cpu_share(f: impl FnOnce()) -> f64 {
    let (c0, t0) = (cpu_time(), std::time::Instant::now());
    f();
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    cpu.as_secs_f64() / wall.as_secs_f64()
}

/// `n` coroutines, each running `body` on the receiving end of a std
/// channel of its own: the senders, and the coroutines.
fn receivers(
    n: usize,
    body: fn(std::sync::mpsc::Receiver<u32>) -> u32,
) -> (
    Vec<std::sync::mpsc::Sender<u32>>,
    Vec<moss::JoinHandle<u32>>,
) {
    (0..n)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            (tx, moss::spawn(move || body(rx)))
        })
        .unzip()
}

/// Feeds the `i`th receiver the value `i` from another thread, so they
/// finish, and checks that the `i`th coroutine returns `want(i)`.
fn finish_idle_receivers(
    senders: Vec<std::sync::mpsc::Sender<u32>>,
    hs: Vec<moss::JoinHandle<u32>>,
    want: impl Fn(u32) -> u32,
) {
    let t = std::thread::spawn(move || {
        for (i, tx) in senders.into_iter().enumerate() {
            tx.send(i as u32).unwrap();
        }
    });
    for (i, r) in moss::join_all(hs).into_iter().enumerate() {
        assert_eq!(r.unwrap(), want(i as u32));
    }
    t.join().unwrap();
}

/// Prints the CPU `share` the idle receivers used and checks it is below `limit`.
fn assert_idle_share(what: &str, share: f64, limit: f64) {
    println!("{what}: {:.1}% of a core", share * 100.0);
    assert!(
        share < limit,
        "idle receivers used {:.1}% of a core",
        share * 100.0
    );
}

/// 2000 coroutines blocked in std's thread parker (`mpsc::Receiver::recv`
/// fed by another thread) cost almost no CPU while nothing is sent: one
/// watcher per thread and one re-check per receiver every 2 s (~2% of a
/// core in a debug build, 0.6% in release; they used to re-check on timers
/// capped at 16 ms each, scanning the thread's idle list: 24%). Then
/// every one receives its value.
#[test]
fn idle_std_receivers_burn_cpu() {
    util::isolated_patched(
        "idle_std_receivers_burn_cpu",
        Duration::from_secs(60),
        || {
            let (senders, hs) = receivers(2000, |rx| rx.recv().unwrap());
            moss::sleep(Duration::from_millis(500)); // all parked
            let share = cpu_share(|| moss::sleep(Duration::from_secs(2)));
            finish_idle_receivers(senders, hs, |i| i);
            assert_idle_share("idle", share, 0.06);
        },
    );
}

/// The same 2000 receivers after each has received one value through the
/// shared parker: once idle again, they cost as little.
#[test]
fn idle_std_receivers_after_handoffs_cost_little() {
    util::isolated_patched(
        "idle_std_receivers_after_handoffs_cost_little",
        Duration::from_secs(60),
        || {
            let (senders, hs) = receivers(2000, |rx| {
                let a = rx.recv().unwrap();
                a + rx.recv().unwrap()
            });
            moss::sleep(Duration::from_millis(100)); // all parked
            let senders = std::thread::spawn(move || {
                for (i, tx) in senders.iter().enumerate() {
                    tx.send(i as u32).unwrap();
                }
                senders
            })
            .join()
            .unwrap();
            // Everyone took its first value and parked again; the backstop
            // delays grow to their cap meanwhile.
            moss::sleep(Duration::from_millis(1500));
            let share = cpu_share(|| moss::sleep(Duration::from_secs(3)));
            finish_idle_receivers(senders, hs, |i| 2 * i);
            assert_idle_share("idle after hand-offs", share, 0.10);
        },
    );
}

/// Hand-offs through std channels from four threads to 2 hubs x 60
/// coroutines, each receiving its own stream (half with `recv`, half with
/// `recv_timeout`), in bursts and one by one: every value arrives, in
/// order, with no lost wake-up (the watchdog bounds the run).
#[test]
fn std_mpsc_handoffs_to_many_coroutines_exact() {
    util::isolated_patched(
        "std_mpsc_handoffs_to_many_coroutines_exact",
        Duration::from_secs(120),
        || {
            const HUBS: usize = 2;
            const PER_HUB: usize = 60;
            const EACH: u32 = 150;
            let mut txs = Vec::new();
            let mut hubs = Vec::new();
            for h in 0..HUBS {
                let mut rxs = Vec::new();
                for _ in 0..PER_HUB {
                    let (tx, rx) = std::sync::mpsc::channel::<u32>();
                    txs.push(tx);
                    rxs.push(rx);
                }
                hubs.push(std::thread::spawn(move || {
                    moss::run(move || {
                        let hs: Vec<_> = rxs
                            .into_iter()
                            .enumerate()
                            .map(|(c, rx)| {
                                moss::spawn(move || {
                                    for want in 0..EACH {
                                        let v = if (h + c) % 2 == 0 {
                                            rx.recv().unwrap()
                                        } else {
                                            loop {
                                                match rx.recv_timeout(Duration::from_millis(7)) {
                                                    Ok(v) => break v,
                                                    Err(
                                                        std::sync::mpsc::RecvTimeoutError::Timeout,
                                                    ) => {}
                                                    Err(e) => panic!("{e}"),
                                                }
                                            }
                                        };
                                        assert_eq!(v, want);
                                    }
                                })
                            })
                            .collect();
                        for r in moss::join_all(hs) {
                            r.unwrap();
                        }
                    })
                }));
            }
            // Four senders, each owning a quarter of the channels.
            let mut quarters: Vec<Vec<_>> = (0..4).map(|_| Vec::new()).collect();
            for (i, tx) in txs.into_iter().enumerate() {
                quarters[i % 4].push(tx);
            }
            let senders: Vec<_> = quarters
                .into_iter()
                .enumerate()
                .map(|(s, q)| {
                    std::thread::spawn(move || {
                        for v in 0..EACH {
                            for (i, tx) in q.iter().enumerate() {
                                tx.send(v).unwrap();
                                if (i + s) % 7 == 0 {
                                    std::thread::yield_now();
                                }
                            }
                            if v % 10 == 0 {
                                std::thread::sleep(Duration::from_millis(2));
                            }
                        }
                    })
                })
                .collect();
            for s in senders {
                s.join().unwrap();
            }
            for h in hubs {
                h.join().unwrap();
            }
        },
    );
}

/// N coroutines of one hub contend one std Mutex held across a yield:
/// each hand-off costs O(1) in the futex wait table, whatever the number
/// of waiters (it used to scan the bucket's whole waiter list twice per
/// wake: 5000 contenders 2.0 s, 20000 22 s). CPU time for 4N against N
/// (each the best of two runs, after a warm-up).
#[test]
fn std_mutex_contention_scales_quadratically() {
    util::isolated_patched(
        "std_mutex_contention_scales_quadratically",
        Duration::from_secs(240),
        || {
            let run = |n: usize| {
                let m = Arc::new(Mutex::new(0u64));
                let t = cpu_time();
                let hs: Vec<_> = (0..n)
                    .map(|_| {
                        let m = m.clone();
                        moss::spawn(move || {
                            let mut g = m.lock().unwrap();
                            moss::yield_now(); // the others queue on the futex
                            *g += 1;
                        })
                    })
                    .collect();
                for r in moss::join_all(hs) {
                    r.unwrap();
                }
                assert_eq!(*m.lock().unwrap(), n as u64);
                cpu_time() - t
            };
            // CPU time, not wall time: on a shared machine the longer run
            // is more likely to lose the core meanwhile. The first run
            // maps and touches fresh stacks: warm up, then take the best
            // of two runs of each size.
            run(20_000);
            let small = run(5_000).min(run(5_000));
            let big = run(20_000).min(run(20_000));
            println!("5000 contenders: {small:?}; 20000: {big:?}");
            // Linear would be ~4x; allow 8x.
            assert!(big < small * 8, "5000: {small:?}, 20000: {big:?}");
        },
    );
}

/// Four coroutines of one hub block in std `recv` on channels of their
/// own, fed by a plain thread; the first to park keeps watch over the
/// thread's parker. Killing it hands the watch to another sleeper: the
/// other three still receive their values, and the victim, once its own
/// value comes, unwinds at its next blocking point.
#[test]
fn killing_the_watcher_of_std_receivers_hands_the_watch_over() {
    util::isolated_patched(
        "killing_the_watcher_of_std_receivers_hands_the_watch_over",
        Duration::from_secs(60),
        || {
            let drops = util::DropCounter::new();
            let mut txs = Vec::new();
            let mut hs = Vec::new();
            for i in 0..4u32 {
                let (tx, rx) = std::sync::mpsc::channel::<u32>();
                txs.push(tx);
                let token = drops.token();
                hs.push(moss::spawn(move || {
                    let _token = token;
                    let v = rx.recv().unwrap();
                    assert_eq!(v, i * 10);
                    moss::sleep(Duration::from_millis(i as u64));
                    v
                }));
                util::until_parked(hs[i as usize].id());
            }
            // std's `recv` cannot end without a value: the kill waits.
            assert!(!hs[0].kill_timeout(Duration::from_millis(50)));
            let txs = Arc::new(txs);
            let t = {
                let txs = txs.clone();
                std::thread::spawn(move || {
                    for i in 1..4u32 {
                        txs[i as usize].send(i * 10).unwrap();
                    }
                })
            };
            let mut hs = hs.into_iter();
            let victim = hs.next().unwrap();
            for (i, h) in hs.enumerate() {
                assert_eq!(h.join().unwrap(), (i as u32 + 1) * 10);
            }
            t.join().unwrap();
            assert_eq!(drops.drops(), 3);
            std::thread::spawn(move || txs[0].send(0).unwrap())
                .join()
                .unwrap();
            assert!(victim.join().unwrap_err().is_killed());
            assert_eq!(drops.drops(), 4);
        },
    );
}

/// A coroutine killed in `Condvar::wait` (inside a predicate loop) goes
/// on waiting until notified, then unwinds at its next blocking point;
/// another waiter of the same condvar is not disturbed, and a timed wait
/// killed meanwhile ends at its deadline.
#[test]
fn a_coroutine_killed_in_a_condvar_wait() {
    util::isolated_patched(
        "a_coroutine_killed_in_a_condvar_wait",
        Duration::from_secs(60),
        || {
            let pair = Arc::new((Mutex::new(false), Condvar::new()));
            let waiter = |sleep_after: bool| {
                let pair = pair.clone();
                moss::spawn(move || {
                    let (m, cv) = &*pair;
                    let mut g = m.lock().unwrap();
                    while !*g {
                        g = cv.wait(g).unwrap();
                    }
                    drop(g);
                    if sleep_after {
                        moss::sleep(Duration::from_secs(30));
                    }
                    7
                })
            };
            let victim = waiter(true);
            let other = waiter(false);
            let timed = {
                let pair = pair.clone();
                moss::spawn(move || {
                    let (m, cv) = &*pair;
                    let g = m.lock().unwrap();
                    let (_g, r) = cv.wait_timeout(g, Duration::from_millis(300)).unwrap();
                    r.timed_out()
                })
            };
            util::until_parked(victim.id());
            util::until_parked(other.id());
            util::until_parked(timed.id());
            // std's wait loops cannot end early: the kills wait.
            assert!(!victim.kill_timeout(Duration::from_millis(20)));
            timed.kill_nowait();
            let t = std::time::Instant::now();
            // The timed wait ends by its deadline (killed on the way out,
            // or reporting the timeout).
            match timed.join() {
                Ok(timed_out) => assert!(timed_out),
                Err(e) => assert!(e.is_killed()),
            }
            assert!(t.elapsed() < Duration::from_secs(10));
            moss::sleep(Duration::from_millis(20));
            let (m, cv) = &*pair;
            *m.lock().unwrap() = true;
            cv.notify_all();
            assert_eq!(other.join().unwrap(), 7);
            assert!(victim.join().unwrap_err().is_killed());
            assert!(m.try_lock().is_ok());
        },
    );
}

/// A hub thread ends while a (background) coroutine of it is parked on a
/// std Mutex held by the main thread. The thread's exit kills its
/// coroutines and waits for them; a kill cannot end a std wait, so the
/// exit waits until the lock comes (as `kill` of a coroutine in a std wait
/// does; joining that thread while holding the lock would deadlock, as
/// with a plain thread). Every waiter gets the lock once: the exiting
/// thread's coroutine, a plain thread (in the kernel) and a coroutine of
/// another hub (in the table); no wake-up is swallowed by the exiting
/// thread's purged entries.
#[test]
fn thread_exit_while_a_coroutine_waits_on_a_std_mutex() {
    util::isolated_patched(
        "thread_exit_while_a_coroutine_waits_on_a_std_mutex",
        Duration::from_secs(60),
        || {
            let m = Arc::new(Mutex::new(0u32));
            let g = m.lock().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let exiting = {
                let m = m.clone();
                std::thread::spawn(move || {
                    moss::run(move || {
                        let h = moss::Builder::new()
                            .background(true)
                            .spawn(move || {
                                *m.lock().unwrap() += 100;
                            })
                            .unwrap();
                        util::until_parked(h.id());
                        tx.send(()).unwrap();
                    })
                })
            };
            rx.recv().unwrap();
            // Live waiters: a plain thread (kernel) and a coroutine of
            // another hub (table), each adding once.
            let plain = {
                let m = m.clone();
                std::thread::spawn(move || *m.lock().unwrap() += 1)
            };
            let (tx, rx) = std::sync::mpsc::channel();
            let hub = {
                let m = m.clone();
                std::thread::spawn(move || {
                    moss::run(move || {
                        let h = moss::spawn(move || *m.lock().unwrap() += 10);
                        util::until_parked(h.id());
                        tx.send(()).unwrap();
                        h.join().unwrap();
                    })
                })
            };
            rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50)); // the exit and the plain thread wait
            drop(g);
            plain.join().unwrap();
            hub.join().unwrap();
            exiting.join().unwrap();
            assert_eq!(*m.lock().unwrap(), 111);
        },
    );
}

/// `n` coroutines that each lock `m`, hold it across a sleep of `hold` and
/// add 1 to it.
fn queue_on(m: &Arc<Mutex<u32>>, n: usize, hold: Duration) -> Vec<moss::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let m = m.clone();
            moss::spawn(move || {
                let mut g = m.lock().unwrap();
                moss::sleep(hold);
                *g += 1;
            })
        })
        .collect()
}

/// A process forked while coroutines of the parent queue on a std Mutex
/// (held across a sleep): the child's std locks and channels work between
/// its own coroutines and threads, and the parent's waiters all get the
/// lock afterwards.
#[test]
fn fork_while_coroutines_queue_on_a_std_mutex() {
    util::isolated_patched(
        "fork_while_coroutines_queue_on_a_std_mutex",
        Duration::from_secs(60),
        || {
            let m = Arc::new(Mutex::new(0u32));
            let hs = queue_on(&m, 4, Duration::from_millis(30));
            util::until_parked(hs[3].id());
            let m2 = m.clone();
            let p = moss::pool::Process::new(move || {
                // The parent's lock is held by a coroutine that does not
                // exist here: only try it.
                assert!(m2.try_lock().is_err());
                let n = Arc::new(Mutex::new(0u32));
                let hs = queue_on(&n, 3, Duration::from_millis(5));
                let (tx, rx) = std::sync::mpsc::channel();
                let t = std::thread::spawn(move || tx.send(5u32).unwrap());
                assert_eq!(rx.recv().unwrap(), 5);
                t.join().unwrap();
                for r in moss::join_all(hs) {
                    r.unwrap();
                }
                assert_eq!(*n.lock().unwrap(), 3);
            })
            .start()
            .unwrap();
            assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), Some(0));
            for r in moss::join_all(hs) {
                r.unwrap();
            }
            assert_eq!(*m.lock().unwrap(), 4);
        },
    );
}

/// moss's own internal locks never wait through the futex hook. Coroutines
/// on two "setter" hubs set an `Event` and put into a `Queue` that
/// coroutines on three other hubs watch with `wait_any`: every set and put
/// wakes watchers on other threads, through those hubs' cross-thread
/// queues, from inside the primitive's internal lock. That queue used to be
/// a std `Mutex`: contended, it parked the setter through the futex hook
/// with the primitive's spin lock held, and the setter's sibling coroutine
/// then spun on that lock for ever (the thread never got back to its hub).
/// Every coroutine keeps making progress; nothing hangs. (A liveness
/// stress: the old hang needed the std `Mutex` to be contended past its
/// spinning at that moment, which a run here reaches only rarely.)
#[test]
fn internal_locks_never_park_through_the_futex_hook() {
    util::isolated_patched(
        "internal_locks_never_park_through_the_futex_hook",
        Duration::from_secs(60),
        || {
            use std::sync::atomic::AtomicBool;
            let ev = Arc::new(moss::sync::Event::new());
            let q = Arc::new(moss::sync::Queue::<u64>::unbounded());
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            for _ in 0..3 {
                let (ev, q, stop) = (ev.clone(), q.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    let hs: Vec<_> = (0..6)
                        .map(|_| {
                            let (ev, q, stop) = (ev.clone(), q.clone(), stop.clone());
                            moss::spawn(move || {
                                let mut n = 0u64;
                                while !stop.load(Ordering::Relaxed) {
                                    let objs: [&dyn moss::sync::Waitable; 2] = [&*ev, &*q];
                                    let _ = moss::sync::wait_any_timeout(
                                        &objs,
                                        Duration::from_millis(2),
                                    );
                                    let _ = q.get_nowait();
                                    n += 1;
                                }
                                n
                            })
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).min().unwrap()
                }));
            }
            for _ in 0..2 {
                let (ev, q, stop) = (ev.clone(), q.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    let hs: Vec<_> = (0..4)
                        .map(|_| {
                            let (ev, q, stop) = (ev.clone(), q.clone(), stop.clone());
                            moss::spawn(move || {
                                let mut n = 0u64;
                                while !stop.load(Ordering::Relaxed) {
                                    ev.set();
                                    ev.clear();
                                    q.put(n);
                                    n += 1;
                                    if n.is_multiple_of(16) {
                                        moss::yield_now();
                                    }
                                }
                                n
                            })
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).min().unwrap()
                }));
            }
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                let least = t.join().unwrap();
                assert!(least > 0, "a coroutine never got through");
            }
        },
    );
}
