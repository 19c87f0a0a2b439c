//! Attacks on `moss::sync` (RLock, Condvar, Barrier, RwLock, OnceCell, the
//! queues' give-back) and on `moss::block_on`.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A value whose destructor blocks cooperatively (think a `BufWriter` over
/// a moss socket flushing, or a pool handle joining its workers).
struct SleepsOnDrop(Rc<Cell<bool>>);

impl Drop for SleepsOnDrop {
    fn drop(&mut self) {
        moss::sleep(Duration::from_millis(10));
        self.0.set(true);
    }
}

/// A flag, and a detached coroutine (its JoinHandle dropped) whose result
/// is a [`SleepsOnDrop`] that sets it.
fn detached_result_that_sleeps_on_drop() -> Rc<Cell<bool>> {
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    drop(moss::spawn(move || SleepsOnDrop(d)));
    dropped
}

/// The result of a detached coroutine (its JoinHandle dropped) whose
/// destructor blocks. It is dropped by the coroutine itself, on its own
/// stack, before it ends (it used to be dropped by the hub loop on the
/// root's stack while the root was parked: debug builds panicked "park from
/// Parked", release builds cut the root's own park short).
#[test]
fn detached_result_with_a_blocking_drop() {
    util::isolated(
        "detached_result_with_a_blocking_drop",
        Duration::from_secs(20),
        || {
            let dropped = moss::run(|| {
                let dropped = detached_result_that_sleeps_on_drop();
                moss::sleep(Duration::from_millis(50));
                dropped
            });
            assert!(dropped.get());
        },
    );
}

/// As above with a moss `Mutex` held by another coroutine of the thread
/// (it used to abort: "a sync waiter was dropped while still queued").
#[test]
fn detached_result_drop_takes_a_contended_lock() {
    util::isolated(
        "detached_result_drop_takes_a_contended_lock",
        Duration::from_secs(20),
        || {
            struct LocksOnDrop(Arc<moss::sync::Mutex<u32>>);
            impl Drop for LocksOnDrop {
                fn drop(&mut self) {
                    *self.0.lock() += 1;
                }
            }
            let m = Arc::new(moss::sync::Mutex::new(0));
            let m2 = m.clone();
            let holder = moss::spawn(move || {
                let _g = m2.lock();
                moss::sleep(Duration::from_millis(30));
            });
            moss::yield_now();
            let m3 = m.clone();
            drop(moss::spawn(move || LocksOnDrop(m3)));
            holder.join().unwrap();
            moss::wait();
            assert_eq!(*m.lock(), 1);
        },
    );
}

/// The root's own `sleep(300 ms)` is not cut short by the 10 ms sleep of a
/// detached result's destructor (it used to be, in release builds).
#[test]
fn detached_result_drop_cuts_the_roots_sleep_short() {
    util::isolated(
        "detached_result_drop_cuts_the_roots_sleep_short",
        Duration::from_secs(20),
        || {
            let dropped = detached_result_that_sleeps_on_drop();
            let t = Instant::now();
            moss::sleep(Duration::from_millis(300));
            let slept = t.elapsed();
            assert!(
                slept >= Duration::from_millis(290),
                "root's sleep cut short: {slept:?}"
            );
            assert!(dropped.get());
        },
    );
}

/// The root blocked in `Queue::get()` gets its item although a detached
/// result's destructor slept meanwhile (release builds used to return from
/// the get early and hit `unreachable!`).
#[test]
fn detached_result_drop_breaks_the_roots_queue_get() {
    util::isolated(
        "detached_result_drop_breaks_the_roots_queue_get",
        Duration::from_secs(20),
        || {
            let q = Rc::new(moss::sync::Queue::<u32>::new(1));
            let dropped = detached_result_that_sleeps_on_drop();
            let q2 = q.clone();
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(100));
                q2.put(7);
            });
            assert_eq!(q.get(), 7);
            moss::wait();
            assert!(dropped.get());
        },
    );
}

/// A detached result's destructor that blocks when its thread exits: the
/// exit's kill ends that wait (the destructor's sleep unwinds, caught where
/// the coroutine drops its result) and the thread ends at once; a detached
/// result whose destructor panics does not disturb the thread either.
#[test]
fn detached_result_drop_at_thread_exit_and_panicking() {
    util::isolated(
        "detached_result_drop_at_thread_exit_and_panicking",
        Duration::from_secs(20),
        || {
            struct Slow(Arc<AtomicUsize>);
            impl Drop for Slow {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                    moss::sleep(Duration::from_secs(30));
                    self.0.fetch_add(10, Ordering::SeqCst);
                }
            }
            struct Panics;
            impl Drop for Panics {
                fn drop(&mut self) {
                    moss::sleep(Duration::from_millis(1));
                    panic!("a detached result's destructor panics");
                }
            }
            let n = Arc::new(AtomicUsize::new(0));
            let n2 = n.clone();
            let t = Instant::now();
            std::thread::spawn(move || {
                drop(moss::spawn(move || Slow(n2)));
                drop(moss::spawn(|| Panics));
                moss::sleep(Duration::from_millis(20));
                // Returns with the first coroutine's result still being
                // dropped: the exit kills it.
            })
            .join()
            .unwrap();
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
            assert_eq!(
                n.load(Ordering::SeqCst),
                1,
                "the sleep was cut by the exit's kill"
            );
        },
    );
}

/// `OnceCell::get_or_init` from its own initializer panics with a clear
/// message (documented); so does `OnceCell::wait` (it used to wait for
/// itself forever), and the cell is usable afterwards. `wait_timeout` there
/// times out.
#[test]
fn once_cell_wait_inside_own_initializer() {
    util::isolated(
        "once_cell_wait_inside_own_initializer",
        Duration::from_secs(5),
        || {
            let cell = Rc::new(moss::sync::OnceCell::<u32>::new());
            let c = cell.clone();
            let h = moss::spawn(move || *c.get_or_init(|| *c.wait() + 1));
            let e = h.join().expect_err("expected a clear panic");
            assert!(e.is_panic(), "{e}");
            let p = e.into_panic();
            let msg = moss::panic_message(&*p).unwrap_or_default();
            assert!(msg.contains("own initializer"), "{msg}");
            // The panicking initializer gave the cell up: it is empty and
            // can be initialized again.
            assert_eq!(cell.get(), None);
            let c = cell.clone();
            let t = moss::spawn(move || {
                *c.get_or_init(|| {
                    assert!(c.wait_timeout(Duration::from_millis(20)).is_err());
                    7
                })
            });
            assert_eq!(t.join().unwrap(), 7);
            assert_eq!(cell.wait(), &7);
        },
    );
}

/// Rendezvous semantics after killed receivers, many rounds: every `send`
/// returns only once a `recv` took a value, and values arrive in order.
#[test]
fn rendezvous_after_many_killed_receivers() {
    let _wd = util::watchdog("rendezvous", Duration::from_secs(30));
    moss::run(|| {
        let (tx, rx) = moss::sync::bounded::<u32>(0);
        let rx = Rc::new(rx);
        let mut expect = Vec::new();
        let mut got = Vec::new();
        for round in 0..200u32 {
            // A receiver parks, is handed a value, is killed before it runs.
            let r1 = {
                let rx = rx.clone();
                moss::spawn(move || rx.recv())
            };
            util::until_parked(r1.id());
            tx.try_send(round * 2).unwrap();
            r1.kill();
            expect.push(round * 2);
            // A sender must now wait for a recv.
            let sent = Rc::new(Cell::new(false));
            let s = sent.clone();
            let t = tx.clone();
            let sh = moss::spawn(move || {
                t.send(round * 2 + 1).unwrap();
                s.set(true);
            });
            util::until_parked(sh.id());
            assert!(!sent.get(), "round {round}: send returned before any recv");
            assert!(
                rx.is_empty(),
                "round {round}: rendezvous buffered {}",
                rx.len()
            );
            got.push(rx.recv().unwrap()); // the given-back value first
            expect.push(round * 2 + 1);
            got.push(rx.recv().unwrap());
            sh.join().unwrap();
            assert!(sent.get());
        }
        assert_eq!(got, expect);
    });
}

/// A waker kept by a future after `block_on` returned, woken from another
/// thread while the same coroutine sleeps: the sleep must not be cut
/// short, and the hub must stay healthy.
#[test]
fn block_on_late_wake_does_not_cut_a_sleep() {
    let _wd = util::watchdog("late wake", Duration::from_secs(30));
    let kept: Arc<std::sync::Mutex<Option<std::task::Waker>>> = Default::default();
    let k = kept.clone();
    let h = moss::spawn(move || {
        let mut first = true;
        moss::block_on(std::future::poll_fn(|cx| {
            *k.lock().unwrap() = Some(cx.waker().clone());
            if first {
                first = false;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        }));
        let t = Instant::now();
        moss::sleep(Duration::from_millis(300));
        t.elapsed()
    });
    let w = kept.clone();
    let waker_thread = std::thread::spawn(move || {
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(4));
            if let Some(w) = w.lock().unwrap().as_ref() {
                w.wake_by_ref();
            }
        }
    });
    let slept = h.join().unwrap();
    waker_thread.join().unwrap();
    assert!(
        slept >= Duration::from_millis(290),
        "sleep cut short: {slept:?}"
    );
}

/// Many threads wake many `block_on`s of one hub (async-channel), with
/// coroutines killed at random points: every item is received exactly once
/// or was never taken from the channel.
#[test]
fn block_on_cross_thread_stress_with_kills() {
    let _wd = util::watchdog("block_on stress", Duration::from_secs(60));
    const PER: usize = 20_000;
    const THREADS: usize = 4;
    let (tx, rx) = async_channel::bounded::<usize>(16);
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..PER {
                    futures::executor::block_on(tx.send(t * PER + i)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let seen = Rc::new(std::cell::RefCell::new(vec![0u8; THREADS * PER]));
    let total = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    let mut round = 0u64;
    loop {
        // Keep 8 consumers alive; kill one now and then.
        while consumers.len() < 8 {
            let rx = rx.clone();
            let seen = seen.clone();
            let total = total.clone();
            consumers.push(moss::spawn(move || {
                while let Ok(v) = moss::block_on(rx.recv()) {
                    seen.borrow_mut()[v] += 1;
                    total.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        round += 1;
        moss::sleep(Duration::from_micros(200));
        if round.is_multiple_of(3) {
            let victim = consumers.swap_remove((round as usize / 3) % consumers.len());
            victim.kill();
        }
        if consumers.iter().all(|c| c.is_finished())
            || producers.iter().all(|p| p.is_finished()) && rx.is_empty()
        {
            break;
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    for c in consumers {
        let _ = c.join();
    }
    while let Ok(v) = rx.try_recv() {
        seen.borrow_mut()[v] += 1;
        total.fetch_add(1, Ordering::Relaxed);
    }
    let seen = seen.borrow();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    let lost = seen.iter().filter(|&&c| c == 0).count();
    assert_eq!((dup, lost), (0, 0), "duplicated or lost items");
}

/// A future that blocks in its destructor (async cleanup through
/// `block_on`), dropped while its coroutine is killed out of `block_on`.
#[test]
fn block_on_in_drop_during_kill_unwind() {
    util::isolated(
        "block_on_in_drop_during_kill_unwind",
        Duration::from_secs(20),
        || {
            let (tx, rx) = futures::channel::oneshot::channel::<u32>();
            let rx = Rc::new(Cell::new(Some(rx)));
            struct Cleanup(Rc<Cell<Option<futures::channel::oneshot::Receiver<u32>>>>);
            impl Drop for Cleanup {
                fn drop(&mut self) {
                    let rx = self.0.take().unwrap();
                    assert_eq!(moss::block_on(rx), Ok(9));
                }
            }
            let r2 = rx.clone();
            let h = moss::spawn(move || {
                let _c = Cleanup(r2);
                moss::block_on(std::future::pending::<()>());
            });
            util::until_parked(h.id());
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                tx.send(9).unwrap();
            });
            h.kill();
            assert!(h.join().unwrap_err().is_killed());
        },
    );
}

/// Barrier(n) shared by coroutines of 6 hubs and 2 plain threads, all with
/// random `wait_timeout`s (withdrawn arrivals): every trip releases exactly
/// n parties, one of them the leader, so the successful waits are exactly
/// n times the leaders; and nothing hangs.
#[test]
fn barrier_trips_are_whole_across_hubs_with_timeouts() {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    let _wd = util::watchdog("barrier stress", Duration::from_secs(120));
    const N: usize = 5;
    let b = Arc::new(moss::sync::Barrier::new(N));
    let ok = Arc::new(AtomicU64::new(0));
    let leaders = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let record = {
        let (ok, leaders) = (ok.clone(), leaders.clone());
        move |r: Result<moss::sync::BarrierWaitResult, moss::sync::Timeout>| {
            if let Ok(r) = r {
                ok.fetch_add(1, Ordering::SeqCst);
                if r.is_leader() {
                    leaders.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    };
    let mut threads = Vec::new();
    for t in 0..8u64 {
        let (b, stop, record) = (b.clone(), stop.clone(), record.clone());
        threads.push(std::thread::spawn(move || {
            if t >= 6 {
                // A plain thread (its waits block the thread).
                while !stop.load(Ordering::SeqCst) {
                    record(b.wait_timeout(Duration::from_micros(300 + t * 500)));
                }
                return;
            }
            moss::run(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let hs: Vec<_> = (0..4)
                        .map(|k| {
                            let (b, record) = (b.clone(), record.clone());
                            let d = Duration::from_micros(20 + ((i * 4 + k) * 37 + t * 11) % 700);
                            moss::spawn(move || record(b.wait_timeout(d)))
                        })
                        .collect();
                    for h in hs {
                        h.join().unwrap();
                    }
                    i += 1;
                }
            });
        }));
    }
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let (ok, leaders) = (ok.load(Ordering::SeqCst), leaders.load(Ordering::SeqCst));
    assert!(leaders > 10, "too few trips to mean anything: {leaders}");
    assert_eq!(ok, leaders * N as u64, "successful waits vs leaders x {N}");
}

/// Serial getters over Queue(cap) / JoinableQueue(cap), randomly killed
/// (while parked, after being handed an item but before running, or
/// after they got it), against a producer that blocks when full: the
/// items that reach getters are exactly 0..N in order, `len()` never
/// exceeds the capacity, and a joinable queue's count ends at 0.
#[test]
fn give_back_keeps_fifo_order_and_capacity() {
    let _wd = util::watchdog("give-back model", Duration::from_secs(60));
    for cap in [1usize, 2, 3, 5] {
        for seed in 1..=20u64 {
            moss::run(move || {
                const N: u32 = 300;
                let q = Rc::new(moss::sync::JoinableQueue::<u32>::new(cap));
                let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let yields: Vec<u64> = (0..N).map(|_| next() % 3).collect();
                let p = {
                    let q = q.clone();
                    moss::spawn(move || {
                        for i in 0..N {
                            q.put(i);
                            for _ in 0..yields[i as usize] {
                                moss::yield_now();
                            }
                        }
                    })
                };
                let mut got = Vec::new();
                while got.len() < N as usize {
                    let g = {
                        let q = q.clone();
                        moss::spawn(move || q.get())
                    };
                    for _ in 0..next() % 3 {
                        moss::yield_now();
                        assert!(q.len() <= cap, "len {} > cap {cap}", q.len());
                    }
                    if next() % 3 == 0 {
                        g.kill();
                    }
                    match g.join() {
                        Ok(v) => {
                            got.push(v);
                            q.task_done().unwrap();
                        }
                        Err(e) => assert!(e.is_killed()),
                    }
                    assert!(q.len() <= cap, "len {} > cap {cap}", q.len());
                }
                p.join().unwrap();
                let want: Vec<u32> = (0..N).collect();
                assert_eq!(got, want, "cap {cap} seed {seed}");
                assert!(q.is_empty());
                assert!(q.join_timeout(Duration::ZERO), "unfinished tasks left");
            });
        }
    }
}

/// A *first* cancellation (kill) that arrives while the coroutine unwinds
/// from an ordinary panic, inside a destructor that sleeps: DESIGN says a
/// cancellation arriving during an unwind is never delivered as a second
/// unwind. (Variant of the known "second cancellation" abort: here the
/// first unwind is a panic.)
#[test]
fn kill_during_a_panic_unwind() {
    util::isolated(
        "kill_during_a_panic_unwind",
        Duration::from_secs(10),
        || {
            let dropped = Rc::new(Cell::new(false));
            let d = dropped.clone();
            let h = moss::spawn(move || {
                let _s = SleepsOnDrop(d);
                panic!("boom");
            });
            util::until_parked(h.id());
            h.kill();
            let e = h.join().unwrap_err();
            assert!(e.is_panic() || e.is_killed());
        },
    );
}

/// How the victim of `kill_from_a_destructor_during_an_unwind` waits.
#[derive(Clone, Copy, Debug)]
enum VictimWait {
    /// A call that can fail: a sleep.
    Sleep,
    /// A call that cannot: an untimed `Queue::get`.
    QueueGet,
    /// A moss `Mutex` held by another coroutine.
    Lock,
}

/// How the owner of the killing destructor unwinds.
#[derive(Clone, Copy, Debug)]
enum OwnerUnwind {
    Panic,
    Killed,
    TimedOut,
}

/// A destructor kills another coroutine (and waits for its end) while its
/// owner unwinds. std counts unwinds per thread, so the victim, a
/// coroutine that parked long before, used to think it was unwinding too,
/// deferred its kill for ever (or, in a fallible wait, failed its call
/// without unwinding), and both hung. The victim parked while not
/// unwinding: it takes the kill.
fn kill_from_a_destructor_during_an_unwind(wait: VictimWait, unwind: OwnerUnwind) {
    struct KillsOnDrop(Option<moss::JoinHandle<()>>, Rc<Cell<u32>>);
    impl Drop for KillsOnDrop {
        fn drop(&mut self) {
            let victim = self.0.take().unwrap();
            victim.kill();
            self.1.set(self.1.get() + 1);
        }
    }
    let q = Rc::new(moss::sync::Queue::<u32>::new(1));
    let m = Rc::new(moss::sync::Mutex::new(()));
    let after = Rc::new(Cell::new(0u32));
    let (q2, m2, m3, a2) = (q.clone(), m.clone(), m.clone(), after.clone());
    let holder = moss::spawn(move || {
        let _g = m2.lock();
        moss::sleep(Duration::from_secs(3600));
    });
    util::until_parked(holder.id());
    let victim = moss::spawn(move || {
        match wait {
            VictimWait::Sleep => moss::sleep(Duration::from_secs(3600)),
            VictimWait::QueueGet => drop(q2.get()),
            VictimWait::Lock => drop(m3.lock()),
        }
        // Never reached: the kill unwinds the wait.
        a2.set(99);
    });
    util::until_parked(victim.id());
    let killed = Rc::new(Cell::new(0));
    let k2 = killed.clone();
    let owner = moss::spawn(move || {
        let k = KillsOnDrop(Some(victim), k2);
        match unwind {
            OwnerUnwind::Panic => {
                let _k = k;
                panic!("the owner panics")
            }
            OwnerUnwind::Killed => {
                let _k = k;
                moss::sleep(Duration::from_secs(3600))
            }
            OwnerUnwind::TimedOut => {
                let r = moss::timeout(Duration::from_millis(5), move || {
                    let _k = k;
                    moss::sleep(Duration::from_secs(3600))
                });
                assert!(r.is_err());
            }
        }
    });
    util::until_parked(owner.id());
    if let OwnerUnwind::Killed = unwind {
        owner.kill_nowait();
    }
    let r = owner.join();
    match unwind {
        OwnerUnwind::Panic => assert!(r.unwrap_err().is_panic()),
        OwnerUnwind::Killed => assert!(r.unwrap_err().is_killed()),
        OwnerUnwind::TimedOut => r.unwrap(),
    }
    assert_eq!(killed.get(), 1, "the destructor's kill returned");
    assert_eq!(after.get(), 0, "the victim unwound from its wait");
    // The queue and the lock still work.
    q.put(5);
    assert_eq!(q.get(), 5);
    holder.kill();
    drop(m.lock());
}

macro_rules! kill_from_a_destructor {
    ($($name:ident: $wait:ident, $unwind:ident;)*) => {$(
        #[test]
        fn $name() {
            util::isolated(stringify!($name), Duration::from_secs(10), || {
                kill_from_a_destructor_during_an_unwind(VictimWait::$wait, OwnerUnwind::$unwind)
            });
        }
    )*};
}

kill_from_a_destructor! {
    kill_from_a_destructor_sleep_panic: Sleep, Panic;
    kill_from_a_destructor_sleep_killed: Sleep, Killed;
    kill_from_a_destructor_sleep_timed_out: Sleep, TimedOut;
    kill_from_a_destructor_get_panic: QueueGet, Panic;
    kill_from_a_destructor_get_killed: QueueGet, Killed;
    kill_from_a_destructor_get_timed_out: QueueGet, TimedOut;
    kill_from_a_destructor_lock_panic: Lock, Panic;
    kill_from_a_destructor_lock_killed: Lock, Killed;
    kill_from_a_destructor_lock_timed_out: Lock, TimedOut;
}

/// The victim of a kill from another coroutine's destructor (see above)
/// unwinds through destructors of its own that block, one inside a
/// `timeout` that fires during that unwind, while the killer is still
/// unwinding too: no second unwind (no abort), the timed wait ends early,
/// and both finish.
#[test]
fn killed_victim_unwinds_through_blocking_destructors() {
    util::isolated(
        "killed_victim_unwinds_through_blocking_destructors",
        Duration::from_secs(10),
        || {
            struct Slow(Rc<Cell<u32>>);
            impl Drop for Slow {
                fn drop(&mut self) {
                    let t = Instant::now();
                    let r = moss::timeout(Duration::from_millis(5), || {
                        moss::sleep(Duration::from_secs(30))
                    });
                    assert!(r.is_err());
                    assert!(t.elapsed() < Duration::from_secs(10));
                    moss::sleep(Duration::from_millis(20));
                    self.0.set(self.0.get() + 1);
                }
            }
            struct KillsOnDrop(Option<moss::JoinHandle<()>>);
            impl Drop for KillsOnDrop {
                fn drop(&mut self) {
                    self.0.take().unwrap().kill();
                }
            }
            let done = Rc::new(Cell::new(0));
            let d = done.clone();
            let victim = moss::spawn(move || {
                let _s = Slow(d);
                moss::sleep(Duration::from_secs(3600));
            });
            util::until_parked(victim.id());
            let id = victim.id();
            let owner = moss::spawn(move || {
                let _k = KillsOnDrop(Some(victim));
                panic!("the owner panics");
            });
            assert!(owner.join().unwrap_err().is_panic());
            assert_eq!(
                done.get(),
                1,
                "the victim's destructor ran to its end ({id})"
            );
        },
    );
}
