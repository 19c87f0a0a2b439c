//! `moss::block_on`: runtime-agnostic futures polled on a coroutine's stack,
//! woken through the hub (same hub, other threads, themselves), cancelled by
//! `kill`/`timeout`, panicking, on the root and on plain threads, nested, in
//! greenlets, after fork, and wakers that outlive their `block_on`; and the
//! other direction, async code awaiting a `moss::sync::AsyncResult`.

mod util;

use std::cell::Cell;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use moss::greenlet::Greenlet;
use util::DropCounter;

/// A future that stays pending until its handle says so, counting polls and
/// keeping the latest waker where a test can reach it.
#[derive(Clone, Default)]
struct Gate(Arc<GateInner>);

#[derive(Default)]
struct GateInner {
    open: AtomicBool,
    polls: AtomicUsize,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn open(&self) {
        self.0.open.store(true, Ordering::SeqCst);
        if let Some(w) = self.0.waker.lock().unwrap().take() {
            w.wake();
        }
    }
    fn polls(&self) -> usize {
        self.0.polls.load(Ordering::SeqCst)
    }
    /// The waker of the last poll (a clone; the gate keeps its own).
    fn waker(&self) -> Waker {
        self.0.waker.lock().unwrap().clone().expect("polled")
    }
}

impl Future for Gate {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.polls.fetch_add(1, Ordering::SeqCst);
        *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.0.open.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A future that holds a counted value and never completes.
struct Holding<F>(#[allow(dead_code)] util::Counted, F);

impl<F: Future + Unpin> Future for Holding<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.1).poll(cx)
    }
}

#[test]
fn oneshot_between_coroutines_of_one_hub() {
    let _wd = util::watchdog(
        "oneshot between coroutines of one hub",
        Duration::from_secs(30),
    );
    let (tx, rx) = oneshot::channel::<String>();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        for _ in 0..5 {
            t.set(t.get() + 1);
            moss::yield_now();
        }
    });
    let waiter = moss::spawn(move || moss::block_on(rx).unwrap());
    util::until_parked(waiter.id());
    let sender = moss::spawn(move || tx.send("hello".to_owned()).unwrap());
    assert_eq!(waiter.join().unwrap(), "hello");
    sender.join().unwrap();
    ticker.join().unwrap();
    // The hub kept running the ticker while the waiter was parked.
    assert_eq!(ticks.get(), 5);
}

#[test]
fn async_channel_pipeline_keeps_order() {
    let _wd = util::watchdog(
        "async channel pipeline keeps order",
        Duration::from_secs(30),
    );
    let (tx, rx) = async_channel::bounded::<u32>(4);
    let producer = moss::spawn(move || {
        for i in 0..1000 {
            moss::block_on(tx.send(i)).unwrap();
        }
    });
    let consumer = moss::spawn(move || {
        let mut got = Vec::new();
        while let Ok(v) = moss::block_on(rx.recv()) {
            got.push(v);
        }
        got
    });
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), (0..1000).collect::<Vec<_>>());
}

#[test]
fn wake_from_another_thread() {
    let _wd = util::watchdog("wake_from_another_thread", Duration::from_secs(30));
    let (tx, rx) = oneshot::channel::<u64>();
    let waiter = moss::spawn(move || moss::block_on(rx).unwrap());
    util::until_parked(waiter.id());
    let t = std::thread::spawn(move || tx.send(7).unwrap());
    assert_eq!(waiter.join().unwrap(), 7);
    t.join().unwrap();
}

#[test]
fn many_cross_thread_round_trips_lose_no_wake() {
    // A thread answers each request at once, so its wake often lands while
    // the coroutine is still polling (or about to park).
    let _wd = util::watchdog("cross-thread round trips", Duration::from_secs(60));
    let (req_tx, req_rx) = std::sync::mpsc::channel::<(u32, oneshot::Sender<u32>)>();
    let echo = std::thread::spawn(move || {
        for (v, back) in req_rx {
            back.send(v + 1).unwrap();
        }
    });
    let hs: Vec<_> = (0..4)
        .map(|k| {
            let req_tx = req_tx.clone();
            moss::spawn(move || {
                for i in 0..2000 {
                    let (tx, rx) = oneshot::channel();
                    req_tx.send((k * 10_000 + i, tx)).unwrap();
                    assert_eq!(moss::block_on(rx).unwrap(), k * 10_000 + i + 1);
                }
            })
        })
        .collect();
    drop(req_tx);
    for r in moss::join_all(hs) {
        r.unwrap();
    }
    echo.join().unwrap();
}

/// Wakes itself during each poll until `left` reaches zero; records the
/// ticker's count at every poll.
struct SelfWaking {
    left: u32,
    seen: Vec<u32>,
    ticks: Rc<Cell<u32>>,
}

impl Future for SelfWaking {
    type Output = Vec<u32>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<u32>> {
        let t = self.ticks.get();
        self.seen.push(t);
        if self.left == 0 {
            return Poll::Ready(std::mem::take(&mut self.seen));
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn self_waking_future_is_polled_again_after_the_others_ran() {
    let _wd = util::watchdog(
        "self waking future is polled again after the others ran",
        Duration::from_secs(30),
    );
    let ticks = Rc::new(Cell::new(0u32));
    let stop = Rc::new(Cell::new(false));
    let (t, s) = (ticks.clone(), stop.clone());
    let ticker = moss::spawn(move || {
        while !s.get() {
            t.set(t.get() + 1);
            moss::yield_now();
        }
    });
    let t = ticks.clone();
    let h = moss::spawn(move || {
        moss::block_on(SelfWaking {
            left: 10,
            seen: Vec::new(),
            ticks: t,
        })
    });
    let seen = h.join().unwrap();
    stop.set(true);
    ticker.join().unwrap();
    // Polled exactly 11 times (no lost wake, no extra polls), and the ticker
    // ran between every two polls (no spinning on the hub).
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
}

#[test]
fn pending_future_is_not_polled_until_woken() {
    let _wd = util::watchdog(
        "pending future is not polled until woken",
        Duration::from_secs(30),
    );
    let gate = Gate::default();
    let g = gate.clone();
    let h = moss::spawn(move || moss::block_on(g));
    util::until_parked(h.id());
    for _ in 0..100 {
        moss::yield_now();
    }
    assert_eq!(gate.polls(), 1);
    gate.open();
    h.join().unwrap();
    assert_eq!(gate.polls(), 2);
}

#[test]
fn kill_drops_the_future_at_once() {
    let drops = DropCounter::new();
    let gate = Gate::default();
    let fut = Holding(drops.token(), gate.clone());
    let h = moss::spawn(move || moss::block_on(fut));
    util::until_parked(h.id());
    assert_eq!(drops.drops(), 0);
    h.kill();
    assert_eq!(drops.drops(), 1);
    assert!(h.join().unwrap_err().is_killed());
    // The waker the gate kept outlives the killed block_on: waking it now
    // is harmless.
    gate.open();
    assert_eq!(gate.polls(), 1);
}

#[test]
fn timeout_drops_the_future_and_returns_elapsed() {
    let drops = DropCounter::new();
    let (_tx, rx) = oneshot::channel::<u8>();
    let fut = Holding(drops.token(), rx);
    let h = moss::spawn(move || {
        let t = Instant::now();
        let r = moss::timeout(Duration::from_millis(30), || moss::block_on(fut));
        (r.is_err(), t.elapsed())
    });
    let (elapsed, took) = h.join().unwrap();
    assert!(elapsed);
    assert!(took >= Duration::from_millis(30), "{took:?}");
    assert_eq!(drops.drops(), 1);
}

#[test]
fn timeout_on_the_root() {
    let drops = DropCounter::new();
    let fut = Holding(drops.token(), std::future::pending::<()>());
    let r = moss::timeout(Duration::from_millis(20), || moss::block_on(fut));
    assert!(r.is_err());
    assert_eq!(drops.drops(), 1);
}

#[test]
fn cancelled_waits_leave_later_waits_alone() {
    let _wd = util::watchdog(
        "cancelled waits leave later waits alone",
        Duration::from_secs(30),
    );
    // A timeout cuts block_on short while its waker is kept by the sender
    // side; the sender wakes it later, from this hub and from a thread,
    // while the same coroutine sleeps and then waits on another future.
    let gate = Gate::default();
    let g = gate.clone();
    let second = Gate::default();
    let s2 = second.clone();
    let h = moss::spawn(move || {
        assert!(moss::timeout(Duration::from_millis(10), || moss::block_on(g)).is_err());
        let t = Instant::now();
        moss::sleep(Duration::from_millis(100));
        let slept = t.elapsed();
        moss::block_on(s2);
        slept
    });
    util::until(
        "the first wait to time out",
        Duration::from_secs(10),
        || moss::dump().contains("waiting on sleep"),
    );
    let stale = gate.waker();
    stale.wake_by_ref();
    let s = stale.clone();
    std::thread::spawn(move || s.wake()).join().unwrap();
    util::until_parked(h.id());
    util::until("the second wait to start", Duration::from_secs(10), || {
        second.polls() == 1
    });
    stale.wake_by_ref();
    for _ in 0..50 {
        moss::yield_now();
    }
    assert_eq!(second.polls(), 1, "a stale waker polled a later future");
    second.open();
    let slept = h.join().unwrap();
    assert!(slept >= Duration::from_millis(100), "{slept:?}");
    assert_eq!(gate.polls(), 1);
}

#[test]
fn a_waker_kept_after_block_on_returned_is_harmless() {
    let _wd = util::watchdog(
        "a waker kept after block on returned is harmless",
        Duration::from_secs(30),
    );
    let (tx, rx) = oneshot::channel::<Waker>();
    let h = moss::spawn(move || {
        let mut first = true;
        let v = moss::block_on(std::future::poll_fn(|cx| {
            if first {
                first = false;
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(5)
            }
        }));
        let mut kept = None;
        moss::block_on(std::future::poll_fn(|cx| {
            kept = Some(cx.waker().clone());
            Poll::Ready(())
        }));
        tx.send(kept.unwrap()).unwrap();
        let gate = Gate::default();
        let g = gate.clone();
        let opener = moss::spawn(move || {
            moss::sleep(Duration::from_millis(20));
            g.open();
        });
        moss::block_on(gate.clone());
        opener.join().unwrap();
        (v, gate.polls())
    });
    let kept = moss::block_on(rx).unwrap();
    kept.wake_by_ref();
    std::thread::spawn(move || {
        kept.wake_by_ref();
        kept.wake()
    });
    assert_eq!(h.join().unwrap(), (5, 2));
}

#[test]
fn panicking_future_is_a_panic_of_the_coroutine() {
    let drops = DropCounter::new();
    let d = drops.token();
    let h = moss::spawn(move || {
        let _d = d;
        moss::block_on(async {
            moss::yield_now();
            panic!("the future failed");
        })
    });
    let e = h.join().unwrap_err();
    assert!(e.is_panic());
    assert!(e.to_string().contains("the future failed"), "{e}");
    assert_eq!(drops.drops(), 1);
    // The hub is fine afterwards.
    assert_eq!(
        moss::spawn(|| moss::block_on(async { 3 })).join().unwrap(),
        3
    );
}

#[test]
fn on_the_root_the_hub_runs_meanwhile() {
    let (tx, rx) = oneshot::channel::<u32>();
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        for _ in 0..10 {
            t.set(t.get() + 1);
            moss::yield_now();
        }
    });
    let sender = moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        tx.send(9).unwrap();
    });
    assert_eq!(moss::block_on(rx).unwrap(), 9);
    assert_eq!(ticks.get(), 10);
    ticker.join().unwrap();
    sender.join().unwrap();
}

#[test]
fn on_a_plain_thread_it_blocks_the_thread() {
    let _wd = util::watchdog("plain thread", Duration::from_secs(30));
    let gate = Gate::default();
    let g = gate.clone();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: a plain syscall without arguments.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        moss::block_on(g);
    });
    let tid = tid_rx.recv().unwrap();
    // Polled once (pending), then the thread sleeps in the kernel: blocked.
    util::until("the first poll", Duration::from_secs(20), || {
        gate.polls() == 1
    });
    util::until_thread_sleeps(tid);
    assert_eq!(gate.polls(), 1, "polled again without a wake");
    gate.open();
    t.join().unwrap();
    // Once pending, once after the wake: it waited, it did not spin.
    assert_eq!(gate.polls(), 2);
    // Ready futures on a fresh thread, many times over.
    let n = std::thread::spawn(|| {
        (0..1000u64)
            .map(|i| moss::block_on(async move { i }))
            .sum::<u64>()
    });
    assert_eq!(n.join().unwrap(), 499_500);
}

#[test]
fn wake_from_a_dying_thread() {
    struct WakeOnExit(Option<Waker>);
    impl Drop for WakeOnExit {
        fn drop(&mut self) {
            if let Some(w) = self.0.take() {
                w.wake();
            }
        }
    }
    thread_local! {
        static ON_EXIT: std::cell::RefCell<WakeOnExit> = const { std::cell::RefCell::new(WakeOnExit(None)) };
    }
    let _wd = util::watchdog("dying thread", Duration::from_secs(30));
    let gate = Gate::default();
    let g = gate.clone();
    let h = moss::spawn(move || moss::block_on(g));
    util::until_parked(h.id());
    let w = gate.waker();
    let g = gate.clone();
    // The wake comes from a thread-local destructor of a thread that had a
    // hub of its own (which may or may not be gone by then).
    std::thread::spawn(move || {
        g.0.open.store(true, Ordering::SeqCst);
        ON_EXIT.with(|e| e.borrow_mut().0 = Some(w));
        moss::spawn(|| ()).join().unwrap();
    })
    .join()
    .unwrap();
    h.join().unwrap();
    assert_eq!(gate.polls(), 2);
}

#[test]
fn nested_block_on() {
    let _wd = util::watchdog("nested block on", Duration::from_secs(30));
    let (tx_a, mut rx_a) = oneshot::channel::<u32>();
    let (tx_b, rx_b) = oneshot::channel::<u32>();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let h = moss::spawn(move || {
        let mut rx_b = Some(rx_b);
        let mut b = 0;
        moss::block_on(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            if let Poll::Ready(a) = Pin::new(&mut rx_a).poll(cx) {
                return Poll::Ready(a.unwrap() * 100 + b);
            }
            // Parks this coroutine inside the outer poll, with the outer
            // waker registered with `rx_a`.
            if let Some(rx) = rx_b.take() {
                b = moss::block_on(rx).unwrap();
            }
            Poll::Pending
        }))
    });
    util::until_parked(h.id());
    // Wakes the outer future while the inner block_on waits: it must not
    // end the inner wait, and must not be lost.
    tx_a.send(4).unwrap();
    for _ in 0..20 {
        moss::yield_now();
    }
    assert!(!h.is_finished());
    assert_eq!(polls.get(), 1);
    tx_b.send(2).unwrap();
    assert_eq!(h.join().unwrap(), 402);
    assert_eq!(polls.get(), 2);
}

#[test]
fn in_a_greenlet_started_from_a_coroutine() {
    // Ready futures work; a pending one is a clear error before it parks.
    let h = moss::spawn(|| {
        let g = Greenlet::new(|v: u32| moss::block_on(async move { v + 1 }));
        g.switch(1)
    });
    assert_eq!(h.join().unwrap(), 2);
    let h = moss::spawn(|| {
        let g = Greenlet::new(|v: u32| {
            moss::block_on(std::future::pending::<()>());
            v
        });
        g.switch(1)
    });
    let e = h.join().unwrap_err();
    assert!(
        e.to_string().contains("greenlet started from a coroutine"),
        "{e}"
    );
}

#[test]
fn in_a_greenlet_on_the_root() {
    let (tx, rx) = oneshot::channel::<u32>();
    let sender = moss::spawn(move || {
        moss::sleep(Duration::from_millis(10));
        tx.send(5).unwrap();
    });
    let g = Greenlet::new(move |v: u32| moss::block_on(rx).unwrap() + v);
    assert_eq!(g.switch(1), 6);
    sender.join().unwrap();
}

#[test]
fn pending_without_a_waker_on_the_root_would_block_forever() {
    let r = std::thread::spawn(|| moss::block_on(std::future::pending::<()>())).join();
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("would block forever"), "{msg}");
    assert!(msg.contains("block_on"), "{msg}");
}

#[test]
fn in_a_forked_process() {
    let _wd = util::watchdog("block_on in a child process", Duration::from_secs(60));
    // Wakers and a spare signal exist in the parent before the fork.
    assert_eq!(moss::block_on(async { 1 }), 1);
    let p = util::Reap(
        moss::pool::Process::new(|| {
            let (tx, rx) = oneshot::channel::<i32>();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                tx.send(42).unwrap();
            });
            let v = moss::block_on(rx).unwrap();
            std::process::exit(v);
        })
        .start()
        .unwrap(),
    );
    assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), Some(42));
}

// The other direction: async code awaiting what coroutines produce.

#[test]
fn async_result_awaited_by_async_code_on_another_thread() {
    let _wd = util::watchdog("AsyncResult awaited", Duration::from_secs(30));
    let r = moss::sync::AsyncResult::new();
    let awaited = r.clone();
    let task =
        std::thread::spawn(move || futures::executor::block_on(async move { awaited.await }));
    let producer = moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        r.set(vec![1u8, 2, 3]);
    });
    producer.join().unwrap();
    assert_eq!(task.join().unwrap(), vec![1, 2, 3]);

    // A stored panic is resumed in the awaiting task.
    let r = moss::sync::AsyncResult::<u8>::new();
    let awaited = r.clone();
    let task = std::thread::spawn(move || futures::executor::block_on(awaited.into_future()));
    moss::spawn(move || {
        r.set_panic(Box::new("producer failed"));
    })
    .join()
    .unwrap();
    let p = task.join().unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"producer failed"));
}

#[test]
fn async_result_awaited_in_block_on_by_coroutines() {
    let r = moss::sync::AsyncResult::new();
    let hs: Vec<_> = (0..10u32)
        .map(|i| {
            let r = r.clone();
            moss::spawn(move || moss::block_on(async move { r.await + i }))
        })
        .collect();
    moss::yield_now();
    r.set(100);
    let got: Vec<u32> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(got, (100..110).collect::<Vec<_>>());
}

/// A waker whose clones can be counted.
struct CountedWake;

impl std::task::Wake for CountedWake {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn async_result_future_registers_one_waker_and_withdraws_it() {
    use std::future::IntoFuture;
    let r = moss::sync::AsyncResult::<u8>::new();
    let mut fut = Box::pin(r.clone().into_future());
    let (a, b) = (Arc::new(CountedWake), Arc::new(CountedWake));
    let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending()
    );
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending()
    );
    // Held by: `a`, `wa` and one registration, not one per poll.
    assert_eq!(Arc::strong_count(&a), 3);
    // A poll with another task's waker replaces the registration.
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending()
    );
    assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (2, 3));
    drop(fut);
    assert_eq!(Arc::strong_count(&b), 2);
    // Ready at once when the value is there.
    r.set(8);
    assert_eq!(futures::executor::block_on(r.into_future()), 8);
}

/// Wakes itself in every poll, forever.
struct Restless(#[allow(dead_code)] util::Counted);

impl Future for Restless {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn kill_and_timeout_of_a_future_that_keeps_waking_itself() {
    let _wd = util::watchdog("restless future", Duration::from_secs(30));
    let drops = DropCounter::new();
    let fut = Restless(drops.token());
    let h = moss::spawn(move || moss::block_on(fut));
    for _ in 0..10 {
        moss::yield_now(); // it polls, yields, polls again...
    }
    assert!(!h.is_finished());
    h.kill();
    assert_eq!(drops.drops(), 1);
    assert!(h.join().unwrap_err().is_killed());
    let fut = Restless(drops.token());
    let r = moss::timeout(Duration::from_millis(20), || moss::block_on(fut));
    assert!(r.is_err());
    assert_eq!(drops.drops(), 2);
}

/// Ready once `target` wakes have been counted.
struct CountTo {
    count: Arc<AtomicUsize>,
    target: usize,
    waker: Arc<Mutex<Option<Waker>>>,
    polls: usize,
}

impl Future for CountTo {
    type Output = usize;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        self.polls += 1;
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.count.load(Ordering::SeqCst) >= self.target {
            Poll::Ready(self.polls)
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn wakes_from_many_threads_at_once_are_never_lost() {
    let _wd = util::watchdog("many wakers", Duration::from_secs(60));
    for _ in 0..20 {
        let count = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Mutex::new(None::<Waker>));
        let fut = CountTo {
            count: count.clone(),
            target: 4 * 500,
            waker: slot.clone(),
            polls: 0,
        };
        let h = moss::spawn(move || moss::block_on(fut));
        util::until_parked(h.id());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (count, slot) = (count.clone(), slot.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        count.fetch_add(1, Ordering::SeqCst);
                        let w = slot.lock().unwrap().clone();
                        if let Some(w) = w {
                            w.wake();
                        }
                    }
                })
            })
            .collect();
        let polls = h.join().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        // At most one poll per wake (plus the first): wakes coalesce.
        assert!((2..=2001).contains(&polls), "{polls}");
    }
}

#[test]
fn block_on_in_a_destructor_keeps_waiting_through_a_second_cancellation() {
    // A timeout unwinds the coroutine; a destructor waits for a future in
    // that unwind and is killed meanwhile: it must not unwind twice (an
    // abort) but get its value, and the kill lands afterwards.
    if util::in_child("block_on_in_a_destructor_keeps_waiting_through_a_second_cancellation") {
        struct Cleanup(Option<oneshot::Receiver<u32>>, Rc<Cell<Option<u32>>>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let rx = self.0.take().unwrap();
                self.1.set(moss::block_on(rx).ok());
            }
        }
        let (tx, rx) = oneshot::channel::<u32>();
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        let h = moss::spawn(move || {
            let c = Cleanup(Some(rx), g);
            let r = moss::timeout(Duration::from_millis(10), move || {
                let _c = c;
                moss::block_on(std::future::pending::<()>())
            });
            assert!(r.is_err());
            moss::sleep(Duration::from_secs(10)); // the kill lands here
        });
        util::until("the cleanup to wait", Duration::from_secs(10), || {
            moss::dump().contains("waiting on block_on") && !moss::dump().contains("kept no waker")
        });
        h.kill_nowait();
        for _ in 0..20 {
            moss::yield_now();
        }
        assert!(!h.is_finished());
        tx.send(9).unwrap();
        assert!(h.join().unwrap_err().is_killed());
        assert_eq!(got.get(), Some(9));
        println!("moss-test: waited through the kill");
        return;
    }
    let r = util::run_in_child(
        "block_on_in_a_destructor_keeps_waiting_through_a_second_cancellation",
        Duration::from_secs(60),
    );
    assert!(
        r.success() && r.stdout.contains("moss-test: waited through the kill"),
        "{r:?}"
    );
}
