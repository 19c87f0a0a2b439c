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
    let (seed, mut next) = util::clock_rng();
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

/// A pipe of fixed-size records from the children to the parent: each
/// record one `write` (smaller than `PIPE_BUF`, so all or nothing, also for
/// a writer killed meanwhile). The read end is non-blocking.
struct Reports {
    r: libc::c_int,
    w: libc::c_int,
    pending: Vec<u8>,
}

impl Reports {
    fn new() -> Reports {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
        // SAFETY: `fds[0]` is the read end just created, owned here.
        assert_eq!(
            unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK) },
            0
        );
        Reports {
            r: fds[0],
            w: fds[1],
            pending: Vec::new(),
        }
    }

    fn send(&self, rec: [u32; 3]) {
        let bytes: Vec<u8> = rec.iter().flat_map(|v| v.to_le_bytes()).collect();
        // SAFETY: `bytes` is valid for its length; `w` is open in this process.
        let n = unsafe { libc::write(self.w, bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, 12);
    }

    /// Every record sent so far and not yet returned.
    fn take(&mut self) -> Vec<[u32; 3]> {
        let mut buf = [0u8; 12 * 512];
        loop {
            // SAFETY: `buf` is valid for writes of its length; `r` is open.
            let n = unsafe { libc::read(self.r, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            self.pending.extend_from_slice(&buf[..n as usize]);
        }
        let whole = self.pending.len() / 12 * 12;
        let recs = self.pending[..whole]
            .chunks_exact(12)
            .map(|c| {
                let v = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
                [v(0), v(4), v(8)]
            })
            .collect();
        self.pending.drain(..whole);
        recs
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        // SAFETY: both descriptors are owned by this value.
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

/// Many putter and getter processes at once, SIGKILLed at random points
/// (while they wait for a lock, hold it, wait for room or an item, or copy
/// bytes) and replaced: every item a getter reports is whole, reported
/// once, and each getter sees each putter's items in order; and the queue
/// never hangs: after the storm it is either whole and works (a put and a
/// get within seconds), or it failed with its "broken" error because a
/// process died inside a read or write of an item's bytes. A lock or a slot
/// lost by a process killed between two steps of taking or giving it back
/// leaves the queue hung: the final put or get times out.
#[test]
fn putters_and_getters_killed_at_random_points_keep_the_queue_whole() {
    const NAME: &str = "putters_and_getters_killed_at_random_points_keep_the_queue_whole";
    if !util::in_child(NAME) {
        return util::passes_in_child(NAME);
    }
    let (seed, mut next) = util::clock_rng();
    let (mut broken, mut whole, mut items) = (0, 0, 0usize);
    for trial in 0..6 {
        let q = Arc::new(ProcessQueue::<(u32, u32, Vec<u8>)>::new(4).unwrap());
        let reports = Arc::new(std::sync::Mutex::new(Reports::new()));
        let mut ids = 0u32;
        let putter = |ids: &mut u32| {
            let (q, i) = (q.clone(), *ids);
            *ids += 1;
            start(move || {
                for k in 0.. {
                    q.put((i, k, kill_payload(i, k)));
                }
            })
        };
        let getter = |g: u32| {
            let (q, reports) = (q.clone(), reports.clone());
            start(move || {
                let reports = reports.lock().unwrap();
                loop {
                    let (i, k, p) = q.get();
                    let ok = p == kill_payload(i, k);
                    reports.send([g, i, k | (u32::from(!ok) << 31)]);
                }
            })
        };
        let mut putters: Vec<_> = (0..4).map(|_| putter(&mut ids)).collect();
        let mut getters: Vec<_> = (0..3).map(|g| (g, getter(g))).collect();
        let mut gids = 3;
        for _ in 0..16 {
            moss::sleep(Duration::from_micros(next(30_000)));
            if next(4) == 0 {
                let slot = next(getters.len() as u64) as usize;
                getters[slot].1.kill().unwrap();
                getters[slot] = (gids, getter(gids));
                gids += 1;
            } else {
                let slot = next(putters.len() as u64) as usize;
                putters[slot].kill().unwrap();
                putters[slot] = putter(&mut ids);
            }
        }
        for p in &putters {
            p.kill().unwrap();
        }
        for (_, g) in &getters {
            g.kill().unwrap();
        }
        drop(putters);
        drop(getters);
        // What the getters took, then what is left: taken by the parent.
        let mut seen = std::collections::HashSet::new();
        let mut last = std::collections::HashMap::new();
        let mut note = |g: u32, i: u32, k: u32| {
            assert!(
                k >> 31 == 0,
                "trial {trial}: torn item {i}/{} (seed {seed})",
                k & !(1 << 31)
            );
            assert!(
                seen.insert((i, k)),
                "trial {trial}: item {i}/{k} twice (seed {seed})"
            );
            if let Some(prev) = last.insert((g, i), k) {
                assert!(
                    prev < k,
                    "trial {trial}: getter {g} took {i}/{k} after {i}/{prev} (seed {seed})"
                );
            }
        };
        for [g, i, k] in reports.lock().unwrap().take() {
            note(g, i, k);
        }
        let outcome = loop {
            match q.checked_get(Some(Duration::from_secs(1))) {
                Ok((i, k, p)) => {
                    assert!(
                        p == kill_payload(i, k),
                        "trial {trial}: torn item {i}/{k} (seed {seed})"
                    );
                    note(u32::MAX, i, k);
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    break q
                        .checked_put((u32::MAX, 0, vec![7; 100]), Some(Duration::from_secs(10)));
                }
                Err(e) => break Err(e),
            }
        };
        items += seen.len();
        match outcome {
            Ok(()) => {
                let (i, k, p) = q
                    .checked_get(Some(Duration::from_secs(10)))
                    .unwrap_or_else(|e| {
                        panic!("trial {trial}: the queue hangs after the storm: {e} (seed {seed})")
                    });
                assert_eq!((i, k, p), (u32::MAX, 0, vec![7; 100]));
                assert!(
                    q.is_empty(),
                    "trial {trial}: {} left (seed {seed})",
                    q.len()
                );
                whole += 1;
            }
            Err(e) => {
                assert!(
                    e.to_string().contains("ProcessQueue is broken"),
                    "trial {trial}: the queue hangs after the storm: {e} (seed {seed})"
                );
                broken += 1;
            }
        }
    }
    println!("{whole} trials whole, {broken} broken, {items} items");
    assert!(items > 0);
}

/// A put waiting for room holds the writers' lock: killed there, it gives
/// the lock back and counts nothing; a put waiting behind it for the lock
/// then waits for room itself and gives its item back at its deadline; a
/// put that does not wait says "full" at once, even while a put waits for
/// room; and a get makes room for the next put.
#[test]
fn puts_killed_or_timed_out_waiting_for_room_take_nothing() {
    let _wd = util::watchdog("puts waiting for room", Duration::from_secs(30));
    let q = Arc::new(ProcessQueue::<u32>::new(1).unwrap());
    q.put(1);
    let blocked = {
        let q = q.clone();
        moss::spawn(move || q.put(2))
    };
    util::until_parked(blocked.id());
    let behind = {
        let q = q.clone();
        moss::spawn(move || q.put_timeout(3, Duration::from_millis(600)))
    };
    util::until_parked(behind.id());
    assert_eq!(q.put_nowait(4).unwrap_err().0, 4);
    blocked.kill();
    assert!(blocked.join().is_err());
    assert_eq!(behind.join().unwrap().unwrap_err().0, 3);
    assert_eq!(q.len(), 1);
    assert_eq!(q.get_nowait().unwrap(), 1);
    q.put_nowait(5).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 5);
    assert!(q.is_empty());
}
