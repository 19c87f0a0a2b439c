//! A stack that cannot be mapped is reported by `Builder::spawn`, not by a
//! crash, and a coroutine that finds none when it first runs never runs.
//! Each case runs in a child process whose address space is limited
//! (RLIMIT_AS), so the limit never affects other tests.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Limits this process's address space to what it maps now plus 256 MiB.
fn limit_address_space() {
    let vm_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    let limit = (vm_kib + 256 * 1024) * 1024;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit with a valid struct; lowering our own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
}

#[test]
fn mmap_failure_is_an_io_error_from_builder_spawn() {
    util::isolated(
        "mmap_failure_is_an_io_error_from_builder_spawn",
        Duration::from_secs(60),
        || {
            limit_address_space();
            let err = moss::Builder::new()
                .stack_size(1 << 30)
                .spawn(|| ())
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "{err}");
            // Small stacks still work.
            assert!(
                moss::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(|| 1)
                    .unwrap()
                    .join()
                    .is_ok()
            );
        },
    );
}

/// Sleeps and spawns in its destructor, then records what it got.
struct BlocksInDrop(Arc<AtomicU32>);

impl Drop for BlocksInDrop {
    fn drop(&mut self) {
        moss::sleep(Duration::from_millis(1));
        let got = moss::spawn(|| 7).join().unwrap();
        self.0.store(got, Ordering::SeqCst);
    }
}

/// Spawns a coroutine with a 1 GiB stack that sleeps, and one that only
/// drops `guard`, then limits the address space: one 1 GiB stack is mapped
/// at the first spawn and serves both checks; the sleeper takes it when it
/// runs, so the other finds none.
fn sleeper_and_stackless<G: 'static>(guard: G) -> (moss::JoinHandle<()>, moss::JoinHandle<()>) {
    let spawn = |f: Box<dyn FnOnce()>| moss::Builder::new().stack_size(1 << 30).spawn(f).unwrap();
    let sleeper = spawn(Box::new(|| moss::sleep(Duration::from_secs(60))));
    let stackless = spawn(Box::new(move || drop(guard)));
    (sleeper, stackless)
}

/// Sleeps in its destructor, then panics.
struct PanicsInDrop;

impl Drop for PanicsInDrop {
    fn drop(&mut self) {
        moss::sleep(Duration::from_millis(1));
        panic!("a destructor that panics");
    }
}

/// A coroutine that finds no stack when it first runs never runs, and its
/// closure is dropped by the hub loop, where nothing can block (a `sleep`
/// there used to panic, "park from Parked"): its destructors run in a
/// coroutine of their own, may sleep and spawn, and are over when the join
/// reports the error. A destructor that panics there ends the same way.
#[test]
fn a_closure_dropped_for_want_of_a_stack_may_block_in_its_destructor() {
    util::isolated(
        "a_closure_dropped_for_want_of_a_stack_may_block_in_its_destructor",
        Duration::from_secs(60),
        || {
            let got = Arc::new(AtomicU32::new(0));
            let (a, b) = sleeper_and_stackless(BlocksInDrop(got.clone()));
            let panics = PanicsInDrop;
            let c = moss::Builder::new()
                .stack_size(1 << 30)
                .spawn(move || drop(panics))
                .unwrap();
            limit_address_space();
            let e = b.join().unwrap_err();
            assert!(e.to_string().contains("could not start"), "{e}");
            let source = std::error::Error::source(&e).expect("the mmap error");
            let io = source
                .downcast_ref::<std::io::Error>()
                .expect("an io::Error");
            assert_eq!(io.raw_os_error(), Some(libc::ENOMEM), "{io}");
            assert_eq!(
                got.load(Ordering::SeqCst),
                7,
                "the destructor ran to its end"
            );
            let e = c.join().unwrap_err();
            assert!(e.to_string().contains("could not start"), "{e}");
            a.kill();
        },
    );
}

/// The same when the thread exits before the coroutine that would drop the
/// closure has run: the hub's shutdown drops it on the root, where its
/// destructor may block as well.
#[test]
fn a_closure_dropped_for_want_of_a_stack_at_thread_exit_may_block_too() {
    util::isolated(
        "a_closure_dropped_for_want_of_a_stack_at_thread_exit_may_block_too",
        Duration::from_secs(60),
        || {
            let got = Arc::new(AtomicU32::new(0));
            let guard = BlocksInDrop(got.clone());
            std::thread::spawn(move || {
                let (_sleeper, _stackless) = sleeper_and_stackless(guard);
                limit_address_space();
                // Both run: the second finds no stack, and the coroutine
                // that is to drop its closure is queued after this root.
                moss::yield_now();
            })
            .join()
            .unwrap();
            assert_eq!(
                got.load(Ordering::SeqCst),
                7,
                "the destructor ran to its end"
            );
        },
    );
}

/// Many coroutines that find no stack at their first run, each awaited by
/// several coroutines at once (a kill, a poll under a timeout, a check
/// after a yield) and linked: each ends with the "could not start" error
/// (the kills come after the failed start), every link runs once, every
/// closure is dropped once, and the hub goes on.
#[test]
fn many_stackless_coroutines_with_several_waiters_each() {
    util::isolated(
        "many_stackless_coroutines_with_several_waiters_each",
        Duration::from_secs(60),
        || {
            use std::cell::Cell;
            use std::rc::Rc;
            const N: usize = 50;
            let drops = util::DropCounter::new();
            let links = Rc::new(Cell::new(0));
            let spawn =
                |f: Box<dyn FnOnce()>| moss::Builder::new().stack_size(1 << 30).spawn(f).unwrap();
            let sleeper = spawn(Box::new(|| moss::sleep(Duration::from_secs(60))));
            let stackless: Vec<Rc<moss::JoinHandle<()>>> = (0..N)
                .map(|_| {
                    let d = drops.token();
                    let h = spawn(Box::new(move || drop(d)));
                    let l = links.clone();
                    h.link(move |r| {
                        assert!(r.is_err());
                        l.set(l.get() + 1);
                    });
                    Rc::new(h)
                })
                .collect();
            limit_address_space();
            let mut waiters = Vec::new();
            for h in &stackless {
                for kind in 0..3 {
                    let h = h.clone();
                    waiters.push(moss::spawn(move || match kind {
                        0 => {
                            h.kill();
                            true
                        }
                        1 => moss::timeout(Duration::from_secs(20), || {
                            while !h.is_finished() {
                                moss::sleep(Duration::from_millis(1));
                            }
                        })
                        .is_ok(),
                        _ => {
                            moss::yield_now();
                            h.is_finished() || {
                                moss::sleep(Duration::from_millis(5));
                                h.is_finished()
                            }
                        }
                    }));
                }
            }
            assert!(moss::join_all(waiters).into_iter().all(|r| r.unwrap()));
            for h in stackless {
                let h = Rc::try_unwrap(h).unwrap_or_else(|_| panic!("shared"));
                let e = h.join().unwrap_err();
                assert!(e.to_string().contains("could not start"), "{e}");
            }
            assert_eq!(drops.drops(), N, "each closure dropped once");
            // Links of a coroutine that never ran run in coroutines of
            // their own, soon after.
            util::until("the links", Duration::from_secs(20), || links.get() >= N);
            moss::sleep(Duration::from_millis(10));
            assert_eq!(links.get(), N, "each link ran once");
            sleeper.kill();
            assert_eq!(moss::spawn(|| 5).join().unwrap(), 5);
        },
    );
}

/// The mappings of this process (stacks are mapped one chunk at a time).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Spawning maps no stack per coroutine: 10,000 spawns, one at a time and
/// in batches of 100, after a warm-up with the same pattern, map nothing
/// new (finished coroutines give their stacks back for the next ones).
#[test]
fn spawns_reuse_stacks() {
    util::isolated("spawns_reuse_stacks", Duration::from_secs(120), || {
        let round = || {
            for _ in 0..50 {
                moss::spawn(|| ()).join().unwrap();
                let batch: Vec<_> = (0..100).map(|i| moss::spawn(move || i)).collect();
                assert_eq!(moss::join_all(batch).len(), 100);
            }
        };
        round();
        let before = mappings();
        round();
        round();
        assert_eq!(mappings(), before, "no new mapping for 10,100 spawns");
    });
}

/// Sleeps 100 ms in its destructor, then records that it is over.
struct SleepsInDrop(Arc<AtomicU32>);

impl Drop for SleepsInDrop {
    fn drop(&mut self) {
        moss::sleep(Duration::from_millis(100));
        self.0.store(7, Ordering::SeqCst);
    }
}

/// A coroutine that never ran has no result while its closure's destructor
/// is still blocked: a join or a link that comes meanwhile (after the failed
/// start, or while the killer of a coroutine not yet started is in the
/// destructor) waits for it to end, as for every coroutine.
#[test]
fn a_join_or_link_during_an_unstarted_coroutines_destructor_waits_for_it() {
    util::isolated(
        "a_join_or_link_during_an_unstarted_coroutines_destructor_waits_for_it",
        Duration::from_secs(60),
        || {
            use std::cell::Cell;
            use std::rc::Rc;
            // Killed before its start, by a coroutine that is then in the
            // destructor.
            let got = Arc::new(AtomicU32::new(0));
            let guard = SleepsInDrop(got.clone());
            let c = Rc::new(moss::spawn_later(Duration::from_secs(60), move || {
                drop(guard)
            }));
            let killer = moss::spawn({
                let c = c.clone();
                move || c.kill()
            });
            util::until_parked(killer.id());
            assert!(c.is_finished());
            let seen = Rc::new(Cell::new(None));
            let s = seen.clone();
            let g = got.clone();
            c.link(move |r| s.set(Some((r.is_err(), g.load(Ordering::SeqCst)))));
            killer.join().unwrap();
            util::until("the link", Duration::from_secs(20), || seen.get().is_some());
            assert_eq!(
                seen.get(),
                Some((true, 7)),
                "the link came after the destructor"
            );
            // No stack at its first run.
            let got = Arc::new(AtomicU32::new(0));
            let (a, b) = sleeper_and_stackless(SleepsInDrop(got.clone()));
            limit_address_space();
            while !b.is_finished() {
                moss::yield_now();
            }
            let e = b.join().unwrap_err();
            assert!(e.to_string().contains("could not start"), "{e}");
            assert_eq!(
                got.load(Ordering::SeqCst),
                7,
                "the join came after the destructor"
            );
            a.kill();
        },
    );
}
