//! `moss::sync::Event` and `moss::sync::AsyncResult`: wake-ups, FIFO order,
//! timeouts, cancellation and cross-thread use.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moss::sync::{AsyncResult, Event, Timeout};

#[test]
fn thousand_waiters_on_one_event_wake_in_order() {
    let ev = Arc::new(Event::new());
    let order = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..1000)
        .map(|i| {
            let ev = ev.clone();
            let order = order.clone();
            moss::spawn(move || {
                ev.wait();
                order.borrow_mut().push(i);
            })
        })
        .collect();
    moss::yield_now(); // every waiter is now queued
    assert!(order.borrow().is_empty());
    assert!(!ev.is_set());
    ev.set();
    for r in moss::join_all(hs) {
        r.unwrap();
    }
    assert_eq!(*order.borrow(), (0..1000).collect::<Vec<_>>());
    // A set event lets later waits through at once, until cleared.
    assert!(ev.wait_timeout(Duration::ZERO));
    ev.clear();
    assert!(!ev.wait_timeout(Duration::ZERO));
}

#[test]
fn wait_timeout_expires_and_other_coroutines_run_meanwhile() {
    let ev = Arc::new(Event::new());
    let e2 = ev.clone();
    let t = Instant::now();
    let waiter = moss::spawn(move || e2.wait_timeout(Duration::from_millis(50)));
    let other = moss::spawn(|| {
        moss::sleep(Duration::from_millis(10));
        7
    });
    assert_eq!(other.join().unwrap(), 7);
    assert!(!waiter.join().unwrap());
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(50), "{el:?}");
    assert!(el < Duration::from_secs(2), "{el:?}");
}

#[test]
fn event_set_by_another_thread_wakes_a_coroutine_and_the_root() {
    let ev = Arc::new(Event::new());
    let e2 = ev.clone();
    let h = moss::spawn(move || {
        e2.wait();
        "woken"
    });
    let e3 = ev.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        e3.set();
    });
    ev.wait(); // the root runs the hub until the other thread sets it
    assert_eq!(h.join().unwrap(), "woken");
    t.join().unwrap();
}

#[test]
fn plain_threads_wait_on_an_event_set_by_a_coroutine() {
    let ev = Arc::new(Event::new());
    let woken = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ev = ev.clone();
            let woken = woken.clone();
            std::thread::spawn(move || {
                ev.wait();
                woken.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let e2 = ev.clone();
    moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        e2.set();
    })
    .join()
    .unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(woken.load(Ordering::SeqCst), 4);
}

#[test]
fn killed_and_timed_out_waiters_leave_the_event_clean() {
    let ev = Arc::new(Event::new());
    let e2 = ev.clone();
    let killed = moss::spawn(move || e2.wait());
    let e3 = ev.clone();
    let timed = moss::spawn(move || moss::timeout(Duration::from_millis(10), || e3.wait()));
    let e4 = ev.clone();
    let survivor = moss::spawn(move || {
        e4.wait();
        1
    });
    moss::yield_now();
    killed.kill();
    assert!(killed.join().unwrap_err().is_killed());
    assert!(timed.join().unwrap().is_err());
    ev.set();
    assert_eq!(survivor.join().unwrap(), 1);
}

#[test]
fn async_result_set_from_another_thread_wakes_coroutines() {
    let r = AsyncResult::new();
    let hs: Vec<_> = (0..10)
        .map(|i| {
            let r = r.clone();
            moss::spawn(move || r.get() + i)
        })
        .collect();
    let setter = r.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        setter.set(100u32);
    });
    let got: Vec<u32> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(got, (100..110).collect::<Vec<_>>());
    assert!(r.ready() && r.successful());
    assert_eq!(r.try_get(), Some(100));
    t.join().unwrap();
}

#[test]
fn async_result_timeouts_and_take() {
    let r = AsyncResult::<String>::new();
    assert_eq!(r.get_timeout(Duration::ZERO), Err(Timeout));
    assert_eq!(r.take_timeout(Duration::from_millis(5)), Err(Timeout));
    assert!(!r.wait_timeout(Duration::from_millis(5)));
    assert_eq!(Timeout.to_string(), "timed out waiting");
    r.set("a".to_owned());
    assert!(r.wait_timeout(Duration::ZERO));
    assert_eq!(r.take(), "a");
    assert!(!r.ready());
    r.set("b".to_owned());
    assert_eq!(r.get(), "b");
    assert_eq!(r.get(), "b");
}

#[test]
fn async_result_reraises_a_panic_in_every_getter() {
    let r = AsyncResult::<u32>::new();
    let r2 = r.clone();
    let worker = std::thread::spawn(move || {
        let p = std::panic::catch_unwind(|| -> u32 {
            std::panic::panic_any(String::from("bad input"))
        })
        .unwrap_err();
        r2.set_panic(p);
    });
    let getters: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            moss::spawn(move || r.get())
        })
        .collect();
    worker.join().unwrap();
    for g in getters {
        let err = g.join().unwrap_err();
        assert!(err.is_panic());
        assert_eq!(
            err.into_panic()
                .downcast_ref::<String>()
                .map(String::as_str),
            Some("bad input")
        );
    }
    assert!(r.ready() && !r.successful());
}

#[test]
fn a_killed_getter_does_not_disturb_the_others() {
    let r = AsyncResult::new();
    let r1 = r.clone();
    let victim = moss::spawn(move || r1.get());
    let r2 = r.clone();
    let other = moss::spawn(move || r2.get());
    moss::yield_now();
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    r.set(5);
    assert_eq!(other.join().unwrap(), 5);
}
