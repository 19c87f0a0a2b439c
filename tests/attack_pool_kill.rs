//! ProcessPool and ProcessQueue callers killed or timed out at their
//! blocking points, and processes SIGKILLed in the middle of a transfer:
//! afterwards every call gets its own result (never another call's), items
//! arrive whole or the queue reports itself broken, and nothing hangs.
#![cfg(target_os = "linux")]

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::{Process, ProcessPool, ProcessQueue};

/// Sleeps `ms` milliseconds in the worker, then returns `ms` tagged.
fn slow_tag(ms: u64) -> (u64, Vec<u8>) {
    std::thread::sleep(Duration::from_millis(ms));
    (ms, vec![ms as u8; 256 << 10])
}

/// A pool of one worker, so a result left behind by a cancelled call
/// would be the next call's to take: each call must get its own.
#[test]
fn cancelled_applies_and_maps_leave_no_result_behind() {
    util::isolated(
        "cancelled_applies_and_maps_leave_no_result_behind",
        Duration::from_secs(90),
        || {
            let pool = Arc::new(ProcessPool::new(1).unwrap());
            for round in 0..6u64 {
                // Killed while its task runs in the worker.
                let p = pool.clone();
                let h = moss::spawn(move || p.apply(slow_tag, 50 + round));
                moss::sleep(Duration::from_millis(10 + round * 7));
                h.kill();
                assert!(h.join().unwrap_err().is_killed());
                // Timed out while its task runs.
                let r = moss::timeout(Duration::from_millis(5 + round * 9), || {
                    pool.apply(slow_tag, 60 + round)
                });
                assert!(r.is_err(), "round {round}: the timeout fired");
                // A map killed part of the way.
                let p = pool.clone();
                let h = moss::spawn(move || p.map(slow_tag, [1, 2, 3, 4, 5, 6]));
                moss::sleep(Duration::from_millis(3 + round * 2));
                h.kill();
                assert!(h.join().unwrap_err().is_killed());
                // The next calls get exactly their own results.
                let (ms, bytes) = pool.apply(slow_tag, 7).unwrap();
                assert_eq!((ms, bytes.len()), (7, 256 << 10), "round {round}");
                assert!(bytes.iter().all(|&b| b == 7), "round {round}");
                let all = pool.map(slow_tag, [9, 8, 7]).unwrap();
                let tags: Vec<u64> = all.iter().map(|(ms, _)| *ms).collect();
                assert_eq!(tags, [9, 8, 7], "round {round}");
                for (ms, bytes) in &all {
                    assert!(bytes.iter().all(|&b| b == *ms as u8), "round {round}");
                }
            }
            pool.close();
            pool.join();
        },
    );
}

/// Items of 256 KiB: the queue's capacity of them fits in the data pipe,
/// so a put never waits in the middle of an item for a reader. (One
/// larger than the pipe is written while a consumer reads it: its put
/// waits for a consumer, past its timeout once it has begun the item.)
const ITEM: usize = 256 << 10;

/// A consumer process SIGKILLed while it takes items (in the middle of
/// one, or between two): the parent's timed puts return within bounds
/// (done, timed out because nobody reads any more, or the queue reports
/// itself broken), and the parent's own gets then fail "broken", time out,
/// or get whole items.
#[test]
fn a_consumer_killed_mid_item_never_hangs_the_producer() {
    util::isolated(
        "a_consumer_killed_mid_item_never_hangs_the_producer",
        Duration::from_secs(120),
        || {
            for round in 0..5u64 {
                let q = Arc::new(ProcessQueue::<Vec<u8>>::new(2).unwrap());
                let c = {
                    let q = q.clone();
                    util::start(move || {
                        // Reads slowly: each get is followed by a nap.
                        loop {
                            let v = q.get();
                            assert!(v.iter().all(|&b| b == v[0]));
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    })
                };
                let killer = {
                    let pid = c.pid();
                    moss::spawn(move || {
                        moss::sleep(Duration::from_millis(5 + round * 9));
                        // SAFETY: our unreaped child (reaped by `c`'s drop).
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    })
                };
                let t = Instant::now();
                for i in 0..60u8 {
                    match q.checked_put(vec![i; ITEM], Some(Duration::from_millis(500))) {
                        Ok(()) => {}
                        Err(e) if e.to_string().contains("broken") => break,
                        // Nobody reads any more: the queue filled up.
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                        Err(e) => panic!("round {round}: put {i}: {e}"),
                    }
                }
                assert!(t.elapsed() < Duration::from_secs(60), "round {round}");
                killer.join().unwrap();
                drop(c);
                // What is left is whole, or the queue says it is broken.
                loop {
                    match q.checked_get(Some(Duration::from_millis(200))) {
                        Ok(v) => {
                            assert_eq!(v.len(), ITEM, "round {round}");
                            assert!(v.iter().all(|&b| b == v[0]), "round {round}");
                        }
                        Err(e) if e.to_string().contains("broken") => break,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                        Err(e) => panic!("round {round}: get: {e}"),
                    }
                }
            }
        },
    );
}

/// A child producer SIGKILLed while it waits for a slot of a full queue
/// (it holds nothing yet): the queue keeps its capacity and order.
#[test]
fn a_producer_killed_waiting_for_room_takes_nothing_with_it() {
    util::isolated(
        "a_producer_killed_waiting_for_room_takes_nothing_with_it",
        Duration::from_secs(60),
        || {
            let q = Arc::new(ProcessQueue::<u32>::new(2).unwrap());
            q.put(1);
            q.put(2);
            let blocked = {
                let q = q.clone();
                Process::new(move || q.put(99)).start().unwrap()
            };
            moss::sleep(Duration::from_millis(100));
            blocked.kill().unwrap();
            blocked.join().unwrap();
            assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(1));
            assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(2));
            q.put(3);
            q.put(4);
            assert!(q.put_timeout(5, Duration::from_millis(50)).is_err(), "full");
            assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(3));
            assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(4));
            assert!(q.get_timeout(Duration::from_millis(50)).is_err());
        },
    );
}
