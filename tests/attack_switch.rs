//! The switch path under attack: a coroutine that only yields is killed,
//! timed out and killed again while it unwinds; wakes from other threads
//! race its yields; greenlets switch between its yields; the hub's loop
//! keeps order when yields, parks and finishes interleave.

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use moss::greenlet::Greenlet;

/// Yields until `stop`, counting its yields in `n`.
fn yielder(n: Rc<Cell<u64>>, stop: Rc<Cell<bool>>) -> moss::JoinHandle<()> {
    moss::spawn(move || {
        while !stop.get() {
            n.set(n.get() + 1);
            moss::yield_now();
        }
    })
}

#[test]
fn a_coroutine_that_only_yields_is_killed_and_unwound() {
    let _wd = util::watchdog("kill a yielder", Duration::from_secs(60));
    let drops = util::DropCounter::new();
    let (d, n) = (drops.token(), Rc::new(Cell::new(0u64)));
    let n2 = n.clone();
    let h = moss::spawn(move || {
        let _d = d;
        loop {
            n2.set(n2.get() + 1);
            moss::yield_now();
        }
    });
    // It runs (and yields) a while before the kill reaches it.
    while n.get() < 1000 {
        moss::yield_now();
    }
    h.kill();
    assert_eq!(drops.drops(), 1, "its locals were dropped by the unwind");
    let at_kill = n.get();
    // Nothing of it runs any more.
    for _ in 0..100 {
        moss::yield_now();
    }
    assert_eq!(n.get(), at_kill);
}

#[test]
fn a_join_of_a_yielder_killed_by_a_third_coroutine_says_killed() {
    let _wd = util::watchdog("killed by a peer", Duration::from_secs(60));
    let (n, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    // Other yielders keep the run queue full around the victim.
    let others: Vec<_> = (0..3).map(|_| yielder(n.clone(), stop.clone())).collect();
    let victim = moss::spawn(|| {
        loop {
            moss::yield_now();
        }
    });
    let victim = Rc::new(RefCell::new(Some(victim)));
    let v = victim.clone();
    let n2 = n.clone();
    let killer = moss::spawn(move || {
        while n2.get() < 300 {
            moss::yield_now();
        }
        let h = v.borrow_mut().take().unwrap();
        h.kill();
        h.join()
    });
    let r = killer.join().unwrap();
    assert!(r.unwrap_err().is_killed());
    stop.set(true);
    for h in others {
        h.join().unwrap();
    }
}

#[test]
fn a_timeout_ends_a_loop_of_yields() {
    let _wd = util::watchdog("timeout of yields", Duration::from_secs(60));
    let (n, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    let peer = yielder(n.clone(), stop.clone());
    let h = moss::spawn(|| {
        let mine = Cell::new(0u64);
        let r = moss::timeout(Duration::from_millis(20), || {
            loop {
                mine.set(mine.get() + 1);
                moss::yield_now();
            }
        });
        (r.is_err(), mine.get())
    });
    let (elapsed, mine) = h.join().unwrap();
    assert!(elapsed, "the timeout fired");
    assert!(mine > 0);
    stop.set(true);
    peer.join().unwrap();
    assert!(n.get() > 0, "the peer ran meanwhile");
}

/// Yields in its destructor: run while the coroutine unwinds from a kill.
struct YieldsOnDrop(Rc<Cell<u32>>);

impl Drop for YieldsOnDrop {
    fn drop(&mut self) {
        for _ in 0..10 {
            moss::yield_now();
            self.0.set(self.0.get() + 1);
        }
    }
}

#[test]
fn a_second_kill_while_a_yielder_unwinds_does_not_abort() {
    if util::in_child("second_kill_while_unwinding") {
        let yields = Rc::new(Cell::new(0u32));
        let y = yields.clone();
        let h = Rc::new(moss::spawn(move || {
            let _g = YieldsOnDrop(y);
            loop {
                moss::yield_now();
            }
        }));
        moss::yield_now();
        let h2 = h.clone();
        // Kills again while the first kill's unwind yields in the destructor.
        let second = moss::spawn(move || {
            moss::yield_now();
            h2.kill();
        });
        h.kill();
        second.join().unwrap();
        let h = Rc::try_unwrap(h).ok().unwrap();
        assert!(h.join().unwrap_err().is_killed());
        assert_eq!(yields.get(), 10, "the destructor ran to its end");
        return;
    }
    util::passes_in_child("second_kill_while_unwinding");
}

#[test]
fn wakes_from_other_threads_race_yields_and_none_is_lost() {
    let _wd = util::watchdog("cross-thread wakes", Duration::from_secs(120));
    const N: u32 = 20_000;
    let (tx, rx) = moss::sync::channel::<u32>();
    let (n, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    let yielders: Vec<_> = (0..2).map(|_| yielder(n.clone(), stop.clone())).collect();
    let senders: Vec<_> = (0..2)
        .map(|k| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    tx.send(k * N + i).unwrap();
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    // The receiver parks whenever the channel is empty: each item that finds
    // it parked is a wake from another thread, landing between yields.
    let receiver = moss::spawn(move || {
        let mut seen = vec![false; 2 * N as usize];
        while let Ok(v) = rx.recv() {
            assert!(!std::mem::replace(&mut seen[v as usize], true), "{v} twice");
        }
        seen.iter().filter(|s| **s).count()
    });
    assert_eq!(receiver.join().unwrap(), 2 * N as usize);
    for s in senders {
        s.join().unwrap();
    }
    stop.set(true);
    for h in yielders {
        h.join().unwrap();
    }
    assert!(n.get() > 0);
}

#[test]
fn a_coroutine_yields_between_switches_to_its_greenlets() {
    let _wd = util::watchdog("greenlets and yields", Duration::from_secs(60));
    let (n, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    let peer = yielder(n.clone(), stop.clone());
    let h = moss::spawn(move || {
        let g = Greenlet::new(|mut v: u32| {
            loop {
                // Others are ready: a yield from the greenlet is refused,
                // and the greenlet goes on.
                let r = std::panic::catch_unwind(moss::yield_now);
                assert!(r.is_err(), "a yield in a coroutine's greenlet");
                let parent = moss::greenlet::current::<u32>().parent();
                v = parent.expect("a parent").switch(v + 1);
            }
        });
        let mut v = 0;
        for _ in 0..200 {
            v = g.switch(v);
            // Back on the coroutine's own stack: it yields again.
            moss::yield_now();
        }
        v
    });
    assert_eq!(h.join().unwrap(), 200);
    stop.set(true);
    peer.join().unwrap();
    assert!(n.get() >= 200, "the peer ran between the switches");
}

#[test]
fn yields_parks_and_finishes_interleave_in_order() {
    let _wd = util::watchdog("interleave", Duration::from_secs(60));
    // Each coroutine yields a few times, parks on a sleep, yields again and
    // returns; many at once, so the run queue grows, wraps and rotates.
    let log = Rc::new(RefCell::new(Vec::new()));
    let hs: Vec<_> = (0..300u32)
        .map(|i| {
            let log = log.clone();
            moss::spawn(move || {
                for _ in 0..(i % 5) {
                    moss::yield_now();
                }
                moss::sleep(Duration::from_millis(u64::from(i % 3)));
                for _ in 0..(i % 7) {
                    moss::yield_now();
                }
                log.borrow_mut().push(i);
                i
            })
        })
        .collect();
    let r: Vec<u32> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(r, (0..300).collect::<Vec<_>>());
    let mut l = log.borrow().clone();
    l.sort_unstable();
    assert_eq!(l, (0..300).collect::<Vec<_>>(), "each finished once");
}
