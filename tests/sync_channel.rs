//! Channels (close semantics, rendezvous) and waiting for the first of
//! several things (`wait_any`, `iwait`, `select`).

use std::sync::Arc;
use std::time::{Duration, Instant};

mod util;

use moss::sync::{
    AsyncResult, Event, Queue, RecvError, RecvTimeoutError, TryRecvError, TrySendError, Waitable,
    bounded, channel, iwait, select, select_timeout, wait_any, wait_any_timeout,
};

#[test]
fn recv_drains_then_fails_once_every_sender_is_gone() {
    let (tx, rx) = channel();
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    tx2.send(2).unwrap();
    drop(tx);
    assert_eq!(rx.try_recv(), Ok(1));
    drop(tx2);
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(
        RecvError.to_string(),
        "receiving on a closed channel (every sender is gone)"
    );
}

#[test]
fn a_blocked_recv_wakes_when_the_last_sender_drops() {
    let (tx, rx) = channel::<u8>();
    let h = moss::spawn(move || rx.recv());
    moss::yield_now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        drop(tx);
    });
    assert_eq!(h.join().unwrap(), Err(RecvError));
    t.join().unwrap();
}

#[test]
fn send_after_the_receiver_is_gone_gives_the_value_back() {
    let (tx, rx) = bounded(1);
    tx.send(String::from("kept")).unwrap();
    let tx2 = tx.clone();
    let blocked = moss::spawn(move || tx2.send(String::from("blocked")));
    moss::yield_now();
    assert!(!blocked.is_finished());
    drop(rx);
    assert_eq!(blocked.join().unwrap().unwrap_err().into_inner(), "blocked");
    assert_eq!(tx.send(String::from("late")).unwrap_err().0, "late");
    assert!(matches!(
        tx.try_send(String::new()),
        Err(TrySendError::Disconnected(_))
    ));
    assert!(
        tx.is_empty(),
        "buffered values are dropped with the receiver"
    );
}

#[test]
fn bounded_channel_waits_and_times_out() {
    let (tx, rx) = bounded(2);
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
    let t = Instant::now();
    assert!(matches!(
        tx.send_timeout(3, Duration::from_millis(20)),
        Err(TrySendError::Full(3))
    ));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(rx.recv(), Ok(1));
    tx.send_timeout(3, Duration::ZERO).unwrap();
    assert_eq!(rx.iter().take(2).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    );
}

#[test]
fn rendezvous_channel_hands_values_over_directly() {
    let (tx, rx) = bounded(0);
    assert!(matches!(tx.try_send(0), Err(TrySendError::Full(0))));
    let t = Instant::now();
    let sender = moss::spawn(move || {
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        t.elapsed()
    });
    moss::sleep(Duration::from_millis(30));
    assert_eq!(rx.len(), 0);
    let got: Vec<i32> = rx.iter().collect();
    assert_eq!(got, vec![0, 1, 2]);
    // The sender could not finish before the receiver started taking.
    assert!(sender.join().unwrap() >= Duration::from_millis(30));
}

#[test]
fn channel_between_threads_keeps_order_and_closes() {
    let (tx, rx) = bounded(4);
    let t = std::thread::spawn(move || {
        for i in 0..5000u32 {
            tx.send(i).unwrap();
        }
    });
    let got: Vec<u32> = rx.into_iter().collect();
    assert_eq!(got, (0..5000).collect::<Vec<_>>());
    t.join().unwrap();
}

#[test]
fn select_returns_the_first_receiver_with_a_value() {
    let (tx1, rx1) = channel::<&str>();
    let (tx2, rx2) = channel();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        tx2.send("two").unwrap();
    });
    assert_eq!(select(&[&rx1, &rx2]), Some((1, Ok("two"))));
    tx1.send("one").unwrap();
    assert_eq!(select(&[&rx1, &rx2]), Some((0, Ok("one"))));
    t.join().unwrap();
    // rx2's sender is gone now.
    assert_eq!(select(&[&rx1, &rx2]), Some((1, Err(RecvError))));
    assert_eq!(
        select_timeout(&[&rx1], Duration::from_millis(10)),
        Err(moss::sync::Timeout)
    );
    assert_eq!(select::<u8>(&[]), None);
}

#[test]
fn wait_any_over_mixed_sources() {
    let ev = Arc::new(Event::new());
    let res = AsyncResult::<u32>::new();
    let q = Arc::new(Queue::<u8>::new(1));
    let h = moss::spawn(|| moss::sleep(Duration::from_millis(20)));
    {
        let objs: [&dyn Waitable; 4] = [&*ev, &res, &*q, &h];
        assert_eq!(
            wait_any_timeout(&objs, Duration::ZERO),
            Err(moss::sync::Timeout)
        );
        assert_eq!(wait_any(&objs), Some(3)); // the coroutine finished first
    }
    h.join().unwrap();
    let r2 = res.clone();
    let t = std::thread::spawn(move || r2.set(1));
    let objs: [&dyn Waitable; 3] = [&*ev, &res, &*q];
    assert_eq!(wait_any(&objs), Some(1));
    t.join().unwrap();
    let objs: [&dyn Waitable; 2] = [&*ev, &*q];
    let q2 = q.clone();
    moss::spawn(move || q2.put(9));
    assert_eq!(wait_any(&objs), Some(1));
    assert_eq!(q.get(), 9);
    let e2 = ev.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        e2.set()
    });
    assert_eq!(wait_any(&objs), Some(0));
    t.join().unwrap();
    assert_eq!(wait_any(&[]), None);
}

#[test]
fn iwait_yields_each_source_once_in_completion_order() {
    let hs: Vec<_> = [100u64, 10, 55]
        .into_iter()
        .map(|ms| moss::spawn(move || moss::sleep(Duration::from_millis(ms))))
        .collect();
    let objs: Vec<&dyn Waitable> = hs.iter().map(|h| h as &dyn Waitable).collect();
    let t = Instant::now();
    let order: Vec<usize> = iwait(&objs).collect();
    assert_eq!(order, vec![1, 2, 0]);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_killed_waiter_in_wait_any_unwinds_cleanly() {
    let ev = Arc::new(Event::new());
    let e2 = ev.clone();
    let h = moss::spawn(move || wait_any(&[&*e2]));
    moss::yield_now();
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    let e3 = ev.clone();
    let h = moss::spawn(move || wait_any(&[&*e3]));
    moss::yield_now();
    ev.set();
    assert_eq!(h.join().unwrap(), Some(0));
}

/// A rendezvous receiver handed a value and killed before it ran gives the
/// value back; the channel stays a rendezvous: nothing is buffered, and a
/// later `send` returns only once a `recv` has taken its value.
#[test]
fn a_killed_rendezvous_receiver_gives_the_value_back_and_sends_still_wait() {
    use std::cell::Cell;
    use std::rc::Rc;
    let (tx, rx) = bounded::<u32>(0);
    let rx = Rc::new(rx);
    let r1 = {
        let rx = rx.clone();
        moss::spawn(move || rx.recv())
    };
    util::until_parked(r1.id());
    tx.try_send(1).unwrap(); // handed straight to r1
    r1.kill(); // killed before it ran: 1 goes back
    assert!(r1.join().unwrap_err().is_killed());
    assert_eq!(rx.len(), 0, "a rendezvous channel buffers nothing");
    assert!(matches!(tx.try_send(99), Err(TrySendError::Full(99))));
    let mut expected = 1;
    for v in 2..=6u32 {
        let done = Rc::new(Cell::new(false));
        let sender = {
            let (t, d) = (tx.clone(), done.clone());
            moss::spawn(move || {
                t.send(v).unwrap();
                d.set(true);
            })
        };
        util::until_parked(sender.id());
        assert!(!done.get(), "send({v}) returned before any recv");
        assert_eq!(rx.len(), 0);
        assert_eq!(rx.recv(), Ok(expected));
        moss::yield_now();
        assert!(
            !done.get(),
            "send({v}) returned before its value was received"
        );
        expected = v;
        drop(sender); // detached: it finishes at the next recv
    }
    assert_eq!(rx.recv(), Ok(6));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(rx.len(), 0);
}

/// The value a killed receiver gives back wakes a `select` waiting on the
/// same rendezvous channel.
#[test]
fn a_value_given_back_on_a_rendezvous_channel_wakes_a_select() {
    let (tx, rx) = bounded::<&str>(0);
    let rx = Arc::new(rx);
    let r1 = {
        let rx = rx.clone();
        moss::spawn(move || rx.recv())
    };
    util::until_parked(r1.id());
    let sel = {
        let rx = rx.clone();
        moss::spawn(move || select(&[&*rx]))
    };
    util::until_parked(sel.id());
    tx.try_send("v").unwrap(); // to r1, the only blocked recv
    r1.kill();
    assert_eq!(sel.join().unwrap(), Some((0, Ok("v"))));
    assert_eq!(rx.len(), 0);
}
