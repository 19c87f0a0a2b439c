//! gevent's Greenlet result API on JoinHandle: link, is_successful,
//! kill_nowait, kill_timeout, and JoinAll (joinall's timeout, raise_error
//! and count).

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::sync::Event;
use moss::{JoinAll, JoinHandle, Joined};

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

#[test]
fn links_run_in_order_with_the_value_before_join_returns() {
    let l = log();
    let h = moss::spawn(|| {
        moss::sleep(Duration::from_millis(5));
        String::from("value")
    });
    for i in 0..3 {
        let l = l.clone();
        h.link(move |r| push(&l, format!("{i}:{}", r.as_ref().unwrap())));
    }
    let l2 = l.clone();
    assert_eq!(h.join().unwrap(), "value");
    push(&l2, "joined");
    assert_eq!(*l.borrow(), ["0:value", "1:value", "2:value", "joined"]);
}

#[test]
fn link_sees_a_panic_and_a_kill() {
    let l = log();
    let bad = moss::Builder::new()
        .name("bad")
        .spawn(|| -> u32 { panic!("kaput") })
        .unwrap();
    let l1 = l.clone();
    bad.link(move |r| {
        let e = r.as_ref().unwrap_err();
        push(&l1, format!("panic:{}:{e}", e.is_panic()));
    });
    let sleeper = moss::spawn(|| moss::sleep(Duration::from_secs(3600)));
    let l2 = l.clone();
    sleeper.link(move |r| {
        push(
            &l2,
            format!("killed:{}", r.as_ref().unwrap_err().is_killed()),
        )
    });
    util::until_parked(sleeper.id()); // `bad` has run and panicked by now
    sleeper.kill();
    let id = bad.id();
    assert!(bad.join().unwrap_err().is_panic());
    assert_eq!(
        *l.borrow(),
        [
            format!("panic:true:coroutine 'bad' (#{id}) panicked: kaput"),
            "killed:true".to_owned(),
        ]
    );
}

#[test]
fn link_sees_a_panic_message() {
    let h = moss::spawn(|| -> u32 { panic!("kaput") });
    let seen = Rc::new(RefCell::new(String::new()));
    let s = seen.clone();
    h.link(move |r| *s.borrow_mut() = r.as_ref().unwrap_err().to_string());
    assert!(h.join().unwrap_err().is_panic());
    assert!(
        seen.borrow().ends_with("panicked: kaput"),
        "{}",
        seen.borrow()
    );
}

#[test]
fn link_on_a_finished_handle_runs_at_once() {
    let h = moss::spawn(|| 5);
    moss::wait();
    assert!(h.is_finished());
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    h.link(move |r| s.set(*r.as_ref().unwrap()));
    assert_eq!(seen.get(), 5, "ran before link returned");
    // The result is still there for join.
    assert_eq!(h.join().unwrap(), 5);
}

#[test]
fn link_of_a_coroutine_killed_before_it_started_runs_in_a_coroutine_of_its_own() {
    let ran = Rc::new(Cell::new(false));
    let r2 = ran.clone();
    let h = moss::spawn(move || r2.set(true));
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    h.link(move |r| {
        *s.borrow_mut() = Some((
            r.as_ref().unwrap_err().is_killed(),
            moss::current().name().map(str::to_owned),
        ))
    });
    h.kill();
    assert!(h.is_finished());
    assert!(h.join().unwrap_err().is_killed());
    moss::wait();
    assert!(!ran.get(), "the body never runs");
    assert_eq!(*seen.borrow(), Some((true, Some("link".to_owned()))));
}

#[test]
fn a_panicking_link_does_not_take_down_the_hub_nor_the_other_links() {
    let l = log();
    let h = moss::spawn(|| 1);
    let l1 = l.clone();
    h.link(move |_| push(&l1, "first"));
    h.link(|_| panic!("link boom"));
    let l3 = l.clone();
    h.link(move |r| push(&l3, format!("third:{}", r.as_ref().unwrap())));
    let other = moss::spawn(|| {
        moss::sleep(Duration::from_millis(5));
        2
    });
    assert_eq!(h.join().unwrap(), 1);
    assert_eq!(other.join().unwrap(), 2);
    assert_eq!(*l.borrow(), ["first", "third:1"]);
    // On a finished handle the panic is caught as well.
    let done = moss::spawn(|| 3);
    moss::wait();
    done.link(|_| panic!("late link boom"));
    assert_eq!(done.join().unwrap(), 3);
}

#[test]
fn a_blocking_link_delays_join_and_a_kill_ends_it_without_changing_the_result() {
    let ev = Rc::new(Event::new());
    let h = moss::spawn(|| 9);
    let (e2, l) = (ev.clone(), log());
    let l2 = l.clone();
    h.link(move |_| {
        push(&l2, "link waits");
        e2.wait();
        push(&l2, "link done");
    });
    let t = Instant::now();
    let setter = {
        let ev = ev.clone();
        moss::spawn(move || {
            moss::sleep(Duration::from_millis(50));
            ev.set();
        })
    };
    assert_eq!(h.join().unwrap(), 9);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(*l.borrow(), ["link waits", "link done"]);
    setter.join().unwrap();

    // Now a link that blocks forever, ended by a kill.
    let never = Rc::new(Event::new());
    let h = moss::spawn(|| 10);
    let n2 = never.clone();
    let l3 = l.clone();
    h.link(move |_| {
        n2.wait();
        push(&l3, "not reached");
    });
    let l4 = l.clone();
    h.link(move |_| push(&l4, "next link runs"));
    util::until("the link to block", Duration::from_secs(10), || {
        moss::dump().contains("waiting on")
    });
    assert!(!h.is_finished());
    assert!(h.kill_timeout(Duration::from_secs(10)));
    assert_eq!(h.join().unwrap(), 10, "the body's result stands");
    assert_eq!(l.borrow()[2..], ["next link runs"]);
}

#[test]
fn a_link_can_link_again_and_cannot_join_its_own_coroutine() {
    let slot: Rc<RefCell<Option<JoinHandle<u32>>>> = Rc::new(RefCell::new(None));
    let l = log();
    let h = moss::spawn(|| 4);
    let (s2, l2) = (slot.clone(), l.clone());
    h.link(move |_| {
        let l3 = l2.clone();
        s2.borrow()
            .as_ref()
            .unwrap()
            .link(move |r| push(&l3, format!("nested:{}", r.as_ref().unwrap())));
        // Joining itself from its own link is refused with a panic (caught).
        let me = s2.borrow_mut().take().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || me.join()));
        push(&l2, format!("self join refused:{}", r.is_err()));
    });
    *slot.borrow_mut() = Some(h);
    moss::wait();
    assert_eq!(*l.borrow(), ["self join refused:true", "nested:4"]);
}

#[test]
fn a_dropped_handle_still_runs_its_links() {
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    moss::spawn(|| 8).link(move |r| s.set(*r.as_ref().unwrap()));
    moss::wait();
    assert_eq!(seen.get(), 8);
}

#[test]
fn is_successful_follows_the_result() {
    let ok = moss::spawn(|| 1);
    let bad = moss::spawn(|| -> u32 { panic!("x") });
    let slow = moss::spawn(|| moss::sleep(Duration::from_secs(3600)));
    assert!(!ok.is_successful() && !bad.is_successful(), "not started");
    util::until_parked(slow.id());
    assert!(ok.is_finished() && ok.is_successful());
    assert!(bad.is_finished() && !bad.is_successful());
    assert!(!slow.is_successful(), "still running");
    slow.kill();
    assert!(slow.is_finished() && !slow.is_successful(), "killed");
    let unstarted = moss::spawn(|| 1);
    unstarted.kill();
    assert!(!unstarted.is_successful());
}

/// Blocks its drop (a destructor that waits) until `release` is set.
struct SlowDrop(Rc<Event>, Log);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        push(&self.1, "dropping");
        self.0.wait();
        push(&self.1, "dropped");
    }
}

#[test]
fn kill_nowait_returns_at_once_and_the_kill_still_lands() {
    let (release, l) = (Rc::new(Event::new()), log());
    let (r2, l2) = (release.clone(), l.clone());
    let h = moss::spawn(move || {
        let _d = SlowDrop(r2, l2);
        moss::sleep(Duration::from_secs(3600));
    });
    util::until_parked(h.id());
    h.kill_nowait();
    assert!(!h.is_finished());
    assert!(l.borrow().is_empty(), "kill_nowait did not run the target");
    util::until("the destructor to block", Duration::from_secs(10), || {
        l.borrow().len() == 1
    });
    assert!(!h.is_finished());
    h.kill_nowait(); // a second request changes nothing
    release.set();
    assert!(h.join().unwrap_err().is_killed());
    assert_eq!(*l.borrow(), ["dropping", "dropped"]);
}

#[test]
fn kill_nowait_of_an_unstarted_coroutine_finishes_it_at_once() {
    let c = util::DropCounter::new();
    let t = c.token();
    let h = moss::spawn(move || drop(t));
    h.kill_nowait();
    assert!(h.is_finished());
    assert_eq!(c.drops(), 1, "its closure was dropped");
    assert!(h.join().unwrap_err().is_killed());
    // Finished: nothing happens.
    let done = moss::spawn(|| 1);
    moss::wait();
    done.kill_nowait();
    assert_eq!(done.join().unwrap(), 1);
}

#[test]
fn kill_nowait_of_oneself_lands_at_the_next_blocking_point() {
    let slot: Rc<RefCell<Option<JoinHandle<()>>>> = Rc::new(RefCell::new(None));
    let l = log();
    let (s2, l2) = (slot.clone(), l.clone());
    let h = moss::spawn(move || {
        moss::yield_now(); // the handle is in the slot by now
        s2.borrow().as_ref().unwrap().kill_nowait();
        push(&l2, "still running");
        moss::sleep(Duration::from_millis(1));
        push(&l2, "not reached");
    });
    *slot.borrow_mut() = Some(h);
    moss::wait();
    let h = slot.borrow_mut().take().unwrap();
    assert!(h.join().unwrap_err().is_killed());
    assert_eq!(*l.borrow(), ["still running"]);
}

#[test]
fn kill_timeout_reports_a_target_that_is_slow_to_die() {
    let (release, l) = (Rc::new(Event::new()), log());
    let (r2, l2) = (release.clone(), l.clone());
    let h = moss::spawn(move || {
        let _d = SlowDrop(r2, l2);
        moss::sleep(Duration::from_secs(3600));
    });
    util::until_parked(h.id());
    let t = Instant::now();
    assert!(!h.kill_timeout(Duration::from_millis(50)));
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(!h.is_finished());
    assert!(!h.kill_timeout(Duration::ZERO), "zero polls");
    let r3 = release.clone();
    moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        r3.set();
    });
    assert!(h.kill_timeout(Duration::from_secs(10)));
    assert!(h.is_finished());
    assert!(h.join().unwrap_err().is_killed());
    assert_eq!(*l.borrow(), ["dropping", "dropped"]);
    // Of an unstarted or a finished coroutine: true at once.
    assert!(moss::spawn(|| ()).kill_timeout(Duration::ZERO));
}

#[test]
fn a_caller_killed_inside_kill_timeout_unwinds() {
    let release = Rc::new(Event::new());
    let (r2, l) = (release.clone(), log());
    let target = Rc::new(moss::spawn(move || {
        let _d = SlowDrop(r2, l);
        moss::sleep(Duration::from_secs(3600));
    }));
    util::until_parked(target.id());
    let t2 = target.clone();
    let killer = moss::spawn(move || t2.kill_timeout(Duration::from_secs(3600)));
    util::until_parked(killer.id());
    killer.kill();
    assert!(killer.join().unwrap_err().is_killed());
    assert!(!target.is_finished());
    release.set();
    let target = Rc::try_unwrap(target).unwrap();
    assert!(target.join().unwrap_err().is_killed());
}

fn sleeper(ms: u64, v: u32) -> JoinHandle<u32> {
    moss::spawn(move || {
        moss::sleep(Duration::from_millis(ms));
        v
    })
}

fn failer(ms: u64) -> JoinHandle<u32> {
    moss::spawn(move || {
        moss::sleep(Duration::from_millis(ms));
        panic!("failed after {ms} ms")
    })
}

fn shape(out: &[Joined<u32>]) -> String {
    out.iter()
        .map(|j| match j {
            Joined::Finished(Ok(v)) => v.to_string(),
            Joined::Finished(Err(e)) if e.is_panic() => "panic".into(),
            Joined::Finished(Err(_)) => "killed".into(),
            Joined::Pending(_) => "pending".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn kill_pending(out: Vec<Joined<u32>>) {
    for j in out {
        if let Joined::Pending(h) = j {
            h.kill();
        }
    }
}

#[test]
fn join_all_unchanged_and_join_all_builder_without_options_waits_for_all() {
    let hs = vec![sleeper(20, 1), failer(5), sleeper(1, 3)];
    let out = JoinAll::new(hs).join();
    assert_eq!(shape(&out), "1 panic 3");
    let hs = vec![sleeper(20, 1), sleeper(1, 2)];
    let v: Vec<u32> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(v, [1, 2]);
    assert!(JoinAll::<u32>::new(Vec::new()).join().is_empty());
}

#[test]
fn join_all_timeout_gives_back_the_unfinished() {
    let t = Instant::now();
    let hs = vec![sleeper(3_600_000, 1), sleeper(1, 2), sleeper(3_600_000, 3)];
    let out = JoinAll::new(hs).timeout(Duration::from_millis(100)).join();
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(100), "{el:?}");
    assert!(el < Duration::from_secs(30), "{el:?}");
    assert_eq!(shape(&out), "pending 2 pending");
    kill_pending(out);
    // Zero: collect what is done, without waiting.
    let done = sleeper(0, 7);
    moss::wait();
    let out = JoinAll::new(vec![done, sleeper(3_600_000, 8)])
        .timeout(Duration::ZERO)
        .join();
    assert_eq!(shape(&out), "7 pending");
    kill_pending(out);
}

#[test]
fn join_all_stop_on_error_returns_at_the_first_failure_in_finishing_order() {
    let _wd = util::watchdog("stop_on_error", Duration::from_secs(60));
    let t = Instant::now();
    // Input order puts the failure last; it finishes second.
    let hs = vec![sleeper(3_600_000, 1), sleeper(1, 2), failer(30)];
    let out = JoinAll::new(hs).stop_on_error().join();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(shape(&out), "pending 2 panic");
    kill_pending(out);
    // A failure that is already there stops at once.
    let bad = failer(0);
    moss::wait();
    let out = JoinAll::new(vec![sleeper(3_600_000, 1), bad])
        .stop_on_error()
        .join();
    assert_eq!(shape(&out), "pending panic");
    kill_pending(out);
    // No failure: waits for all.
    let out = JoinAll::new(vec![sleeper(10, 1), sleeper(1, 2)])
        .stop_on_error()
        .join();
    assert_eq!(shape(&out), "1 2");
    // A kill is an error too.
    let victim = sleeper(3_600_000, 5);
    util::until_parked(victim.id());
    victim.kill_nowait(); // it unwinds when it next runs
    let out = JoinAll::new(vec![sleeper(3_600_000, 4), victim])
        .stop_on_error()
        .join();
    assert_eq!(shape(&out), "pending killed");
    kill_pending(out);
}

#[test]
fn join_all_count_returns_after_n() {
    let hs = vec![
        sleeper(3_600_000, 1),
        sleeper(5, 2),
        sleeper(3_600_000, 3),
        sleeper(1, 4),
    ];
    let out = JoinAll::new(hs).count(2).join();
    assert_eq!(shape(&out), "pending 2 pending 4");
    kill_pending(out);
    let out = JoinAll::new(vec![sleeper(1, 1)]).count(0).join();
    assert_eq!(shape(&out), "pending");
    kill_pending(out);
    let out = JoinAll::new(vec![sleeper(1, 1)]).count(5).join();
    assert_eq!(shape(&out), "1");
}

#[test]
fn join_all_counts_a_coroutine_once_the_links_linked_before_it_ran() {
    let release = Rc::new(Event::new());
    let h = sleeper(1, 1);
    let r2 = release.clone();
    // Linked before JoinAll's own link: JoinAll's note comes after this
    // callback returns; a link linked after it would run after the note.
    let late = sleeper(1, 2);
    let r3 = release.clone();
    let out_of_order = Rc::new(Cell::new(false));
    h.link(move |_| r2.wait());
    let o2 = out_of_order.clone();
    let releaser = moss::spawn(move || {
        moss::sleep(Duration::from_millis(50));
        o2.set(true);
        r3.set();
    });
    let out = JoinAll::new(vec![h, late]).count(2).join();
    assert!(
        out_of_order.get(),
        "returned before the blocking link ended"
    );
    assert_eq!(shape(&out), "1 2");
    releaser.join().unwrap();
}

#[test]
fn join_all_many_with_options_from_a_coroutine() {
    let _wd = util::watchdog("many", Duration::from_secs(120));
    let h = moss::spawn(|| {
        let hs: Vec<_> = (0..10_000u32)
            .map(|i| sleeper(1 + u64::from(i % 50), i))
            .collect();
        let out = JoinAll::new(hs).stop_on_error().count(10_000).join();
        out.into_iter()
            .map(|j| j.into_result().unwrap().unwrap())
            .sum::<u32>()
    });
    assert_eq!(h.join().unwrap(), (0..10_000).sum::<u32>());
}

#[test]
fn a_caller_killed_inside_join_all_unwinds_and_the_coroutines_run_on() {
    let finished = Rc::new(Cell::new(0));
    let f2 = finished.clone();
    let waiter = moss::spawn(move || {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let f = f2.clone();
                moss::spawn(move || {
                    moss::sleep(Duration::from_millis(30));
                    f.set(f.get() + 1);
                })
            })
            .collect();
        JoinAll::new(hs).join();
    });
    util::until_parked(waiter.id());
    waiter.kill();
    assert!(waiter.join().unwrap_err().is_killed());
    moss::wait();
    assert_eq!(finished.get(), 3, "detached, they ran to the end");
}

#[test]
fn link_value_and_link_exception_each_see_only_their_outcome() {
    let _wd = util::watchdog("link_value/link_exception", Duration::from_secs(60));
    let l = log();
    let link_both = |h: &JoinHandle<u32>, tag: &'static str| {
        let (a, b) = (l.clone(), l.clone());
        h.link_value(move |v| push(&a, format!("{tag} value {v}")));
        h.link_exception(move |e| {
            let kind = if e.is_killed() { "killed" } else { "panic" };
            push(&b, format!("{tag} exception {kind}"))
        });
    };
    let ok = moss::spawn(|| 5);
    link_both(&ok, "ok");
    let bad = moss::spawn(|| -> u32 { panic!("bad") });
    link_both(&bad, "bad");
    let slow = moss::spawn(|| {
        moss::sleep(Duration::from_secs(3600));
        1
    });
    link_both(&slow, "slow");
    let unstarted = moss::spawn(|| 2);
    link_both(&unstarted, "unstarted");
    unstarted.kill();
    assert_eq!(ok.join().unwrap(), 5);
    assert!(bad.join().is_err());
    util::until_parked(slow.id());
    slow.kill();
    assert!(slow.join().unwrap_err().is_killed());
    // The unstarted one's links run in a coroutine of their own.
    moss::wait();
    let mut got = l.borrow().clone();
    got.sort();
    assert_eq!(
        got,
        [
            "bad exception panic",
            "ok value 5",
            "slow exception killed",
            "unstarted exception killed"
        ]
    );
    // On a finished handle, the matching one runs at once.
    let done = moss::spawn(|| 9);
    moss::wait();
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    done.link_value(move |v| s.set(*v));
    done.link_exception(|_| unreachable!());
    assert_eq!(seen.get(), 9);
}
