//! ProcessPool and ProcessQueue at their edges: closed stdio, tasks that
//! fork, callers whose thread exits, items cancelled in the middle of a
//! frame. Each case that could hang runs in a child process of this test
//! binary, bounded in time.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moss::pool::{Process, ProcessPool, ProcessQueue};

fn square(x: u64) -> u64 {
    x * x
}

fn print_and_square(x: u64) -> u64 {
    println!("a task printing to a closed stdout");
    x * x
}

fn slow_double(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x * 2
}

/// Runs `case` (a test of this binary) in a child process; it must exit 0
/// within `limit`.
fn in_child_ok(case: &str, limit: Duration) {
    let r = util::run_in_child(case, limit);
    assert!(
        r.success() && !r.timed_out,
        "{case}: {r:?}\n--- stderr ---\n{}",
        r.stderr
    );
}

/// Whether `fd` is open in this process.
fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the fd.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// With stdin and stdout closed, the pool's and the queue's fds must not
/// take numbers 0 and 1: a `println!` would write into the protocol. (The
/// thread's hub is made first: its own epoll and eventfd are not protocol
/// fds.)
#[test]
fn protocol_fds_stay_off_closed_stdio() {
    const CASE: &str = "protocol_fds_stay_off_closed_stdio";
    if util::in_child(CASE) {
        moss::yield_now();
        // SAFETY: this child process gives up its stdin and stdout; nothing
        // else in it owns them.
        unsafe {
            libc::close(0);
            libc::close(1);
        }
        let q = Arc::new(ProcessQueue::<u32>::new(2).unwrap());
        let pool = ProcessPool::new(1).unwrap();
        let child = {
            let q = q.clone();
            Process::new(move || q.put(7)).start().unwrap()
        };
        for fd in 0..2 {
            assert!(!is_open(fd), "fd {fd} was taken by a pool or queue fd");
        }
        assert_eq!(q.get_timeout(Duration::from_secs(20)), Ok(7));
        assert_eq!(child.join().unwrap(), 0);
        assert_eq!(pool.apply(print_and_square, 5).unwrap(), 25);
        // 1 MB of output from the parent must not disturb the pool either.
        for _ in 0..10_000 {
            println!("{}", "x".repeat(100));
        }
        assert_eq!(pool.apply(square, 6).unwrap(), 36);
        pool.close();
        pool.join();
        return;
    }
    in_child_ok(CASE, Duration::from_secs(60));
}

/// A task that forks, with both processes returning from it: only the
/// worker answers (the child used to write a second reply, which the
/// manager gave to the next task).
fn fork_and_return(x: u64) -> u64 {
    // SAFETY: the worker is single-threaded (forked from the manager
    // thread), so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        return x + 1000; // the child returns into the worker's loop
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    x * 2
}

#[test]
fn a_task_that_forks_is_answered_once() {
    let _wd = util::watchdog("a task that forks", Duration::from_secs(60));
    let pool = ProcessPool::new(1).unwrap();
    for i in 1..=3u64 {
        assert_eq!(pool.apply(fork_and_return, i).unwrap(), i * 2);
        assert_eq!(pool.apply(square, i + 10).unwrap(), (i + 10) * (i + 10));
    }
    pool.close();
    pool.join();
}

/// `apply_async` from a thread that exits without ever running its hub
/// again: its callback can never run. `join` and `terminate` must still
/// return, and the `AsyncResult` must hold the task's result. `slow` makes
/// the reply arrive after the thread has gone (the manager finishes the
/// result); otherwise it is there before the thread exits.
fn apply_async_from_an_exiting_thread(slow: bool) {
    let pool = ProcessPool::new(1).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let t = {
        let (pool, ran) = (pool.clone(), ran.clone());
        std::thread::spawn(move || {
            let f = if slow { slow_double } else { square };
            let r = pool.apply_async(f, 21, move |_| ran.store(true, Ordering::SeqCst));
            if !slow {
                // The reply arrives while this thread sleeps without its hub.
                std::thread::sleep(Duration::from_millis(300));
            }
            r
        })
    };
    let result = t.join().unwrap();
    let t0 = Instant::now();
    pool.join();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let want = if slow { 42 } else { 441 };
    assert_eq!(
        result.get_timeout(Duration::from_secs(10)).unwrap(),
        Ok(want)
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "the callback ran without its thread"
    );
    pool.terminate();
}

#[test]
fn apply_async_from_an_exiting_thread_reply_after_exit() {
    const CASE: &str = "apply_async_from_an_exiting_thread_reply_after_exit";
    if util::in_child(CASE) {
        apply_async_from_an_exiting_thread(true);
        return;
    }
    in_child_ok(CASE, Duration::from_secs(30));
}

#[test]
fn apply_async_from_an_exiting_thread_reply_before_exit() {
    const CASE: &str = "apply_async_from_an_exiting_thread_reply_before_exit";
    if util::in_child(CASE) {
        apply_async_from_an_exiting_thread(false);
        return;
    }
    in_child_ok(CASE, Duration::from_secs(30));
}

/// A callback on a live hub still runs before its result is ready, and a
/// thread that runs its hub before exiting runs its callbacks.
#[test]
fn apply_async_callbacks_still_run_on_live_hubs() {
    let _wd = util::watchdog("callbacks on live hubs", Duration::from_secs(60));
    let pool = ProcessPool::new(2).unwrap();
    let seen = Rc::new(Cell::new(0u64));
    let s = seen.clone();
    let r = pool.apply_async(square, 9, move |v| s.set(*v));
    assert_eq!(r.get(), Ok(81));
    assert_eq!(seen.get(), 81);
    let ran = Arc::new(AtomicBool::new(false));
    let t = {
        let (pool, ran) = (pool.clone(), ran.clone());
        std::thread::spawn(move || {
            let r = pool.apply_async(square, 3, move |_| ran.store(true, Ordering::SeqCst));
            moss::wait();
            r
        })
    };
    assert_eq!(t.join().unwrap().get(), Ok(9));
    assert!(ran.load(Ordering::SeqCst));
    pool.close();
    pool.join();
}

/// A put cancelled in the middle of an item larger than the pipe, whose
/// consumer is a coroutine of the same thread that starts only later: the
/// put used to block the whole thread in `poll(2)`, so the consumer never
/// ran. Now the unwinding put finishes its item by parking; the consumer
/// gets it whole and the queue stays usable.
#[test]
fn put_cancelled_mid_item_with_a_same_thread_consumer() {
    const CASE: &str = "put_cancelled_mid_item_with_a_same_thread_consumer";
    if util::in_child(CASE) {
        let q = Rc::new(ProcessQueue::<Vec<u8>>::new(2).unwrap());
        let item = vec![7u8; 4 << 20];
        let consumer = {
            let q = q.clone();
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(200));
                q.get()
            })
        };
        let t0 = Instant::now();
        let r = moss::timeout(Duration::from_millis(50), || q.put(item.clone()));
        assert!(r.is_err(), "the put should have been cancelled");
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t0.elapsed()
        );
        assert!(consumer.join().unwrap() == item, "the item arrived torn");
        q.put(vec![1, 2, 3]);
        assert_eq!(q.get(), vec![1, 2, 3]);
        assert_eq!(q.len(), 0);
        return;
    }
    in_child_ok(CASE, Duration::from_secs(30));
}

/// A get cancelled in the middle of an item whose producer is a coroutine
/// of the same thread (parked on the full pipe): the unwinding get reads
/// the item to its end (the producer runs meanwhile) and keeps it for the
/// next get, which returns it whole.
#[test]
fn get_cancelled_mid_item_with_a_same_thread_producer() {
    const CASE: &str = "get_cancelled_mid_item_with_a_same_thread_producer";
    if util::in_child(CASE) {
        let q = Rc::new(ProcessQueue::<Vec<u8>>::new(2).unwrap());
        let item = vec![9u8; 8 << 20];
        let producer = {
            let (q, item) = (q.clone(), item.clone());
            moss::spawn(move || q.put(item))
        };
        util::until_parked(producer.id());
        // Fires at the get's first wait: the pipe buffer is read at once,
        // then the get waits in the middle of the item.
        let r = moss::timeout(Duration::ZERO, || q.get());
        assert!(r.is_err(), "the get should have been cancelled");
        producer.join().unwrap();
        assert_eq!(q.len(), 1, "the item stays in the queue");
        assert!(q.get_nowait().unwrap() == item, "the rescued item is torn");
        assert_eq!(q.len(), 0);
        q.put(vec![4]);
        assert_eq!(q.get(), vec![4]);
        return;
    }
    in_child_ok(CASE, Duration::from_secs(30));
}

/// A put whose unwinding finish is cancelled again (no consumer, then a
/// kill) cannot complete its item: the queue reports itself broken to
/// every later call instead of hanging or handing out a torn item.
#[test]
fn an_item_that_can_never_be_finished_breaks_the_queue() {
    const CASE: &str = "an_item_that_can_never_be_finished_breaks_the_queue";
    if util::in_child(CASE) {
        let q = Rc::new(ProcessQueue::<Vec<u8>>::new(2).unwrap());
        let putter = {
            let q = q.clone();
            moss::spawn(move || {
                // Cancelled at its first wait, in the middle of the item;
                // the unwinding put then waits for a consumer that never
                // comes, until the kill below.
                let r = moss::timeout(Duration::ZERO, || q.put(vec![5u8; 4 << 20]));
                assert!(r.is_err());
            })
        };
        util::until_parked(putter.id());
        putter.kill();
        let _ = putter.join();
        let e = q.checked_get(Some(Duration::from_secs(5))).unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
        let e = q
            .checked_put(vec![1], Some(Duration::from_secs(5)))
            .unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
        return;
    }
    in_child_ok(CASE, Duration::from_secs(30));
}

/// A producer process killed in the middle of a large item: the consumer
/// waiting for the rest of it fails instead of waiting forever.
#[test]
fn a_producer_killed_mid_item_fails_the_consumer() {
    const CASE: &str = "a_producer_killed_mid_item_fails_the_consumer";
    if util::in_child(CASE) {
        let q = Arc::new(ProcessQueue::<Vec<u8>>::new(2).unwrap());
        let child = {
            let q = q.clone();
            Process::new(move || q.put(vec![3u8; 8 << 20]))
                .start()
                .unwrap()
        };
        // The producer fills the pipe with the start of its item and waits
        // for a reader; it dies there. The consumer reads that part, then
        // waits for the rest.
        while q.is_empty() {
            moss::sleep(Duration::from_millis(5));
        }
        moss::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        let t0 = Instant::now();
        let e = match q.checked_get(None) {
            Ok(v) => panic!("got an item of {} bytes from a dead producer", v.len()),
            Err(e) => e,
        };
        assert!(e.to_string().contains("broken"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        drop(child);
        return;
    }
    in_child_ok(CASE, Duration::from_secs(30));
}

/// A large item between a coroutine and a plain thread that never used
/// moss (it waits in `poll`, having no hub), both ways.
#[test]
fn a_plain_thread_and_a_coroutine_exchange_large_items() {
    let _wd = util::watchdog("plain thread and coroutine", Duration::from_secs(60));
    let q = Arc::new(ProcessQueue::<Vec<u8>>::new(1).unwrap());
    let item = vec![6u8; 8 << 20];
    let t = {
        let (q, item) = (q.clone(), item.clone());
        std::thread::spawn(move || {
            let got = q.get();
            q.put(item);
            got
        })
    };
    let producer = {
        let (q, item) = (q.clone(), item.clone());
        moss::spawn(move || q.put(item))
    };
    producer.join().unwrap();
    // The thread's put needs this reader while it writes.
    let back = q.get();
    assert!(t.join().unwrap() == item);
    assert!(back == item);
}

/// With no fd left for a registration, waits in the middle of an item nap
/// on a timer and retry instead of blocking the thread: a put and a get of
/// a large item between two coroutines of one thread still complete.
#[test]
fn items_cross_between_coroutines_of_one_thread_with_no_fd_left() {
    const CASE: &str = "items_cross_between_coroutines_of_one_thread_with_no_fd_left";
    if util::in_child(CASE) {
        let q = Rc::new(ProcessQueue::<Vec<u8>>::new(1).unwrap());
        moss::yield_now(); // the hub's own fds first
        // Use up every free fd number below a low limit.
        let limit = 64;
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: a valid rlimit; lowering our own limit is always allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let mut hog = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
        }
        let item = vec![8u8; 4 << 20];
        let producer = {
            let (q, item) = (q.clone(), item.clone());
            moss::spawn(move || q.put(item))
        };
        let got = q.get();
        producer.join().unwrap();
        assert!(got == item);
        drop(hog);
        return;
    }
    in_child_ok(CASE, Duration::from_secs(60));
}
