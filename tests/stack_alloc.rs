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
