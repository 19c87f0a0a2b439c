//! Kills and timeouts that meet an unwind in progress: a destructor that
//! kills a coroutine which parked during that same unwind (the kill must
//! not wait for a death that needs the unwind to end first), and timeouts
//! inside destructors. Each case runs in a child process of this test
//! binary (its failure modes are a hang or an abort).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::sync::Queue;

mod util;

/// Kills the coroutine in its slot when dropped (once the slot is filled):
/// a connection's guard that stops its helper.
struct KillHelperOnDrop {
    entered: Rc<Cell<bool>>,
    helper: Rc<RefCell<Option<moss::JoinHandle<u32>>>>,
    killed: Rc<Cell<bool>>,
}

impl Drop for KillHelperOnDrop {
    fn drop(&mut self) {
        self.entered.set(true);
        // A cleanup that blocks (a flush, say): other coroutines run and
        // park meanwhile, while this one is suspended mid-unwind.
        while self.helper.borrow().is_none() {
            moss::sleep(Duration::from_millis(1));
        }
        let h = self.helper.borrow_mut().take().unwrap();
        h.kill();
        self.killed.set(true);
        // The helper is dead, or dies once this unwind is over.
        *self.helper.borrow_mut() = Some(h);
    }
}

/// A coroutine unwinding (killed, or its timeout fired) runs a destructor
/// that kills a helper coroutine, which parked on an untimed queue get
/// while the unwind was already under way. moss cannot tell that the
/// helper is not itself unwinding (std counts unwinds per thread), so the
/// helper's kill is held until no context of the thread unwinds: the
/// killer's `kill` must not wait for that death (the unwind it waits in
/// is what holds it), or both wait forever. The helper dies once the
/// killer's unwind is over.
#[test]
fn a_destructor_kills_a_coroutine_that_parked_during_its_unwind() {
    for by_timeout in [false, true] {
        let case = if by_timeout {
            "a_destructor_kills_a_coroutine_that_parked_during_its_unwind_timeout"
        } else {
            "a_destructor_kills_a_coroutine_that_parked_during_its_unwind_kill"
        };
        let r = util::run_in_child(case, Duration::from_secs(40));
        assert!(
            r.success() && r.stdout.contains("1 passed"),
            "{case}: {r:#?}"
        );
    }
}

fn destructor_kills_helper(by_timeout: bool) {
    let _wd = util::watchdog("destructor kills helper", Duration::from_secs(20));
    let entered = Rc::new(Cell::new(false));
    let helper = Rc::new(RefCell::new(None));
    let killed = Rc::new(Cell::new(false));
    let guard = KillHelperOnDrop {
        entered: entered.clone(),
        helper: helper.clone(),
        killed: killed.clone(),
    };
    let conn = moss::spawn(move || {
        if by_timeout {
            let r = moss::timeout(Duration::from_millis(5), move || {
                let _g = guard;
                moss::sleep(Duration::from_secs(3600))
            });
            assert!(r.is_err(), "the timeout fired");
        } else {
            let _g = guard;
            moss::sleep(Duration::from_secs(3600));
        }
    });
    if !by_timeout {
        util::until_parked(conn.id());
        conn.kill_nowait();
    }
    util::until(
        "the guard's destructor runs",
        Duration::from_secs(10),
        || entered.get(),
    );
    let q: Arc<Queue<u32>> = Arc::new(Queue::unbounded());
    let drops = util::DropCounter::new();
    let (q2, token) = (q.clone(), drops.token());
    let h = moss::spawn(move || {
        let _t = token;
        q2.get()
    });
    util::until_parked(h.id());
    *helper.borrow_mut() = Some(h);
    let t = Instant::now();
    let r = conn.join();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(killed.get(), "the destructor's kill returned");
    if by_timeout {
        r.unwrap();
    } else {
        assert!(r.unwrap_err().is_killed());
    }
    let h = helper.borrow_mut().take().unwrap();
    assert!(h.join().unwrap_err().is_killed(), "the helper was killed");
    assert_eq!(drops.drops(), 1, "the helper's destructors ran");
    assert_eq!(q.len(), 0);
}

#[test]
fn a_destructor_kills_a_coroutine_that_parked_during_its_unwind_kill() {
    if util::in_child("a_destructor_kills_a_coroutine_that_parked_during_its_unwind_kill") {
        destructor_kills_helper(false);
    }
}

#[test]
fn a_destructor_kills_a_coroutine_that_parked_during_its_unwind_timeout() {
    if util::in_child("a_destructor_kills_a_coroutine_that_parked_during_its_unwind_timeout") {
        destructor_kills_helper(true);
    }
}

/// Sleeps in its destructor (a cleanup that blocks): counts its starts
/// and its ends.
struct SlowCleanup {
    started: Rc<Cell<u32>>,
    ended: Rc<Cell<u32>>,
    sleep: Duration,
}

impl Drop for SlowCleanup {
    fn drop(&mut self) {
        self.started.set(self.started.get() + 1);
        moss::sleep(self.sleep);
        self.ended.set(self.ended.get() + 1);
    }
}

fn slow_cleanup() -> (SlowCleanup, Rc<Cell<u32>>, Rc<Cell<u32>>) {
    let (started, ended) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let c = SlowCleanup {
        started: started.clone(),
        ended: ended.clone(),
        sleep: Duration::from_secs(30),
    };
    (c, started, ended)
}

/// Nested timeouts with the same deadline (one unwind, to the outer scope,
/// whose cleanup then runs undisturbed: nothing is pending any more), and
/// with the outer one firing while the inner one's unwind sleeps in a
/// destructor (that sleep ends early), then a kill during such a cleanup:
/// no abort, each cleanup runs once, the outer timeout reports `Elapsed`,
/// the kill ends the coroutine.
#[test]
fn nested_timeouts_and_a_kill_during_the_inner_cleanup() {
    util::isolated(
        "nested_timeouts_and_a_kill_during_the_inner_cleanup",
        Duration::from_secs(40),
        || {
            for (outer, inner, cleanup) in [(30, 30, 50), (40, 10, 30_000), (10, 10, 50)] {
                let (mut c, _, ended) = slow_cleanup();
                c.sleep = Duration::from_millis(cleanup);
                let t = Instant::now();
                let got = moss::timeout(Duration::from_millis(outer), move || {
                    moss::timeout(Duration::from_millis(inner), move || {
                        let _c = c;
                        moss::sleep(Duration::from_secs(3600));
                    })
                });
                assert!(got.is_err(), "({outer}, {inner}): the outer one fired");
                assert_eq!(ended.get(), 1, "({outer}, {inner})");
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "({outer}, {inner}): {:?}",
                    t.elapsed()
                );
            }
            // A kill while the inner timeout's cleanup sleeps.
            let (c, started, ended) = slow_cleanup();
            let h = moss::spawn(move || {
                moss::timeout(Duration::from_secs(3600), move || {
                    moss::timeout(Duration::from_millis(5), move || {
                        let _c = c;
                        moss::sleep(Duration::from_secs(3600));
                    })
                })
            });
            util::until("the cleanup sleeps", Duration::from_secs(10), || {
                started.get() == 1
            });
            let t = Instant::now();
            h.kill();
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
            assert!(h.join().unwrap_err().is_killed());
            assert_eq!(ended.get(), 1);
        },
    );
}
