//! Hooked sleeps, cancellation inside hooked calls, and hooked calls in
//! greenlets, after `patch_all`.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

mod util;

use std::cell::Cell;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[test]
fn fifty_std_sleeps_overlap_and_plain_threads_still_sleep() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let plain = std::thread::spawn(|| {
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            t.elapsed()
        });
        let t = Instant::now();
        let hs: Vec<_> = (0..50)
            .map(|i| {
                moss::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    i
                })
            })
            .collect();
        let sum: u32 = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
        let el = t.elapsed();
        assert_eq!(sum, (0..50).sum());
        assert!(el >= Duration::from_millis(200), "{el:?}");
        assert!(
            el < Duration::from_secs(3),
            "sleeps did not overlap: {el:?}"
        );
        assert!(plain.join().unwrap() >= Duration::from_millis(200));
    });
}

#[test]
fn cancellation_inside_a_hooked_call() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (a, _b) = UnixStream::pair().unwrap();
        // timeout around a blocking std read reports Elapsed.
        let t = Instant::now();
        let r = moss::timeout(Duration::from_millis(100), || (&a).read(&mut [0u8; 4]));
        assert!(r.is_err(), "expected Elapsed, got {r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        // The thread's root is usable afterwards (nothing pending).
        moss::sleep(Duration::from_millis(1));

        // kill: the read fails with ECANCELED (std does not retry it); the
        // kill is delivered at the next moss blocking point.
        let seen = Rc::new(Cell::new(None));
        let s2 = seen.clone();
        let (c, _d) = UnixStream::pair().unwrap();
        let victim = moss::spawn(move || {
            let e = (&c).read(&mut [0u8; 4]).unwrap_err();
            s2.set(e.raw_os_error());
            moss::sleep(Duration::from_secs(10));
            unreachable!("the kill is delivered at the sleep");
        });
        moss::sleep(Duration::from_millis(50));
        victim.kill();
        assert_eq!(seen.get(), Some(libc::ECANCELED));
        assert!(victim.join().unwrap_err().is_killed());

        // Killed inside a hooked call, then returning without another moss
        // blocking point: the kill still decides the outcome.
        let (e, _f) = UnixStream::pair().unwrap();
        let quitter = moss::spawn(move || (&e).read(&mut [0u8; 4]).map_err(|e| e.raw_os_error()));
        moss::sleep(Duration::from_millis(50));
        quitter.kill();
        assert!(quitter.join().unwrap_err().is_killed());

        // A killed std sleep ends early instead of spinning in std's retry loop.
        let t = Instant::now();
        let sleeper = moss::spawn(|| {
            std::thread::sleep(Duration::from_secs(10));
            moss::yield_now();
        });
        moss::sleep(Duration::from_millis(50));
        sleeper.kill();
        assert!(sleeper.join().unwrap_err().is_killed());
        assert!(t.elapsed() < Duration::from_secs(2));

        // timeout around a std sleep.
        let r = moss::timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(10))
        });
        assert!(r.is_err());
    });
}

#[test]
fn hooked_call_in_a_greenlet_driven_by_a_coroutine_blocks_the_thread_instead() {
    util::on_patched_thread(Duration::from_secs(20), || {
        // A greenlet cannot suspend the coroutine that drives it: a hooked
        // sleep there blocks the thread for its duration, as unpatched code
        // would, instead of aborting.
        let h = moss::spawn(|| {
            let g = moss::greenlet::Greenlet::new(|v: u32| {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(30));
                v + t.elapsed().as_millis().min(1000) as u32
            });
            g.switch(1)
        });
        let v = h.join().unwrap();
        assert!((31..1000).contains(&v), "{v}");
    });
}
