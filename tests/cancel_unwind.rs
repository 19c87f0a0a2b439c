//! A cancellation that arrives while the coroutine is already unwinding is
//! never delivered as a second unwind (that aborts the process: "panic in a
//! destructor during cleanup"). Calls that can fail (sleep, timed waits, I/O)
//! end early; calls that cannot fail keep waiting. Each case runs in a child
//! process, since the failure mode is an abort.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::sync::{Event, Queue};

mod util;

/// A value whose destructor blocks on a moss call (a `BufWriter<TcpStream>`
/// flushing, say): `entered` is set when the destructor starts, `took` gets
/// how long its `sleep` lasted.
struct SlowDrop {
    sleep: Duration,
    entered: Rc<Cell<bool>>,
    took: Rc<Cell<Option<Duration>>>,
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        self.entered.set(true);
        let t = Instant::now();
        moss::sleep(self.sleep);
        self.took.set(Some(t.elapsed()));
    }
}

/// A coroutine whose 10 ms timeout fires while it sleeps holding `d`: its
/// unwind runs `d`'s destructor.
fn unwinding_from_a_timeout<D: 'static>(d: D) -> moss::JoinHandle<Result<(), moss::Elapsed>> {
    moss::spawn(move || {
        moss::timeout(Duration::from_millis(10), move || {
            let _d = d;
            moss::sleep(Duration::from_secs(3600));
        })
    })
}

type Flag = Rc<Cell<bool>>;
type Took = Rc<Cell<Option<Duration>>>;

fn slow_drop(sleep: Duration) -> (SlowDrop, Flag, Took) {
    let entered = Rc::new(Cell::new(false));
    let took = Rc::new(Cell::new(None));
    let d = SlowDrop {
        sleep,
        entered: entered.clone(),
        took: took.clone(),
    };
    (d, entered, took)
}

#[test]
fn kill_during_a_timeout_unwind_ends_the_destructors_sleep_early() {
    const CASE: &str = "kill_during_a_timeout_unwind_ends_the_destructors_sleep_early";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let (d, entered, took) = slow_drop(Duration::from_secs(30));
    let h = unwinding_from_a_timeout(d);
    util::until("the destructor runs", Duration::from_secs(20), || {
        entered.get()
    });
    let t = Instant::now();
    h.kill();
    // The destructor's sleep ended early instead of unwinding a second time.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(took.get().unwrap() < Duration::from_secs(10));
    let err = h.join().unwrap_err();
    assert!(err.is_killed(), "{err}");
}

#[test]
fn an_outer_timeout_during_an_inner_timeout_unwind_does_not_abort() {
    const CASE: &str = "an_outer_timeout_during_an_inner_timeout_unwind_does_not_abort";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let (d, entered, took) = slow_drop(Duration::from_secs(30));
    let t = Instant::now();
    let r = moss::spawn(move || {
        moss::timeout(Duration::from_millis(200), move || {
            let inner = moss::timeout(Duration::from_millis(10), move || {
                let _d = d;
                moss::sleep(Duration::from_secs(3600));
            });
            assert!(inner.is_err(), "the inner timeout fired");
            // The outer one fired during the inner unwind: it is delivered
            // here, at the next blocking point, as an unwind.
            moss::sleep(Duration::from_secs(3600));
            unreachable!("the outer timeout unwinds this sleep");
        })
    })
    .join()
    .unwrap();
    assert!(r.is_err(), "the outer timeout reports Elapsed");
    assert!(entered.get());
    assert!(took.get().unwrap() < Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn kill_during_a_panic_unwind_does_not_abort() {
    const CASE: &str = "kill_during_a_panic_unwind_does_not_abort";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let (d, entered, took) = slow_drop(Duration::from_secs(30));
    let h = moss::spawn(move || {
        let _d = d;
        moss::yield_now();
        panic!("boom");
    });
    util::until("the destructor runs", Duration::from_secs(20), || {
        entered.get()
    });
    h.kill();
    let err = h.join().unwrap_err();
    // The panic is what ended it; the kill arrived during its unwind.
    assert!(err.is_panic(), "{err}");
    assert!(err.to_string().contains("boom"));
    assert!(took.get().unwrap() < Duration::from_secs(10));
}

#[test]
fn kill_during_an_unwind_keeps_an_infallible_wait_waiting() {
    const CASE: &str = "kill_during_an_unwind_keeps_an_infallible_wait_waiting";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    // A destructor that cannot fail: it waits for an item.
    struct Drain(Arc<Queue<u32>>, Rc<Cell<Option<u32>>>, Rc<Cell<bool>>);
    impl Drop for Drain {
        fn drop(&mut self) {
            self.2.set(true);
            self.1.set(Some(self.0.get()));
        }
    }
    let q = Arc::new(Queue::unbounded());
    let got = Rc::new(Cell::new(None));
    let entered = Rc::new(Cell::new(false));
    let d = Drain(q.clone(), got.clone(), entered.clone());
    let h = unwinding_from_a_timeout(d);
    util::until("the destructor waits", Duration::from_secs(20), || {
        entered.get()
    });
    // kill() waits for the death, which needs the item: another coroutine
    // puts it after the kill was requested.
    let q2 = q.clone();
    let putter = moss::spawn(move || {
        moss::sleep(Duration::from_millis(50));
        q2.put(7);
    });
    h.kill();
    putter.join().unwrap();
    assert_eq!(got.get(), Some(7), "the wait kept waiting and got its item");
    assert!(h.join().unwrap_err().is_killed());
}

#[test]
fn a_timed_wait_during_an_unwind_times_out_early_when_killed() {
    const CASE: &str = "a_timed_wait_during_an_unwind_times_out_early_when_killed";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    struct WaitEvent(Arc<Event>, Rc<Cell<Option<bool>>>, Rc<Cell<bool>>);
    impl Drop for WaitEvent {
        fn drop(&mut self) {
            self.2.set(true);
            let set = self.0.wait_timeout(Duration::from_secs(3600));
            self.1.set(Some(set));
        }
    }
    let ev = Arc::new(Event::new());
    let got = Rc::new(Cell::new(None));
    let entered = Rc::new(Cell::new(false));
    let d = WaitEvent(ev.clone(), got.clone(), entered.clone());
    let h = unwinding_from_a_timeout(d);
    util::until("the destructor waits", Duration::from_secs(20), || {
        entered.get()
    });
    let t = Instant::now();
    h.kill();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(got.get(), Some(false), "the timed wait ended early, unset");
    assert!(h.join().unwrap_err().is_killed());
}

/// `b` parked before `a` began to unwind, so `b` is certainly not
/// unwinding: its kill unwinds it at once, while `a` is still suspended
/// mid-unwind. `c` parked while `a` was unwinding: std counts unwinds per
/// thread, so moss cannot tell that `c` is not unwinding too, and c's kill
/// waits for a's unwind to end (never a second unwind), then unwinds c.
#[test]
fn a_kill_while_another_coroutine_unwinds_is_delivered_once_it_is_done() {
    const CASE: &str = "a_kill_while_another_coroutine_unwinds_is_delivered_once_it_is_done";
    if !util::in_child(CASE) {
        return util::passes_in_child(CASE);
    }
    let q: Arc<Queue<u32>> = Arc::new(Queue::unbounded());
    let drops = util::DropCounter::new();
    // `b` waits for an item that never comes (a wait that cannot fail).
    let (q2, token) = (q.clone(), drops.token());
    let b = moss::spawn(move || {
        let _t = token;
        q2.get()
    });
    util::until_parked(b.id());
    // `a` unwinds (its timeout fired) through a destructor that sleeps.
    let (d, entered, took) = slow_drop(Duration::from_millis(300));
    let a = unwinding_from_a_timeout(d);
    util::until("a's destructor runs", Duration::from_secs(20), || {
        entered.get()
    });
    let (q3, token) = (q.clone(), drops.token());
    let c = moss::spawn(move || {
        let _t = token;
        q3.get()
    });
    util::until_parked(c.id());
    b.kill();
    assert!(b.join().unwrap_err().is_killed());
    assert_eq!(drops.drops(), 1, "b's destructors ran");
    assert!(took.get().is_none(), "b unwound while a still unwinds");
    let t = Instant::now();
    c.kill();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(c.join().unwrap_err().is_killed());
    assert_eq!(drops.drops(), 2, "c's destructors ran");
    assert!(took.get().is_some(), "a's destructor finished first");
    assert!(a.join().unwrap().is_err(), "a's timeout reports Elapsed");
    assert_eq!(q.len(), 0);
}
