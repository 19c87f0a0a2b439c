//! ProcessQueue: a bounded queue shared by forked processes.

mod util;

use std::cell::Cell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::ProcessQueue;
use moss::sync::{Empty, Timeout};
use util::{Reap, start};

#[test]
fn two_child_producers_every_item_exactly_once_in_order() {
    const N: u32 = 400;
    let q = Arc::new(ProcessQueue::<(u8, u32)>::new(8).unwrap());
    let producers: Vec<Reap> = (0..2u8)
        .map(|p| {
            let q = q.clone();
            start(move || {
                for i in 0..N {
                    q.put((p, i));
                }
            })
        })
        .collect();
    let mut next = [0u32; 2];
    for _ in 0..2 * N {
        let (p, i) = q.get_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(i, next[p as usize], "producer {p} out of order");
        next[p as usize] += 1;
        assert!(q.len() <= 8 + 2, "capacity exceeded: {}", q.len());
    }
    assert_eq!(next, [N, N]);
    for p in &producers {
        assert_eq!(p.0.join().unwrap(), 0);
    }
    assert!(q.is_empty());
    assert_eq!(q.get_nowait(), Err(Empty));
}

#[test]
fn two_child_consumers_share_the_items() {
    const N: u32 = 300;
    let q = Arc::new(ProcessQueue::<Option<u32>>::new(4).unwrap());
    let back = Arc::new(ProcessQueue::<Vec<u32>>::new(2).unwrap());
    let consumers: Vec<Reap> = (0..2)
        .map(|_| {
            let (q, back) = (q.clone(), back.clone());
            start(move || {
                let mut got = Vec::new();
                while let Some(i) = q.get() {
                    got.push(i);
                }
                back.put(got);
            })
        })
        .collect();
    for i in 0..N {
        q.put(Some(i));
    }
    q.put(None);
    q.put(None);
    let mut all = back.get();
    all.extend(back.get());
    all.sort();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    for c in &consumers {
        assert_eq!(c.0.join().unwrap(), 0);
    }
}

#[test]
fn timeouts_nowait_and_sizes() {
    let q = ProcessQueue::<u32>::new(2).unwrap();
    assert_eq!(q.capacity(), 2);
    assert!(q.is_empty() && !q.is_full());
    let t = Instant::now();
    assert_eq!(q.get_timeout(Duration::from_millis(100)), Err(Timeout));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.get_nowait(), Err(Empty));
    q.put(1);
    q.put_nowait(2).unwrap();
    assert_eq!(q.len(), 2);
    assert!(q.is_full());
    assert_eq!(q.put_nowait(3).unwrap_err().into_inner(), 3);
    let t = Instant::now();
    assert_eq!(
        q.put_timeout(3, Duration::from_millis(100))
            .unwrap_err()
            .into_inner(),
        3
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.get(), 1);
    assert_eq!(q.get_nowait().unwrap(), 2);
    assert!(q.is_empty());
    assert_eq!(
        ProcessQueue::<u32>::new(0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn waiting_in_a_coroutine_yields_and_timeouts_cancel_cleanly() {
    let q = Arc::new(ProcessQueue::<u32>::new(1).unwrap());
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let ticker = {
        let (ticks, done) = (ticks.clone(), done.clone());
        moss::spawn(move || {
            while !done.get() {
                moss::sleep(Duration::from_millis(10));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    // moss::timeout cancels a get waiting for the read lock or for data; the
    // queue stays usable afterwards.
    let q2 = q.clone();
    let r = moss::spawn(move || moss::timeout(Duration::from_millis(50), || q2.get()));
    assert!(r.join().unwrap().is_err());
    let child = {
        let q = q.clone();
        start(move || {
            std::thread::sleep(Duration::from_millis(300));
            q.put(99);
        })
    };
    let getters: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            moss::spawn(move || q.get_timeout(Duration::from_secs(20)))
        })
        .collect();
    let waiter = moss::spawn({
        let q = q.clone();
        move || {
            moss::sleep(Duration::from_millis(500));
            q.put(100)
        }
    });
    let mut got: Vec<u32> = moss::join_all(getters)
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    waiter.join().unwrap();
    done.set(true);
    ticker.join().unwrap();
    got.sort();
    assert_eq!(got, vec![99, 100]);
    assert!(
        ticks.get() >= 5,
        "hub blocked while waiting: {} ticks",
        ticks.get()
    );
    assert_eq!(child.0.join().unwrap(), 0);
}

#[test]
fn checked_forms_report_errors_as_io_errors() {
    let q = ProcessQueue::<u32>::new(1).unwrap();
    assert_eq!(
        q.checked_get(Some(Duration::ZERO)).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(
        q.checked_get(Some(Duration::from_millis(20)))
            .unwrap_err()
            .kind(),
        ErrorKind::TimedOut
    );
    q.checked_put(5, None).unwrap();
    assert_eq!(
        q.checked_put(6, Some(Duration::ZERO)).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(q.checked_get(None).unwrap(), 5);
    // postcard cannot encode a sequence of unknown length.
    struct Unsized;
    impl serde::Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            s.serialize_seq(None)?.end()
        }
    }
    impl<'de> serde::Deserialize<'de> for Unsized {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unsized)
        }
    }
    let bad = ProcessQueue::<Unsized>::new(1).unwrap();
    assert_eq!(
        bad.checked_put(Unsized, None).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(bad.is_empty());
}

/// The payload of item `k` of putter `i`: a length and bytes that depend on
/// both, so a torn, mixed or repeated item is noticed.
fn kill_payload(i: u32, k: u32) -> Vec<u8> {
    let len = (i as usize * 131 + k as usize * 977) % 3000;
    (0..len)
        .map(|n| (n as u32 ^ i ^ k.rotate_left(7)) as u8)
        .collect()
}

/// Putters SIGKILLed at random points of their puts (their items are small,
/// so each write of a frame is all or nothing), while the parent takes the
/// items: every item arrives whole and once, in each putter's order, the
/// last one maybe missing; the queue never breaks (no putter died in the
/// middle of an item's bytes), and nothing hangs.
#[test]
fn putters_killed_at_random_points_never_tear_or_break_the_queue() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let q = Arc::new(ProcessQueue::<(u32, u32, Vec<u8>)>::new(8).unwrap());
    let mut got = 0;
    for i in 0..200u32 {
        let putter = {
            let q = q.clone();
            start(move || {
                for k in 0.. {
                    q.put((i, k, kill_payload(i, k)));
                }
            })
        };
        let take = |k: &mut u32, limit: Duration| loop {
            match q.checked_get(Some(limit)) {
                Ok((pi, pk, p)) => {
                    assert_eq!((pi, pk), (i, *k), "iteration {i} (seed {seed})");
                    assert!(p == kill_payload(i, pk), "torn item {i}/{pk} (seed {seed})");
                    *k += 1;
                }
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => return,
                Err(e) => panic!("iteration {i} (seed {seed}): {e}"),
            }
        };
        let mut k = 0;
        if next(2) == 0 {
            take(&mut k, Duration::from_micros(next(3000)));
        }
        moss::sleep(Duration::from_micros(next(3000)));
        putter.kill().unwrap();
        putter.join().unwrap();
        // The putter is gone: what it wrote is in the pipe.
        take(&mut k, Duration::from_millis(20));
        got += k;
        assert!(q.is_empty(), "iteration {i}: {} left", q.len());
    }
    println!("{got} items");
    assert!(got > 0);
}
