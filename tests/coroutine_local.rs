//! `moss::coroutine_local!`: one value per coroutine (the root has its own),
//! created lazily, dropped when the coroutine ends however it ends, and
//! sound when destructors, initialisers and greenlets misbehave.

#[path = "../examples/request_log.rs"]
mod request_log;
mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moss::greenlet::{self, Greenlet};
use util::{Counted, DropCounter};

const LIMIT: Duration = Duration::from_secs(30);

moss::coroutine_local! {
    static ID: Cell<u64> = Cell::new(0);
    static LOG: RefCell<Vec<String>> = RefCell::new(Vec::new());
}

#[test]
fn each_coroutine_and_the_root_have_their_own_value() {
    util::on_thread(LIMIT, || {
        ID.set(1);
        let hs: Vec<_> = (2..12)
            .map(|i| {
                moss::spawn(move || {
                    let first = ID.get();
                    ID.set(i);
                    // Interleave with the others: values stay apart.
                    moss::yield_now();
                    LOG.with_borrow_mut(|l| l.push(format!("c{i}")));
                    moss::sleep(Duration::from_millis(5));
                    (first, ID.get(), LOG.with_borrow(|l| l.clone()))
                })
            })
            .collect();
        for (i, r) in (2..12).zip(moss::join_all(hs)) {
            assert_eq!(r.unwrap(), (0, i, vec![format!("c{i}")]));
        }
        assert_eq!(ID.get(), 1, "the root keeps its own value");
        assert!(LOG.with_borrow(Vec::is_empty));
    });
}

#[test]
fn a_thread_without_a_hub_uses_its_root_value_and_gets_no_hub() {
    util::on_thread(LIMIT, || {
        ID.set(9);
        assert_eq!(ID.replace(10), 9);
        assert_eq!(ID.take(), 10);
        assert!(!moss_runtime::park::hub_exists());
    });
}

/// Counts drops in a static (the locals below are statics too).
struct StaticCounted(&'static AtomicUsize);

impl Drop for StaticCounted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

static A_INITS: AtomicUsize = AtomicUsize::new(0);
static A_DROPS: AtomicUsize = AtomicUsize::new(0);

moss::coroutine_local! {
    /// Counts its initialisations and drops (only one test uses it).
    static A: StaticCounted = {
        A_INITS.fetch_add(1, Ordering::SeqCst);
        StaticCounted(&A_DROPS)
    };
}

fn touch_a() {
    A.with(|_| ());
}

#[test]
fn values_are_made_lazily_and_dropped_when_the_coroutine_ends_however_it_ends() {
    let _wd = util::watchdog("lazy init and drops", LIMIT);
    // A thread of its own, joined: its exit (the root's drop) is over
    // when `join` returns.
    std::thread::spawn(|| {
        let inits = || A_INITS.load(Ordering::SeqCst);
        let drops = || A_DROPS.load(Ordering::SeqCst);
        // Never touched: nothing made, nothing dropped.
        moss::spawn(|| 1).join().unwrap();
        assert_eq!((inits(), drops()), (0, 0));
        // Touched twice in one coroutine: made once, dropped once, before
        // join returns.
        moss::spawn(|| {
            touch_a();
            touch_a();
        })
        .join()
        .unwrap();
        assert_eq!((inits(), drops()), (1, 1));
        // A panic.
        let e = moss::spawn(|| {
            touch_a();
            panic!("boom");
        })
        .join()
        .unwrap_err();
        assert!(e.is_panic());
        assert_eq!((inits(), drops()), (2, 2));
        // Killed while parked.
        let h = moss::spawn(|| {
            touch_a();
            moss::sleep(Duration::MAX);
        });
        util::until_parked(h.id());
        assert_eq!((inits(), drops()), (3, 2));
        h.kill();
        assert_eq!(
            (inits(), drops()),
            (3, 3),
            "dropped by the time kill returns"
        );
        assert!(h.join().unwrap_err().is_killed());
        // Killed before it started: never made.
        let h = moss::spawn(touch_a);
        h.kill();
        assert_eq!((inits(), drops()), (3, 3));
        // Timed out inside.
        let h = moss::spawn(|| {
            touch_a();
            moss::timeout(Duration::from_millis(5), || moss::sleep(Duration::MAX))
        });
        assert!(h.join().unwrap().is_err());
        assert_eq!((inits(), drops()), (4, 4));
        // Detached (handle dropped first).
        drop(moss::spawn(|| {
            touch_a();
            moss::sleep(Duration::from_millis(5));
        }));
        util::until("the detached coroutine's drop", LIMIT, || drops() == 5);
        assert_eq!(inits(), 5);
        // Many coroutines at once, the root among them.
        touch_a();
        let hs: Vec<_> = (0..200)
            .map(|_| {
                moss::spawn(|| {
                    touch_a();
                    moss::yield_now();
                    touch_a();
                })
            })
            .collect();
        moss::join_all(hs);
        assert_eq!((inits(), drops()), (206, 205), "the root's value lives on");
    })
    .join()
    .unwrap();
    // The thread's exit dropped the root's value.
    assert_eq!(A_DROPS.load(Ordering::SeqCst), 206);
}

thread_local! {
    static INIT_GATE: RefCell<Option<Arc<moss::sync::Event>>> = const { RefCell::new(None) };
}

moss::coroutine_local! {
    /// An initialiser that blocks until the gate opens.
    static SLOW: Rc<u32> = {
        let gate = INIT_GATE.with(|g| g.borrow().clone());
        if let Some(g) = gate {
            g.wait();
        }
        Rc::new(5)
    };
}

#[test]
fn kill_and_timeout_while_an_initialiser_blocks() {
    util::on_thread(LIMIT, || {
        let gate = Arc::new(moss::sync::Event::new());
        INIT_GATE.with(|g| *g.borrow_mut() = Some(gate.clone()));
        let drops = DropCounter::new();
        let d = drops.clone();
        // Killed inside the initialiser: the unwind passes through `with`,
        // nothing is stored, and the locals made before are dropped.
        let h = moss::spawn(move || {
            ID.set(3);
            let _keep = d.token();
            SLOW.with(|v| **v)
        });
        util::until_parked(h.id());
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        assert_eq!(drops.drops(), 1);
        // Timed out inside the initialiser: `timeout` reports it, and the
        // next access initialises again.
        let h = moss::spawn(|| {
            let r = moss::timeout(Duration::from_millis(10), || SLOW.with(|v| **v));
            INIT_GATE.with(|g| g.borrow().clone()).unwrap().set();
            let stored = SLOW.with(Rc::as_ptr) == SLOW.with(Rc::as_ptr);
            (r.is_err(), SLOW.with(|v| **v), stored)
        });
        assert_eq!(h.join().unwrap(), (true, 5, true));
    });
}

moss::coroutine_local! {
    static FLAKY: Cell<u32> = {
        if FLAKY_FAILS.with(|f| f.replace(f.get().saturating_sub(1))) > 0 {
            panic!("initialiser failed");
        }
        Cell::new(77)
    };
    static NESTED: Counted = {
        // Initialises itself from inside its own initialiser.
        let inner_seen = NESTED_DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        if inner_seen == 1 {
            NESTED.with(|_| ());
        }
        NESTED_DROPS.with(|c| c.token())
    };
}

thread_local! {
    static FLAKY_FAILS: Cell<u32> = const { Cell::new(0) };
    static NESTED_DEPTH: Cell<u32> = const { Cell::new(0) };
    static NESTED_DROPS: DropCounter = DropCounter::new();
}

#[test]
fn a_panicking_initialiser_stores_nothing_and_a_nested_one_wins() {
    util::on_thread(LIMIT, || {
        FLAKY_FAILS.with(|f| f.set(2));
        let h = moss::spawn(|| {
            let r1 = std::panic::catch_unwind(|| FLAKY.get());
            let r2 = std::panic::catch_unwind(|| FLAKY.get());
            (r1.is_err(), r2.is_err(), FLAKY.get())
        });
        assert_eq!(h.join().unwrap(), (true, true, 77));

        let drops = NESTED_DROPS.with(|c| c.clone());
        moss::spawn(move || {
            NESTED.with(|_| ());
            // The inner value was stored; the outer one is dropped at once.
            assert_eq!(drops.drops(), 1);
            assert_eq!(NESTED_DEPTH.with(Cell::get), 2);
        })
        .join()
        .unwrap();
        assert_eq!(NESTED_DROPS.with(|c| c.drops()), 2);
    });
}

/// A value whose destructor reports what it sees of other locals.
struct Witness {
    name: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
    /// Sleep in the destructor (it runs in the coroutine: it may block).
    block: bool,
}

impl Drop for Witness {
    fn drop(&mut self) {
        if self.block {
            moss::sleep(Duration::from_millis(20));
        }
        let id = ID.get();
        let log = LOG.with_borrow(|l| l.len());
        self.seen
            .lock()
            .unwrap()
            .push(format!("{} saw id {id} log {log}", self.name));
    }
}

moss::coroutine_local! {
    static WITNESS: RefCell<Option<Witness>> = RefCell::new(None);
}

#[test]
fn destructors_see_the_locals_not_dropped_yet_and_may_block() {
    util::on_thread(LIMIT, || {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        let ticker = moss::spawn(move || {
            loop {
                moss::sleep(Duration::from_millis(1));
                t.set(t.get() + 1);
            }
        });
        let h = moss::spawn(move || {
            // Made in this order: ID, WITNESS, LOG; dropped newest first.
            ID.set(5);
            WITNESS.set(Some(Witness {
                name: "witness",
                seen: s,
                block: true,
            }));
            LOG.with_borrow_mut(|l| l.push("x".into()));
            "done"
        });
        assert_eq!(h.join().unwrap(), "done");
        // LOG was gone when the witness ran: it got a fresh, empty LOG;
        // ID was still there. The witness slept, and the hub ran meanwhile.
        assert_eq!(*seen.lock().unwrap(), ["witness saw id 5 log 0"]);
        assert!(ticks.get() > 0, "the destructor's sleep blocked the hub");
        ticker.kill();
    });
}

struct PanicsOnDrop {
    _count: Counted,
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("destructor boom");
    }
}

moss::coroutine_local! {
    static BOMB: RefCell<Option<PanicsOnDrop>> = RefCell::new(None);
    static KEEP: RefCell<Option<Counted>> = RefCell::new(None);
}

#[test]
fn a_panicking_destructor_is_reported_by_join_and_the_others_still_drop() {
    util::on_thread(LIMIT, || {
        let drops = DropCounter::new();
        let (d1, d2) = (drops.clone(), drops.clone());
        let h = moss::spawn(move || {
            KEEP.set(Some(d1.token()));
            BOMB.set(Some(PanicsOnDrop { _count: d2.token() }));
            7
        });
        let e = h.join().unwrap_err();
        assert!(e.is_panic(), "{e}");
        assert!(e.to_string().contains("destructor boom"), "{e}");
        assert_eq!(drops.drops(), 2);
        // A body that failed first keeps its own error.
        let (d1, d2) = (drops.clone(), drops.clone());
        let h = moss::spawn(move || -> u32 {
            KEEP.set(Some(d1.token()));
            BOMB.set(Some(PanicsOnDrop { _count: d2.token() }));
            panic!("body boom");
        });
        let e = h.join().unwrap_err();
        assert!(e.to_string().contains("body boom"), "{e}");
        assert_eq!(drops.drops(), 4);
    });
}

#[test]
fn a_kill_during_the_teardown_unwinds_one_destructor_and_the_rest_still_drop() {
    util::on_thread(LIMIT, || {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let drops = DropCounter::new();
        let (s, d) = (seen.clone(), drops.clone());
        let h = Rc::new(moss::spawn(move || {
            KEEP.set(Some(d.token()));
            WITNESS.set(Some(Witness {
                name: "slow",
                seen: s,
                block: true,
            }));
        }));
        // Wait until the teardown parks in the witness's sleep, then kill:
        // the sleep unwinds, the witness's tail is skipped, KEEP still drops.
        util::until_parked(h.id());
        h.kill();
        assert!(Rc::try_unwrap(h).unwrap().join().unwrap_err().is_killed());
        assert_eq!(drops.drops(), 1);
        assert!(seen.lock().unwrap().is_empty());
    });
}

#[test]
fn a_local_may_hold_join_handles_even_of_coroutines_that_hold_its_own() {
    moss::coroutine_local! {
        static PEER: RefCell<Option<moss::JoinHandle<Counted>>> = RefCell::new(None);
    }
    util::on_thread(LIMIT, || {
        let drops = DropCounter::new();
        let slot: Rc<RefCell<Option<moss::JoinHandle<Counted>>>> = Rc::default();
        let handed = Rc::new(moss::sync::Event::new());
        let (d1, d2, s1, s2, ev) = (
            drops.clone(),
            drops.clone(),
            slot.clone(),
            slot.clone(),
            handed.clone(),
        );
        // a keeps b's handle and b keeps a's: a cycle through two control
        // blocks that the teardowns break.
        let a = moss::spawn(move || {
            PEER.set(s1.borrow_mut().take());
            d1.token()
        });
        let b = moss::spawn(move || {
            ev.wait();
            PEER.set(s2.borrow_mut().take());
            d2.token()
        });
        *slot.borrow_mut() = Some(b);
        util::until("a to take b's handle", LIMIT, || slot.borrow().is_none());
        *slot.borrow_mut() = Some(a);
        handed.set();
        util::until("both results to drop", LIMIT, || drops.drops() == 2);
    });
}

#[test]
fn a_greenlet_sees_its_coroutines_values_and_keeps_a_borrowed_one_alive() {
    util::on_thread(LIMIT, || {
        let drops = DropCounter::new();
        let d = drops.clone();
        let out = Rc::new(Cell::new(0u64));
        let o = out.clone();
        let g: Rc<RefCell<Option<Greenlet<u64>>>> = Rc::default();
        let g2 = g.clone();
        let h = moss::spawn(move || {
            ID.set(41);
            KEEP.set(Some(d.token()));
            let gl = Greenlet::new(move |_| {
                let root = greenlet::current::<u64>().parent().unwrap();
                // Suspended inside `with`, holding this coroutine's value.
                KEEP.with(|k| {
                    let v = ID.get();
                    root.switch(v);
                    // Resumed after the coroutine ended: the value it
                    // borrowed is still alive.
                    assert!(k.borrow().is_some());
                    o.set(v + 1);
                });
                0
            });
            let seen = gl.switch(0);
            *g2.borrow_mut() = Some(gl);
            seen
        });
        assert_eq!(h.join().unwrap(), 41, "the greenlet saw its coroutine's ID");
        assert_eq!(drops.drops(), 0, "kept alive by the suspended with");
        let gl = g.borrow_mut().take().unwrap();
        gl.switch(0);
        assert!(gl.is_dead());
        assert_eq!(out.get(), 42);
        assert_eq!(drops.drops(), 1);
    });
}

moss::coroutine_local! {
    static SELF_REVIVING: RefCell<Option<Reviver>> = RefCell::new(None);
}

/// Uses its own local from its destructor: after the teardown that makes a
/// temporary, whose destructor makes another, ... until moss stops it.
struct Reviver;

impl Drop for Reviver {
    fn drop(&mut self) {
        SELF_REVIVING.with(|r| {
            r.borrow_mut().replace(Reviver);
        });
    }
}

#[test]
fn a_destructor_that_keeps_reviving_its_local_fails_cleanly() {
    util::on_thread(LIMIT, || {
        let h = moss::spawn(|| SELF_REVIVING.set(Some(Reviver)));
        let e = h.join().unwrap_err();
        assert!(e.is_panic());
        assert!(e.to_string().contains("keeps using its own local"), "{e}");
    });
}

#[test]
fn root_values_drop_at_thread_exit_and_their_destructors_see_the_others() {
    let drops = DropCounter::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (d, s) = (drops.clone(), seen.clone());
    std::thread::spawn(move || {
        // Made in this order, dropped newest first at thread exit.
        KEEP.set(Some(d.token()));
        ID.set(8);
        WITNESS.set(Some(Witness {
            name: "root",
            seen: s,
            block: false,
        }));
    })
    .join()
    .unwrap();
    // The witness saw ID (not dropped yet) and a fresh LOG (never made on
    // that root); KEEP dropped last.
    assert_eq!(*seen.lock().unwrap(), ["root saw id 8 log 0"]);
    assert_eq!(drops.drops(), 1);
}

#[test]
fn a_coroutine_abandoned_at_thread_exit_with_locals_does_not_crash_the_exit() {
    let drops = DropCounter::new();
    let d = drops.clone();
    let _wd = util::watchdog("thread exit with a parked coroutine", LIMIT);
    std::thread::spawn(move || {
        KEEP.set(Some(d.token()));
        let d2 = d.clone();
        let _parked = moss::spawn(move || {
            KEEP.set(Some(d2.token()));
            ID.set(1);
            moss::sleep(Duration::MAX)
        });
        moss::yield_now();
    })
    .join()
    .unwrap();
    // The root's value dropped; the abandoned coroutine's value is dropped
    // or abandoned with it, never touched twice.
    let n = drops.drops();
    assert!(n == 1 || n == 2, "{n} drops");
}

#[test]
fn the_request_log_example_tags_every_line_with_its_own_request() {
    let lines = util::on_thread(LIMIT, || request_log::run(8, 4).unwrap());
    // Each request id names one key, which has exactly its three lines.
    let mut by_id: std::collections::HashMap<u64, Vec<String>> = Default::default();
    for l in &lines {
        let (id, msg) = l
            .strip_prefix("[req ")
            .and_then(|r| r.split_once("] "))
            .unwrap_or_else(|| panic!("untagged line {l:?}"));
        let key = msg.split(':').next().unwrap().to_owned();
        by_id
            .entry(id.trim().parse().unwrap())
            .or_default()
            .push(key);
    }
    assert_eq!(by_id.len(), 32, "{lines:#?}");
    for keys in by_id.values() {
        assert_eq!(keys.len(), 3, "{lines:#?}");
        assert!(keys.iter().all(|k| *k == keys[0]), "{lines:#?}");
    }
    // The requests were served at the same time: some request's lines are
    // not contiguous.
    let ids: Vec<&str> = lines.iter().map(|l| &l[..9]).collect();
    let contiguous = ids.chunks(3).all(|c| c.iter().all(|i| *i == c[0]));
    assert!(!contiguous, "no interleaving: {lines:#?}");
}
