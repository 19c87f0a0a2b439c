//! `RLock`, `RwLock` and `Condvar`: re-entry per coroutine and per thread,
//! the deadlock of the Python notes and how one re-entrant lock avoids it,
//! writer preference, producer/consumer with a condition, and kill and
//! timeout at every blocking point (nothing lost, no lost wake-up).

mod util;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moss::sync::{Condvar, Mutex, RLock, RwLock, Timeout};

// ---------------------------------------------------------------- RLock

/// The deadlock of the notes: two workers need resources A and B and take
/// them in opposite orders. With one lock per resource each holds its
/// first and waits for the other's: `lock_timeout` is the only way out (the
/// notes' first remedy). The second remedy, restructuring, is the classic
/// one: guard both resources with one re-entrant lock (Python's
/// `lock_a = lock_b = RLock()`); the second acquisition re-enters.
fn deadlock_then_rlock(spawn2: impl Fn(Box<dyn FnOnce() + Send>, Box<dyn FnOnce() + Send>)) {
    // Two mutexes, opposite order: both time out on their second lock.
    let (a, b) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
    let timed_out = Arc::new(AtomicUsize::new(0));
    let both_hold = Arc::new(moss::sync::Barrier::new(2));
    let worker = |first: Arc<Mutex<i32>>, second: Arc<Mutex<i32>>| {
        let (t, bh) = (timed_out.clone(), both_hold.clone());
        Box::new(move || {
            let g1 = first.lock();
            bh.wait(); // each holds its first lock now
            if second.lock_timeout(Duration::from_millis(50)).is_err() {
                t.fetch_add(1, Ordering::SeqCst);
            }
            bh.wait(); // both tried before either lets go
            drop(g1);
        }) as Box<dyn FnOnce() + Send>
    };
    spawn2(worker(a.clone(), b.clone()), worker(b.clone(), a.clone()));
    assert_eq!(timed_out.load(Ordering::SeqCst), 2, "the deadlock");
    assert!(!a.is_locked() && !b.is_locked());

    // One RLock for both resources: no deadlock, both finish.
    let r = Arc::new(RLock::new((Cell::new(0), Cell::new(0))));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let worker = |name: &'static str, a_first: bool| {
        let (r, order) = (r.clone(), order.clone());
        Box::new(move || {
            let first = r.lock(); // "lock A" (or B)
            order.lock().unwrap().push(format!("{name} took its first"));
            moss::sleep(Duration::from_millis(20)); // the other one tries now
            let second = r.lock(); // "lock B": re-entry, no wait
            assert!(r.is_owned());
            let (x, y) = if a_first {
                (&second.0, &first.1)
            } else {
                (&second.1, &first.0)
            };
            x.set(x.get() + 1);
            y.set(y.get() + 1);
            order.lock().unwrap().push(format!("{name} took both"));
            drop(second);
            assert!(r.is_owned(), "still held once");
        }) as Box<dyn FnOnce() + Send>
    };
    let t = Instant::now();
    spawn2(worker("1", true), worker("2", false));
    assert!(
        t.elapsed() >= Duration::from_millis(40),
        "the second waited"
    );
    let g = r.lock();
    assert_eq!((g.0.get(), g.1.get()), (2, 2));
    drop(g);
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 4);
    // Mutual exclusion: each worker took both before the other took any.
    assert!(order[0].ends_with("took its first") && order[1].ends_with("took both"));
    assert_eq!(order[0][..1], order[1][..1]);
    assert!(!r.is_locked());
}

#[test]
fn the_notes_deadlock_and_one_rlock_avoiding_it_between_coroutines() {
    deadlock_then_rlock(|f, g| {
        let hs = vec![moss::spawn(f), moss::spawn(g)];
        for r in moss::join_all(hs) {
            r.unwrap();
        }
    });
}

#[test]
fn the_notes_deadlock_and_one_rlock_avoiding_it_between_plain_threads() {
    let _wd = util::watchdog("RLock between threads", Duration::from_secs(30));
    deadlock_then_rlock(|f, g| {
        let hs = [std::thread::spawn(f), std::thread::spawn(g)];
        for h in hs {
            h.join().unwrap();
        }
    });
}

#[test]
fn rlock_reentry_is_per_coroutine_not_per_thread() {
    let r = Rc::new(RLock::new(Cell::new(0)));
    let g = r.lock(); // the root holds it
    let g2 = r.lock(); // re-entry
    assert!(r.try_lock().is_some() && r.is_owned());
    let r1 = r.clone();
    let probe = moss::spawn(move || {
        assert!(!r1.is_owned());
        assert!(
            r1.try_lock().is_none(),
            "another coroutine of the same thread"
        );
        r1.lock_timeout(Duration::from_millis(5)).err()
    });
    assert_eq!(probe.join().unwrap(), Some(Timeout));
    let r1 = r.clone();
    let other = moss::spawn(move || {
        let g = r1.lock(); // waits for the root's two guards
        g.set(g.get() + 1);
        let again = r1.lock();
        again.set(again.get() + 1);
    });
    util::until_parked(other.id());
    drop(g);
    moss::yield_now();
    assert!(!other.is_finished(), "one guard of the root is left");
    drop(g2);
    other.join().unwrap();
    assert_eq!(r.lock().get(), 2);
    assert!(!r.is_locked());
}

#[test]
fn rlock_waiters_are_fifo_and_a_killed_or_timed_out_waiter_leaves_it_usable() {
    let r = Rc::new(RLock::new(RefCell::new(Vec::new())));
    let held = r.lock();
    let spawn_waiter = |name: &'static str| {
        let r = r.clone();
        moss::spawn(move || {
            let g = r.lock();
            g.borrow_mut().push(name);
            let g2 = r.lock();
            g2.borrow_mut().push(name);
        })
    };
    let a = spawn_waiter("a");
    let victim = spawn_waiter("victim");
    let r2 = r.clone();
    let timed = moss::spawn(move || {
        moss::timeout(Duration::from_millis(1), || drop(r2.lock())).unwrap_err()
    });
    let b = spawn_waiter("b");
    for h in [&a, &victim, &b] {
        util::until_parked(h.id());
    }
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    timed.join().unwrap();
    drop(held);
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(*r.lock().borrow(), ["a", "a", "b", "b"]);
    // Handed the lock, then killed before it ran: it passes it on.
    let held = r.lock();
    let victim = spawn_waiter("victim");
    let c = spawn_waiter("c");
    util::until_parked(victim.id());
    util::until_parked(c.id());
    drop(held); // handed to the victim
    victim.kill();
    c.join().unwrap();
    assert_eq!(r.lock().borrow().len(), 6);
    assert!(!r.is_locked());
}

#[test]
fn rlock_excludes_coroutines_of_four_threads_and_plain_threads() {
    let _wd = util::watchdog("RLock counter", Duration::from_secs(60));
    let r = Arc::new(RLock::new(Cell::new(0u64)));
    let inside = Arc::new(AtomicUsize::new(0));
    let bump = |r: &RLock<Cell<u64>>, inside: &AtomicUsize| {
        let g = r.lock();
        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two owners");
        let g2 = r.lock();
        g2.set(g2.get() + 1);
        moss::yield_now();
        inside.fetch_sub(1, Ordering::SeqCst);
        drop(g);
    };
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (r, inside) = (r.clone(), inside.clone());
            std::thread::spawn(move || (0..200).for_each(|_| bump(&r, &inside)))
        })
        .collect();
    let (r2, i2) = (r.clone(), inside.clone());
    moss::run_per_core(4, move |_| {
        for _ in 0..10 {
            let (r, inside) = (r2.clone(), i2.clone());
            moss::spawn(move || (0..20).for_each(|_| bump(&r, &inside)));
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(r.lock().get(), 400 + 4 * 10 * 20);
}

// ---------------------------------------------------------------- RwLock

#[test]
fn readers_overlap_and_a_writer_excludes_them() {
    let l = Arc::new(RwLock::new(0));
    let t = Instant::now();
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let l = l.clone();
            moss::spawn(move || {
                let g = l.read();
                moss::sleep(Duration::from_millis(100));
                *g
            })
        })
        .collect();
    let all = moss::join_all(readers);
    assert!(all.into_iter().all(|r| r.unwrap() == 0));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "ten readers held it at the same time"
    );
    let w = l.write();
    assert!(l.try_read().is_none() && l.try_write().is_none());
    assert_eq!(
        l.read_timeout(Duration::from_millis(5)).err(),
        Some(Timeout)
    );
    drop(w);
    assert_eq!(l.reader_count(), 0);
    assert!(!l.is_write_locked());
}

#[test]
fn a_waiting_writer_goes_before_readers_that_came_after_it() {
    let l = Rc::new(RwLock::new(Vec::new()));
    let r0 = l.read(); // the root reads
    let w = {
        let l = l.clone();
        moss::spawn(move || l.write().push("writer"))
    };
    util::until_parked(w.id());
    assert!(
        l.try_read().is_none(),
        "a writer waits: readers queue behind it"
    );
    let late = {
        let l = l.clone();
        moss::spawn(move || l.read().clone())
    };
    util::until_parked(late.id());
    drop(r0); // the writer gets it first
    w.join().unwrap();
    assert_eq!(late.join().unwrap(), ["writer"]);
}

#[test]
fn a_writer_that_gives_up_lets_the_readers_behind_it_in() {
    let l = Rc::new(RwLock::new(1));
    let r0 = l.read();
    let (l1, l2) = (l.clone(), l.clone());
    let w = moss::spawn(move || l1.write_timeout(Duration::from_millis(30)).map(|_| ()));
    util::until_parked(w.id());
    let reader = moss::spawn(move || *l2.read()); // queued behind the writer
    util::until_parked(reader.id());
    assert_eq!(w.join().unwrap(), Err(Timeout));
    // The first reader still holds it; the queued one must get in anyway.
    assert_eq!(
        reader
            .join_timeout(Duration::from_secs(5))
            .ok()
            .map(|r| r.unwrap()),
        Some(1)
    );
    drop(r0);
    // Same with a kill instead of a timeout.
    let r0 = l.read();
    let (l1, l2) = (l.clone(), l.clone());
    let w = moss::spawn(move || drop(l1.write()));
    util::until_parked(w.id());
    let reader = moss::spawn(move || *l2.read());
    util::until_parked(reader.id());
    w.kill();
    assert_eq!(reader.join().unwrap(), 1);
    drop(r0);
    assert!(l.try_write().is_some());
}

#[test]
fn a_handed_rwlock_is_passed_on_by_a_killed_waiter() {
    let l = Rc::new(RwLock::new(0));
    let g = l.write();
    let spawn_writer = || {
        let l = l.clone();
        moss::spawn(move || *l.write() += 1)
    };
    let spawn_reader = || {
        let l = l.clone();
        moss::spawn(move || *l.read())
    };
    let w1 = spawn_writer();
    let w2 = spawn_writer();
    util::until_parked(w1.id());
    util::until_parked(w2.id());
    drop(g); // handed to w1
    w1.kill();
    assert!(w1.join().unwrap_err().is_killed());
    w2.join().unwrap(); // w1 passed it on
    assert_eq!(*l.read(), 1);
    // Readers handed the lock, one killed: the writer after them gets it.
    let g = l.write();
    let r1 = spawn_reader();
    let r2 = spawn_reader();
    util::until_parked(r1.id());
    util::until_parked(r2.id());
    let w3 = spawn_writer();
    util::until_parked(w3.id());
    drop(g); // the writer w3 is preferred
    w3.join().unwrap();
    assert_eq!(r1.join().unwrap(), 2);
    assert_eq!(r2.join().unwrap(), 2);
    // A reader handed the lock and killed before it ran releases it.
    let g = l.write();
    let r3 = spawn_reader();
    util::until_parked(r3.id());
    drop(g); // no writer waits: handed to r3
    assert_eq!(l.reader_count(), 1);
    r3.kill();
    assert!(r3.join().unwrap_err().is_killed());
    assert_eq!(l.reader_count(), 0);
    assert!(l.try_write().is_some());
}

#[test]
fn rwlock_counter_across_hubs_and_threads_is_exact() {
    let _wd = util::watchdog("RwLock counter", Duration::from_secs(60));
    let l = Arc::new(RwLock::new((0u64, 0u64)));
    let bad = Arc::new(AtomicUsize::new(0));
    let work = |l: &RwLock<(u64, u64)>, bad: &AtomicUsize, i: u64| {
        if i.is_multiple_of(4) {
            let mut g = l.write();
            g.0 += 1;
            moss::yield_now();
            g.1 += 1;
        } else {
            let g = l.read();
            if g.0 != g.1 {
                bad.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (l, bad) = (l.clone(), bad.clone());
            std::thread::spawn(move || (0..400).for_each(|i| work(&l, &bad, i)))
        })
        .collect();
    let (l2, b2) = (l.clone(), bad.clone());
    moss::run_per_core(3, move |_| {
        for _ in 0..8 {
            let (l, bad) = (l2.clone(), b2.clone());
            moss::spawn(move || {
                for i in 0..100u64 {
                    if i.is_multiple_of(3) {
                        let _ = l.read_timeout(Duration::from_micros(50));
                        let _ = l.write_timeout(Duration::from_micros(50)).map(|mut g| {
                            g.0 += 1;
                            g.1 += 1;
                        });
                    }
                    work(&l, &bad, i);
                }
            });
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(bad.load(Ordering::SeqCst), 0, "a reader saw a half write");
    let g = l.read();
    assert_eq!(g.0, g.1);
    assert!(g.0 >= 2 * 100 + 24 * 25);
    drop(g);
    assert!(l.try_write().is_some());
}

// ---------------------------------------------------------------- Condvar

/// A bounded buffer with the two conditions of Python's `Condition` recipe.
struct Buffer {
    items: Mutex<VecDeque<u32>>,
    not_empty: Condvar,
    not_full: Condvar,
    cap: usize,
}

impl Buffer {
    fn new(cap: usize) -> Buffer {
        Buffer {
            items: Mutex::new(VecDeque::new()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            cap,
        }
    }
    fn put(&self, v: u32) {
        let mut g = self
            .not_full
            .wait_while(self.items.lock(), |q| q.len() >= self.cap);
        g.push_back(v);
        drop(g);
        self.not_empty.notify_one();
    }
    fn get(&self) -> u32 {
        let mut g = self
            .not_empty
            .wait_while(self.items.lock(), |q| q.is_empty());
        let v = g.pop_front().expect("not empty");
        drop(g);
        self.not_full.notify_one();
        v
    }
}

#[test]
fn producer_consumer_with_condvars_between_coroutines_and_threads() {
    let _wd = util::watchdog("Condvar producer/consumer", Duration::from_secs(60));
    let buf = Arc::new(Buffer::new(3));
    // A plain-thread producer, coroutine consumers on two hubs, and a
    // coroutine producer: every item once.
    let b = buf.clone();
    let producer = std::thread::spawn(move || (0..1000).for_each(|i| b.put(i)));
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (b2, g2) = (buf.clone(), got.clone());
    moss::run_per_core(2, move |hub| {
        let b = b2.clone();
        if hub == 0 {
            moss::spawn(move || (1000..1500).for_each(|i| b.put(i)));
        }
        for _ in 0..3 {
            let (b, got) = (b2.clone(), g2.clone());
            moss::spawn(move || {
                for _ in 0..250 {
                    let v = b.get();
                    got.lock().unwrap().push(v);
                }
            });
        }
    });
    producer.join().unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..1500).collect::<Vec<_>>());
    assert!(buf.items.lock().is_empty());
}

#[test]
fn condvar_wait_timeout_and_wait_timeout_while() {
    let m = Mutex::new(0);
    let cv = Condvar::new();
    let t = Instant::now();
    let (g, r) = cv.wait_timeout(m.lock(), Duration::from_millis(20));
    assert!(r.timed_out() && t.elapsed() >= Duration::from_millis(20));
    assert!(m.is_locked());
    drop(g);
    let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_millis(20), |v| *v == 0);
    assert!(r.timed_out());
    drop(g);
    let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_secs(5), |v| *v != 0);
    assert!(!r.timed_out(), "the condition held at once");
    drop(g);
    // Notified from another thread before the deadline.
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = pair.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        *p2.0.lock() = true;
        p2.1.notify_all();
    });
    let (g, r) = pair
        .1
        .wait_timeout_while(pair.0.lock(), Duration::from_secs(10), |v| !*v);
    assert!(*g && !r.timed_out());
    drop(g);
    t.join().unwrap();
}

#[test]
fn a_notification_taken_by_a_killed_waiter_goes_to_the_next() {
    let state = Rc::new((Mutex::new(0), Condvar::new()));
    let waiter = || {
        let s = state.clone();
        moss::spawn(move || {
            let g = s.1.wait_while(s.0.lock(), |v| *v == 0);
            *g
        })
    };
    let (victim, next) = (waiter(), waiter());
    util::until_parked(victim.id());
    util::until_parked(next.id());
    *state.0.lock() = 7;
    state.1.notify_one(); // to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    assert_eq!(
        next.join_timeout(Duration::from_secs(5))
            .ok()
            .map(|r| r.unwrap()),
        Some(7),
        "the notification was passed on"
    );
    // Killed while re-locking after its notification: passed on as well.
    *state.0.lock() = 0;
    let (victim, next) = (waiter(), waiter());
    util::until_parked(victim.id());
    util::until_parked(next.id());
    let g = state.0.lock();
    state.1.notify_one(); // the victim wakes, then waits for the mutex
    moss::yield_now();
    util::until_parked(victim.id());
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    let mut g = g;
    *g = 8;
    drop(g);
    assert_eq!(next.join().unwrap(), 8);
    assert!(!state.0.is_locked());
}

#[test]
fn killed_and_timed_out_condvar_waiters_unwind_without_the_mutex() {
    let state = Rc::new((Mutex::new(0), Condvar::new()));
    let s = state.clone();
    let killed = moss::spawn(move || drop(s.1.wait(s.0.lock())));
    let s = state.clone();
    let timed = moss::spawn(move || {
        moss::timeout(Duration::from_millis(5), || drop(s.1.wait(s.0.lock()))).is_err()
    });
    util::until_parked(killed.id());
    killed.kill();
    assert!(killed.join().unwrap_err().is_killed());
    assert!(timed.join().unwrap());
    assert!(!state.0.is_locked(), "no waiter kept the mutex");
    // Nobody is left on the condvar: a notify is a no-op, a new waiter works.
    state.1.notify_all();
    let s = state.clone();
    let w = moss::spawn(move || *s.1.wait(s.0.lock()));
    util::until_parked(w.id());
    *state.0.lock() = 3;
    state.1.notify_one();
    assert_eq!(w.join().unwrap(), 3);
}

// ---------------------------------------------------------- during unwinds

/// Runs `f` from the destructor of a value owned by a coroutine that is
/// then killed: the kill is delivered once, so the destructor's waits block
/// normally until `release` (run on a plain thread after `delay`) lets them
/// through.
fn blocking_destructor_of_a_killed_coroutine(
    f: impl FnOnce() + 'static,
    release: impl FnOnce() + Send + 'static,
) {
    struct OnDrop<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for OnDrop<F> {
        fn drop(&mut self) {
            (self.0.take().unwrap())();
        }
    }
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let victim = moss::spawn(move || {
        let _guard = OnDrop(Some(move || {
            f();
            d.set(true);
        }));
        moss::sleep(Duration::from_secs(60));
    });
    util::until_parked(victim.id());
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        release();
    });
    victim.kill(); // returns once the destructor got through
    assert!(victim.join().unwrap_err().is_killed());
    assert!(done.get(), "the destructor finished its blocking calls");
    releaser.join().unwrap();
}

#[test]
fn destructors_of_killed_coroutines_may_wait_on_each_primitive() {
    let _wd = util::watchdog("blocking destructors", Duration::from_secs(60));
    // RwLock: write behind a reader of another thread.
    let l = Arc::new(RwLock::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let l2 = l.clone();
    let reader = std::thread::spawn(move || {
        let _r = l2.read();
        rx.recv().unwrap();
    });
    while l.reader_count() == 0 {
        std::thread::yield_now();
    }
    let l3 = l.clone();
    blocking_destructor_of_a_killed_coroutine(
        move || *l3.write() += 1,
        move || tx.send(()).unwrap(),
    );
    reader.join().unwrap();
    assert_eq!(*l.read(), 1);
    // RLock held by a plain thread.
    let r = Arc::new(RLock::new(Cell::new(0)));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let r2 = r.clone();
    let holder = std::thread::spawn(move || {
        let _g = r2.lock();
        rx.recv().unwrap();
    });
    while !r.is_locked() {
        std::thread::yield_now();
    }
    let r3 = r.clone();
    blocking_destructor_of_a_killed_coroutine(
        move || {
            let g = r3.lock();
            g.set(g.get() + 1);
        },
        move || tx.send(()).unwrap(),
    );
    holder.join().unwrap();
    assert_eq!(r.lock().get(), 1);
    // Condvar: waits for a notification from another thread.
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let (p1, p2) = (pair.clone(), pair.clone());
    blocking_destructor_of_a_killed_coroutine(
        move || drop(p1.1.wait_while(p1.0.lock(), |ready| !*ready)),
        move || {
            *p2.0.lock() = true;
            p2.1.notify_all();
        },
    );
    // Barrier: the destructor is the second party.
    let b = Arc::new(moss::sync::Barrier::new(2));
    let (b1, b2) = (b.clone(), b.clone());
    blocking_destructor_of_a_killed_coroutine(
        move || {
            b1.wait();
        },
        move || {
            b2.wait();
        },
    );
    // OnceCell: waits for another thread's initializer.
    let cell = Arc::new(moss::sync::OnceCell::new());
    let (c1, c2) = (cell.clone(), cell.clone());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let initializer = std::thread::spawn(move || {
        c2.get_or_init(|| {
            started_tx.send(()).unwrap();
            rx.recv().unwrap();
            5
        });
    });
    started.recv().unwrap(); // the initializer runs: the destructor must wait
    blocking_destructor_of_a_killed_coroutine(
        move || assert_eq!(*c1.get_or_init(|| 6), 5),
        move || tx.send(()).unwrap(),
    );
    initializer.join().unwrap();
}
