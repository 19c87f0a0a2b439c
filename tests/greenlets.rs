//! Greenlets: strict switch traces, parent hand-back, throw, panics.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use std::time::{Duration, Instant};

use moss::greenlet::{self, Greenlet};

mod util;

#[test]
fn ping_pong_trace_is_strict() {
    let trace = Rc::new(RefCell::new(Vec::<String>::new()));
    let t1 = trace.clone();
    let t2 = trace.clone();
    // Two greenlets that switch to each other, as in the notes' test1/test2.
    let g2: Rc<RefCell<Option<Greenlet<u32>>>> = Rc::default();
    let g2c = g2.clone();
    let g1 = Greenlet::new(move |v: u32| {
        t1.borrow_mut().push(format!("g1 got {v}"));
        let other = g2c.borrow().clone().unwrap();
        let v = other.switch(v + 1);
        t1.borrow_mut().push(format!("g1 got {v}"));
        let v = other.switch(v + 1);
        t1.borrow_mut().push(format!("g1 got {v}"));
        v * 10
    });
    let g1c = g1.clone();
    *g2.borrow_mut() = Some(Greenlet::new(move |v: u32| {
        t2.borrow_mut().push(format!("g2 got {v}"));
        let v = g1c.switch(v + 1);
        t2.borrow_mut().push(format!("g2 got {v}"));
        g1c.switch(v + 1)
    }));
    let result = g1.switch(1);
    assert_eq!(
        trace.borrow().join(", "),
        "g1 got 1, g2 got 2, g1 got 3, g2 got 4, g1 got 5"
    );
    // g1 finished: its value went to its parent, the root.
    assert_eq!(result, 50);
    assert!(g1.is_dead());
    assert!(!g2.borrow().as_ref().unwrap().is_dead());
}

#[test]
fn child_return_goes_to_parent() {
    let outer = Greenlet::new(|v: i64| {
        let inner = Greenlet::new(|v: i64| v * 2);
        assert!(inner.parent().is_some());
        // inner's result comes back to us (its parent), not to the root.
        let doubled = inner.switch(v);
        doubled + 1
    });
    assert_eq!(outer.switch(20), 41);
    assert!(greenlet::current::<i64>().parent().is_none());
}

struct Flag(Rc<Cell<bool>>);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn throw_unwinds_a_suspended_greenlet() {
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let g = Greenlet::new(move |_: u8| {
        let _f = Flag(d);
        let root = greenlet::current::<u8>().parent().unwrap();
        root.switch(1);
        unreachable!("thrown before it is resumed again")
    });
    assert_eq!(g.switch(0), 1);
    assert!(!dropped.get());
    g.throw();
    assert!(dropped.get());
    assert!(g.is_dead());
    g.throw(); // dead: no-op
}

#[test]
fn throw_before_start_never_runs() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let g = Greenlet::new(move |v: u8| {
        r.set(true);
        v
    });
    g.throw();
    assert!(g.is_dead() && !ran.get());
}

#[test]
fn panic_surfaces_in_root_switch() {
    let g = Greenlet::new(|_: u8| -> u8 { panic!("inside greenlet") });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch(0)));
    let msg = r.unwrap_err().downcast::<&str>().unwrap();
    assert_eq!(*msg, "inside greenlet");
    assert!(g.is_dead());
    // The family is usable afterwards.
    assert_eq!(Greenlet::new(|v: u8| v + 1).switch(1), 2);
}

#[test]
fn greenlets_in_a_coroutine() {
    let h = moss::spawn(|| {
        let g = Greenlet::new(|v: u16| v + 1);
        g.switch(41)
    });
    assert_eq!(h.join().unwrap(), 42);
}

#[test]
fn blocking_in_greenlet_driven_by_coroutine_is_a_clear_error() {
    let h = moss::spawn(|| {
        let g = Greenlet::new(|v: u32| {
            moss::sleep(std::time::Duration::from_millis(1));
            v
        });
        g.switch(1)
    });
    let e = h.join().unwrap_err();
    assert!(e.to_string().contains("cannot block on moss calls"), "{e}");
}

#[test]
fn greenlet_on_root_may_block_and_run_the_hub() {
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        for _ in 0..3 {
            t.set(t.get() + 1);
            moss::yield_now();
        }
    });
    // The ticker needs three hub passes; the sleep is long enough that a
    // loaded machine still fits them in before it ends.
    let g = Greenlet::new(|v: u32| {
        moss::sleep(std::time::Duration::from_millis(100));
        v
    });
    assert_eq!(g.switch(9), 9);
    assert_eq!(ticks.get(), 3);
    ticker.join().unwrap();
}

/// The root runs the hub loop on a greenlet's stack (it blocks inside the
/// greenlet); a coroutine resumed by that loop has greenlets of its own:
/// its `current` is its own root, its greenlets return to it, and the
/// root's state is untouched afterwards (this used to switch with the
/// root greenlet's yielder from the coroutine's stack: SIGSEGV).
#[test]
fn a_coroutine_resumed_under_a_root_greenlet_has_its_own_greenlets() {
    const CASE: &str = "a_coroutine_resumed_under_a_root_greenlet_has_its_own_greenlets";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let root_id = moss::current().id();
    let c = moss::spawn(|| {
        let own_root = greenlet::current::<u32>().parent().is_none();
        let g = Greenlet::new(|v: u32| {
            let root = greenlet::current::<u32>().parent().unwrap();
            root.switch(v + 1)
        });
        (own_root, g.switch(1), moss::current().id())
    });
    let c_id = c.id();
    let outer = Greenlet::new(|v: u32| {
        moss::sleep(Duration::from_millis(50));
        v
    });
    assert_eq!(outer.switch(7), 7);
    let (own_root, got, id_in_c) = c.join().unwrap();
    assert!(own_root, "the coroutine saw the root's running greenlet");
    assert_eq!(got, 2);
    assert_eq!(id_in_c, c_id);
    assert_eq!(moss::current().id(), root_id);
    assert!(greenlet::current::<u32>().parent().is_none());
    let t = Instant::now();
    moss::sleep(Duration::from_millis(30));
    assert!(t.elapsed() >= Duration::from_millis(30));
}

/// A greenlet the root is running (blocked inside it) cannot be switched to
/// or thrown from a coroutine: a clear panic in that coroutine, and the
/// root goes on.
#[test]
fn a_greenlet_running_in_another_context_is_refused() {
    let slot: Rc<RefCell<Option<Greenlet<u32>>>> = Rc::default();
    let s = slot.clone();
    let c = moss::spawn(move || {
        let g = s.borrow().clone().unwrap();
        let switch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch(5)));
        let throw = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.throw()));
        (
            moss_panic_message(switch.unwrap_err()),
            moss_panic_message(throw.unwrap_err()),
        )
    });
    let outer = Greenlet::new(|v: u32| {
        moss::sleep(Duration::from_millis(50));
        v + 1
    });
    *slot.borrow_mut() = Some(outer.clone());
    assert_eq!(outer.switch(1), 2);
    let (switch, throw) = c.join().unwrap();
    assert!(switch.contains("greenlet that is running"), "{switch}");
    assert!(throw.contains("greenlet that is running"), "{throw}");
}

/// A greenlet whose parent is running elsewhere (the root is blocked inside
/// it) is resumed by a coroutine and returns: the return to that parent
/// is refused with a clear panic in the coroutine (it used to switch from
/// the coroutine's stack with the parent's yielder: SIGSEGV).
#[test]
fn a_return_to_a_parent_running_elsewhere_is_refused() {
    const CASE: &str = "a_return_to_a_parent_running_elsewhere_is_refused";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let slot: Rc<RefCell<Option<Greenlet<u32>>>> = Rc::default();
    let s = slot.clone();
    let c = moss::spawn(move || {
        let inner = s.borrow().clone().unwrap();
        inner.switch(10)
    });
    let s = slot.clone();
    let outer = Greenlet::new(move |v: u32| {
        // A child of `outer` that suspends back to it once.
        let inner = Greenlet::new(|v: u32| {
            let parent = greenlet::current::<u32>().parent().unwrap();
            parent.switch(v + 1) + 100
        });
        assert_eq!(inner.switch(v), v + 1);
        *s.borrow_mut() = Some(inner);
        moss::sleep(Duration::from_millis(50));
        v
    });
    assert_eq!(outer.switch(1), 1);
    let e = c.join().unwrap_err();
    assert!(e.is_panic());
    assert!(e.to_string().contains("which is running"), "{e}");
    assert!(slot.borrow().as_ref().unwrap().is_dead());
}

/// A blocking call in a greenlet that a coroutine drives panics before it
/// changes anything: each panic is caught, and the coroutine's own waits
/// afterwards are sound (no stale waiter queued in the primitives, no stale
/// timer or joiner that ends a later wait early). Event/Queue/Mutex waits
/// used to queue a waiter first: the caught panic aborted the process ("a
/// sync waiter was dropped while still queued").
#[test]
fn a_caught_cannot_block_panic_leaves_the_coroutine_sound() {
    const CASE: &str = "a_caught_cannot_block_panic_leaves_the_coroutine_sound";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let _wd = util::watchdog(CASE, Duration::from_secs(30));
    let ev = Rc::new(moss::sync::Event::new());
    let q = Rc::new(moss::sync::Queue::<u32>::unbounded());
    let m = Rc::new(moss::sync::Mutex::new(0u32));
    let guard = m.lock(); // contended: `lock` in the greenlet would wait
    let short = moss::spawn(|| moss::sleep(Duration::from_millis(20)));
    let (e, qq, mm) = (ev.clone(), q.clone(), m.clone());
    let h = moss::spawn(move || {
        let g = Greenlet::new(move |_: u32| {
            let mut short = Some(short);
            let tries: Vec<(&str, Try<'_>)> = vec![
                ("sleep", Box::new(|| moss::sleep(Duration::from_millis(10)))),
                ("event", Box::new(|| e.wait())),
                (
                    "queue",
                    Box::new(|| {
                        qq.get();
                    }),
                ),
                ("mutex", Box::new(|| drop(mm.lock()))),
                ("join", Box::new(|| drop(short.take().unwrap().join()))),
                ("yield", Box::new(moss::yield_now)),
            ];
            let mut refused = 0;
            for (what, f) in tries {
                let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
                let msg = moss_panic_message(p);
                assert!(msg.contains("cannot block on moss calls"), "{what}: {msg}");
                refused += 1;
            }
            refused
        });
        assert_eq!(g.switch(0), 6);
        // Longer than the stale timer (10 ms) or joiner (20 ms) would allow.
        let t = Instant::now();
        moss::sleep(Duration::from_millis(300));
        t.elapsed()
    });
    util::until_parked(h.id());
    // Whatever a stale waiter would take: the event, an item, the lock.
    ev.set();
    q.put(7);
    drop(guard);
    assert_eq!(q.len(), 1, "a stale getter took the item");
    *m.lock() += 1;
    ev.wait();
    let slept = h.join().unwrap();
    assert!(slept >= Duration::from_millis(300), "{slept:?}");
}

/// A blocking call to try.
type Try<'a> = Box<dyn FnOnce() + 'a>;

fn moss_panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    moss::panic_message(&*p).unwrap_or("").to_string()
}

/// The resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Greenlets suspended mid-body whose handles are all dropped are unwound
/// (their destructors run) and their stacks reused: 20,000 of them leave
/// the process about as large as it was (they used to leak, with their
/// stacks: ~400 MB).
#[test]
fn dropped_suspended_greenlets_are_unwound_and_their_stacks_reused() {
    util::isolated(
        "dropped_suspended_greenlets_are_unwound_and_their_stacks_reused",
        Duration::from_secs(120),
        || {
            let drops = util::DropCounter::new();
            let run = |n: usize| {
                for _ in 0..n {
                    let token = drops.token();
                    let g = Greenlet::new(move |v: u32| {
                        let _token = token;
                        // Touch some stack, then suspend for good.
                        std::hint::black_box([v; 1024]);
                        // No handle to itself on its stack while suspended.
                        let root = greenlet::current::<u32>().parent().unwrap();
                        root.switch(v + 1)
                    });
                    assert_eq!(g.switch(1), 2);
                }
            };
            run(100);
            assert_eq!(drops.drops(), 100);
            let before = rss();
            run(20_000);
            assert_eq!(drops.drops(), 20_100);
            let grown = rss().saturating_sub(before);
            assert!(grown < 64 << 20, "grew by {} KiB", grown >> 10);
        },
    );
}

/// The last handle of a suspended greenlet dropped by another greenlet: it
/// is unwound before the drop returns. Dropped by the driver itself (the
/// greenlet gave its only handle away while it ran): unwound before the
/// root's `switch` returns.
#[test]
fn a_suspended_greenlet_is_unwound_wherever_its_last_handle_drops() {
    let log = Rc::new(RefCell::new(Vec::<&str>::new()));
    struct Note(Rc<RefCell<Vec<&'static str>>>, &'static str);
    impl Drop for Note {
        fn drop(&mut self) {
            self.0.borrow_mut().push(self.1);
        }
    }
    // Suspended sibling, dropped by a greenlet.
    let l = log.clone();
    let sibling = Greenlet::new(move |v: u8| {
        let _n = Note(l, "sibling unwound");
        let root = greenlet::current::<u8>().parent().unwrap();
        root.switch(v)
    });
    assert_eq!(sibling.switch(1), 1);
    let l = log.clone();
    let dropper = Greenlet::new(move |v: u8| {
        drop(sibling);
        l.borrow_mut().push("dropped");
        v
    });
    assert_eq!(dropper.switch(2), 2);
    assert_eq!(*log.borrow(), ["sibling unwound", "dropped"]);
    // A greenlet that drops its only handle while it runs, then suspends:
    // the driver drops the last reference.
    log.borrow_mut().clear();
    let slot: Rc<RefCell<Option<Greenlet<u8>>>> = Rc::default();
    let (l, s) = (log.clone(), slot.clone());
    *slot.borrow_mut() = Some(Greenlet::new(move |v: u8| {
        let _n = Note(l, "self-dropped unwound");
        drop(s.borrow_mut().take());
        let root = greenlet::current::<u8>().parent().unwrap();
        root.switch(v)
    }));
    let g = slot.borrow().clone().unwrap();
    let got = {
        let g = g;
        g.switch(3)
    };
    assert_eq!(got, 3);
    assert_eq!(*log.borrow(), ["self-dropped unwound"]);
}

/// Hostile collections: a destructor that switches away while its greenlet
/// is unwound (the greenlet is abandoned, nothing aborts), a collection
/// during the root's own panic unwind, and a coroutine killed while it
/// holds a suspended greenlet (its destructors run, the coroutine reports
/// the kill).
#[test]
fn hostile_collections_do_not_abort() {
    const CASE: &str = "hostile_collections_do_not_abort";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let suspended = |f: Box<dyn FnOnce()>| {
        let g = Greenlet::new(move |v: u8| {
            let root = greenlet::current::<u8>().parent().unwrap();
            let _on_unwind = OnDrop(Some(f));
            root.switch(v)
        });
        assert_eq!(g.switch(1), 1);
        g
    };
    // A destructor that switches to the root while being unwound.
    let g = suspended(Box::new(|| {
        let root = greenlet::current::<u8>().parent().unwrap();
        root.switch(9);
    }));
    drop(g);
    assert_eq!(Greenlet::new(|v: u8| v + 1).switch(1), 2);
    // The root unwinds from a panic while it holds a suspended greenlet.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = suspended(Box::new(move || r.set(true)));
        panic!("the root's own panic");
    }));
    assert!(caught.is_err());
    assert!(ran.get(), "the greenlet was unwound during the panic");
    // A coroutine killed while it holds a suspended greenlet.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = moss::spawn(move || {
        let _g = suspended(Box::new(move || r.set(true)));
        moss::sleep(Duration::from_secs(60));
    });
    util::until_parked(h.id());
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    assert!(ran.get(), "the killed coroutine's greenlet was unwound");
}

/// Runs its closure when dropped.
struct OnDrop(Option<Box<dyn FnOnce()>>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

thread_local! {
    static KEPT: RefCell<Option<Greenlet<u8>>> = const { RefCell::new(None) };
}

/// Thread exit with suspended greenlets: one kept in a thread-local (dropped
/// by its destructor, after the hub may be gone) and one held by a
/// coroutine the exit kills. Both are unwound; nothing aborts.
#[test]
fn suspended_greenlets_at_thread_exit_are_unwound() {
    const CASE: &str = "suspended_greenlets_at_thread_exit_are_unwound";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let drops = util::DropCounter::new();
    let d = drops.clone();
    std::thread::spawn(move || {
        let suspended = |token: util::Counted| {
            let g = Greenlet::new(move |v: u8| {
                let _token = token;
                let root = greenlet::current::<u8>().parent().unwrap();
                root.switch(v)
            });
            assert_eq!(g.switch(1), 1);
            g
        };
        KEPT.with(|k| *k.borrow_mut() = Some(suspended(d.token())));
        let t = d.token();
        moss::spawn(move || {
            let _g = suspended(t);
            moss::sleep(Duration::from_secs(60));
        });
        moss::sleep(Duration::from_millis(10));
    })
    .join()
    .unwrap();
    assert_eq!(drops.drops(), 2);
}
