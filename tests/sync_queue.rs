//! The queues: FIFO order, capacity, timeouts, the variants, and that no
//! item is lost when waiters are killed or time out.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod util;

use moss::sync::{
    Empty, Full, JoinableQueue, LifoQueue, PriorityQueue, Queue, TaskDoneError, Timeout,
};

#[test]
fn ten_thousand_items_keep_their_order_through_a_bounded_queue() {
    let q = Arc::new(Queue::new(16));
    let tx = q.clone();
    let producer = moss::spawn(move || {
        for i in 0..10_000u32 {
            tx.put(i);
        }
    });
    let rx = q.clone();
    let consumer = moss::spawn(move || (0..10_000).map(|_| rx.get()).collect::<Vec<u32>>());
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), (0..10_000).collect::<Vec<_>>());
    assert!(q.is_empty());
}

#[test]
fn ten_thousand_items_keep_their_order_between_threads() {
    let q = Arc::new(Queue::new(8));
    let tx = q.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            tx.put(i);
        }
    });
    let got: Vec<u32> = (0..10_000).map(|_| q.get()).collect();
    producer.join().unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
}

#[test]
fn capacity_full_and_empty() {
    let q = Queue::new(2);
    assert_eq!(q.capacity(), Some(2));
    assert!(q.is_empty() && !q.is_full());
    q.put_nowait(1).unwrap();
    q.put(2);
    assert!(q.is_full());
    assert_eq!(q.len(), 2);
    let Full(back) = q.put_nowait(3).unwrap_err();
    assert_eq!(back, 3);
    let t = Instant::now();
    assert_eq!(
        q.put_timeout(4, Duration::from_millis(20))
            .unwrap_err()
            .into_inner(),
        4
    );
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(q.get_nowait(), Ok(1));
    assert_eq!(q.get_timeout(Duration::ZERO), Ok(2));
    assert_eq!(q.get_nowait(), Err(Empty));
    let t = Instant::now();
    assert_eq!(q.get_timeout(Duration::from_millis(20)), Err(Timeout));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(Empty.to_string(), "queue is empty");
    assert_eq!(Full(()).to_string(), "queue is full");
    let u = Queue::unbounded();
    for i in 0..1000 {
        u.put_nowait(i).unwrap();
    }
    assert_eq!((u.len(), u.capacity(), u.is_full()), (1000, None, false));
}

#[test]
#[should_panic(expected = "a queue needs a capacity of at least 1")]
fn zero_capacity_is_refused_at_construction() {
    let _ = Queue::<u8>::new(0);
}

#[test]
fn blocked_putters_and_getters_are_served_in_fifo_order() {
    let q = Arc::new(Queue::new(1));
    q.put(0);
    let order = Rc::new(RefCell::new(Vec::new()));
    let putters: Vec<_> = (1..=5)
        .map(|i| {
            let q = q.clone();
            moss::spawn(move || q.put(i))
        })
        .collect();
    moss::yield_now(); // all five wait for room, in order
    let got: Vec<i32> = (0..6).map(|_| q.get()).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    moss::join_all(putters);
    let getters: Vec<_> = (0..5)
        .map(|i| {
            let (q, order) = (q.clone(), order.clone());
            moss::spawn(move || {
                let v = q.get();
                order.borrow_mut().push((i, v));
            })
        })
        .collect();
    moss::yield_now();
    for v in 10..15 {
        q.put(v);
    }
    moss::join_all(getters);
    assert_eq!(
        *order.borrow(),
        vec![(0, 10), (1, 11), (2, 12), (3, 13), (4, 14)]
    );
}

#[test]
fn an_item_handed_to_a_killed_getter_goes_to_the_next_one() {
    let q = Arc::new(Queue::new(4));
    let q1 = q.clone();
    let victim = moss::spawn(move || q1.get());
    let q2 = q.clone();
    let next = moss::spawn(move || q2.get());
    moss::yield_now(); // both wait
    q.put("first"); // handed to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    let got = next
        .join_timeout(Duration::from_secs(5))
        .expect("item passed on");
    assert_eq!(got.unwrap(), "first");
    // With nobody else waiting, it goes back to the front of the queue.
    let q3 = q.clone();
    let victim = moss::spawn(move || q3.get());
    moss::yield_now();
    q.put("second");
    victim.kill();
    q.put("third");
    assert_eq!([q.get(), q.get()], ["second", "third"]);
}

#[test]
fn timeouts_racing_with_puts_lose_no_item() {
    let q = Arc::new(Queue::unbounded());
    let received = Arc::new(AtomicUsize::new(0));
    let tx = q.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..2000u32 {
            tx.put(i);
            if i % 16 == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    });
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (q, received) = (q.clone(), received.clone());
            moss::spawn(move || {
                let mut last = None;
                let t = Instant::now();
                while received.load(Ordering::SeqCst) < 2000
                    && t.elapsed() < Duration::from_secs(10)
                {
                    // Very short timeouts race with the other thread's puts.
                    if let Ok(v) = q.get_timeout(Duration::from_micros(50)) {
                        received.fetch_add(1, Ordering::SeqCst);
                        assert!(last < Some(v), "a getter sees items in order");
                        last = Some(v);
                    }
                }
            })
        })
        .collect();
    for r in moss::join_all(hs) {
        r.unwrap();
    }
    producer.join().unwrap();
    assert_eq!(received.load(Ordering::SeqCst) + q.len(), 2000);
}

#[test]
fn killed_and_timed_out_getters_under_a_cross_thread_producer_lose_nothing() {
    let q = Arc::new(Queue::unbounded());
    let tx = q.clone();
    let total = 500;
    let producer = std::thread::spawn(move || {
        for i in 0..total {
            tx.put(i);
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    let got = Rc::new(Cell::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.get() < total && Instant::now() < deadline {
        let (q1, g1) = (q.clone(), got.clone());
        let h = moss::spawn(move || {
            let _ = moss::timeout(Duration::from_micros(300), || {
                q1.get();
                g1.set(g1.get() + 1);
            });
        });
        let (q2, g2) = (q.clone(), got.clone());
        let victim = moss::spawn(move || {
            q2.get();
            g2.set(g2.get() + 1);
        });
        moss::sleep(Duration::from_micros(200));
        victim.kill();
        h.join().unwrap();
    }
    producer.join().unwrap();
    while q.get_nowait().is_ok() {
        got.set(got.get() + 1);
    }
    assert_eq!(got.get(), total);
}

#[test]
fn lifo_and_priority_orders() {
    let l = LifoQueue::new(3);
    for i in 0..3 {
        l.put(i);
    }
    assert!(l.put_nowait(9).is_err());
    assert_eq!([l.get(), l.get(), l.get()], [2, 1, 0]);
    let p = Arc::new(PriorityQueue::new(2));
    p.put(7);
    p.put(3);
    let p2 = p.clone();
    let late = moss::spawn(move || p2.put(1)); // waits: full
    moss::yield_now();
    assert!(!late.is_finished());
    assert_eq!(p.get(), 3);
    late.join().unwrap();
    assert_eq!([p.get(), p.get()], [1, 7]);
    assert_eq!(p.get_nowait(), Err(Empty));
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    let q = Arc::new(JoinableQueue::new(5));
    let done = Rc::new(Cell::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (q, done) = (q.clone(), done.clone());
            moss::spawn(move || {
                loop {
                    let job: u32 = q.get();
                    if job == u32::MAX {
                        q.task_done().unwrap();
                        return;
                    }
                    moss::sleep(Duration::from_millis(2));
                    done.set(done.get() + 1);
                    q.task_done().unwrap();
                }
            })
        })
        .collect();
    for j in 0..20 {
        q.put(j);
    }
    assert!(!q.join_timeout(Duration::ZERO) || done.get() == 20);
    q.join();
    assert_eq!(done.get(), 20);
    assert_eq!(q.unfinished_tasks(), 0);
    for _ in 0..3 {
        q.put(u32::MAX);
    }
    assert!(q.join_timeout(Duration::from_secs(5)));
    moss::join_all(workers);
    assert_eq!(q.task_done(), Err(TaskDoneError));
}

/// Parks a getter on `q`, hands it `first` with a put, fills the queue with
/// `rest` while the getter has not run yet, then kills the getter: its item
/// comes back to a queue that is already full.
fn give_back_into_a_full_queue<T: std::fmt::Debug + 'static>(
    get: impl FnOnce() -> T + 'static,
    put: impl Fn(T),
    first: T,
    rest: impl IntoIterator<Item = T>,
) {
    let victim = moss::spawn(get);
    util::until_parked(victim.id());
    put(first); // handed to the victim
    for v in rest {
        put(v); // into the buffer, up to its capacity
    }
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
}

#[test]
fn a_give_back_into_a_full_queue_keeps_it_within_capacity_and_in_order() {
    let q = Arc::new(Queue::new(2));
    let q1 = q.clone();
    give_back_into_a_full_queue(
        move || q1.get(),
        |v| q.put_nowait(v).unwrap(),
        'a',
        ['b', 'c'],
    );
    assert_eq!(q.len(), 2, "never more than the capacity");
    assert!(q.is_full());
    assert_eq!(q.put_nowait('x'), Err(Full('x')));
    // A put now waits behind the item the give-back displaced.
    let q2 = q.clone();
    let late = moss::spawn(move || q2.put('d'));
    util::until_parked(late.id());
    assert_eq!(q.get(), 'a');
    assert_eq!(q.len(), 2);
    assert!(
        !late.is_finished(),
        "the put waits: 'c' was first in line for room"
    );
    assert_eq!(q.get(), 'b');
    late.join().unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!([q.get(), q.get()], ['c', 'd']);
    assert_eq!(q.get_nowait(), Err(Empty));
    // Refills never exceed the capacity afterwards.
    for i in 0..2 {
        q.put_nowait(char::from(b'0' + i)).unwrap();
    }
    assert_eq!(q.put_nowait('z'), Err(Full('z')));
}

#[test]
fn a_give_back_into_a_full_lifo_or_priority_queue_is_as_if_never_handed() {
    // LIFO: as if 'a' had gone into the stack first and 'c' had waited.
    let l = Arc::new(LifoQueue::new(2));
    let l1 = l.clone();
    give_back_into_a_full_queue(
        move || l1.get(),
        |v| l.put_nowait(v).unwrap(),
        'a',
        ['b', 'c'],
    );
    assert_eq!(l.len(), 2);
    assert_eq!([l.get(), l.get(), l.get()], ['b', 'c', 'a']);
    assert_eq!(l.len(), 0);
    // Priority: the largest item waits for room.
    let p = Arc::new(PriorityQueue::new(2));
    let p1 = p.clone();
    give_back_into_a_full_queue(move || p1.get(), |v| p.put_nowait(v).unwrap(), 5, [1, 3]);
    assert_eq!(p.len(), 2);
    assert_eq!(p.put_nowait(0), Err(Full(0)));
    assert_eq!([p.get(), p.get(), p.get()], [1, 3, 5]);
}

#[test]
fn a_give_back_into_a_full_joinable_queue_keeps_the_task_count() {
    let q = Arc::new(JoinableQueue::new(1));
    let q1 = q.clone();
    give_back_into_a_full_queue(move || q1.get(), |v| q.put_nowait(v).unwrap(), 1, [2]);
    assert_eq!((q.len(), q.unfinished_tasks()), (1, 2));
    assert_eq!(q.get(), 1);
    assert_eq!((q.len(), q.unfinished_tasks()), (1, 2));
    assert_eq!(q.get(), 2);
    q.task_done().unwrap();
    assert!(!q.join_timeout(Duration::ZERO));
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::ZERO));
    assert_eq!(q.task_done(), Err(TaskDoneError));
}
