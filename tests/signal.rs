//! moss::signal: waits and handler coroutines, bad numbers, restored
//! dispositions, several threads, fork.
//!
//! Signals are process-wide, so each test uses signals of its own (the
//! real-time ones are plenty), and tests that change or restore default
//! dispositions run in a child process.

use std::cell::Cell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use moss::signal;

mod util;

fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

fn raise(sig: i32) {
    // SAFETY: a plain syscall; the signal goes to this process, which moss catches.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

/// The current disposition's handler address of `sig`.
fn disposition(sig: i32) -> usize {
    // SAFETY: all zeros is a valid `sigaction` (plain integers and pointers).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    assert_eq!(
        // SAFETY: a query (null new action) into the live `old`.
        unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) },
        0
    );
    old.sa_sigaction
}

#[test]
fn bad_signal_numbers_are_invalid_input() {
    let bad = [
        0,
        -1,
        65,
        1000,
        i32::MIN,
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        32,
        33,
    ];
    let segv_before = disposition(libc::SIGSEGV);
    for sig in bad {
        let e = signal::handler(sig, || ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "handler({sig})");
        let e = signal::wait(&[sig]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "wait({sig})");
        // A bad number among good ones fails the whole call at once.
        let e = signal::wait(&[rt(20), sig]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(
        signal::wait(&[]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // moss's stack-overflow handler is untouched.
    assert_eq!(disposition(libc::SIGSEGV), segv_before);
}

#[test]
fn wait_returns_the_signal_and_others_keep_running() {
    let sig = rt(1);
    let other = rt(2);
    // Install first (a zero wait), so the signal below cannot hit the
    // default disposition.
    assert_eq!(
        signal::wait_timeout(&[sig, other], Duration::ZERO).unwrap(),
        None
    );
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        loop {
            moss::sleep(Duration::from_millis(5));
            t.set(t.get() + 1);
        }
    });
    let waiters: Vec<_> = (0..3)
        .map(|_| moss::spawn(move || signal::wait(&[other, sig])))
        .collect();
    for w in &waiters {
        util::until_parked(w.id());
    }
    // The hub keeps running while they wait (events, not a tick rate).
    util::until("ticks while they wait", Duration::from_secs(10), || {
        ticks.get() >= 3
    });
    assert!(waiters.iter().all(|w| !w.is_finished()));
    raise(sig);
    // Every waiter that was waiting returns.
    for r in moss::join_all(waiters) {
        assert_eq!(r.unwrap().unwrap(), sig);
    }
    ticker.kill();
}

#[test]
fn a_delivery_between_waits_is_pending_not_lost() {
    let sig = rt(3);
    assert_eq!(signal::wait_timeout(&[sig], Duration::ZERO).unwrap(), None);
    raise(sig);
    raise(sig);
    // Nobody was waiting: the next wait returns at once. The two deliveries
    // may be coalesced or seen one by one (a realtime signal is queued, and
    // kill(2) may hand the second to another thread after the first wait
    // took the first): never none, never more than two.
    let t = Instant::now();
    assert_eq!(signal::wait(&[sig]).unwrap(), sig);
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut more = 0;
    while signal::wait_timeout(&[sig], Duration::from_millis(200))
        .unwrap()
        .is_some()
    {
        more += 1;
        assert!(more <= 1, "two raises, three deliveries");
    }
}

/// The catcher's bells (an eventfd per waiting hub) stay off the numbers
/// 0-2 of a process whose stdio is closed, like the hub's own fds: checked
/// for the bells of two threads, which both still ring.
#[test]
fn bells_never_take_closed_stdio_numbers() {
    util::with_stdio_closed(
        "bells_never_take_closed_stdio_numbers",
        Duration::from_secs(30),
        || {
            let sig = rt(21);
            let wait_for_a_raise = move || {
                moss::yield_now(); // the hub exists before the bell
                assert_eq!(signal::wait_timeout(&[sig], Duration::ZERO).unwrap(), None);
                raise(sig);
                signal::wait_timeout(&[sig], Duration::from_secs(20)).unwrap()
            };
            assert_eq!(wait_for_a_raise(), Some(sig));
            assert_eq!(
                std::thread::spawn(wait_for_a_raise).join().unwrap(),
                Some(sig)
            );
        },
    );
}

#[test]
fn waits_time_out_and_are_cancelled() {
    let sig = rt(4);
    let t = Instant::now();
    assert_eq!(
        signal::wait_timeout(&[sig], Duration::from_millis(100)).unwrap(),
        None
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    let r = moss::spawn(move || moss::timeout(Duration::from_millis(50), || signal::wait(&[sig])))
        .join()
        .unwrap();
    assert!(r.is_err(), "the timeout fired");
    let h = moss::spawn(move || signal::wait(&[sig]));
    util::until_parked(h.id());
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
}

#[test]
fn several_threads_wait_for_one_signal() {
    let _wd = util::watchdog("threads waiting", Duration::from_secs(30));
    let sig = rt(5);
    let (ready_tx, ready_rx) = mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                // Installs the catcher and this thread's baseline: from now
                // on a delivery is pending for this thread even before it
                // parks.
                assert_eq!(signal::wait_timeout(&[sig], Duration::ZERO).unwrap(), None);
                // A coroutine waits too: both wait when the signal comes.
                let w = moss::spawn(move || signal::wait(&[sig]).unwrap());
                util::until_parked(w.id());
                ready.send(()).unwrap();
                let root = signal::wait(&[sig]).unwrap();
                (root, w.join().unwrap())
            })
        })
        .collect();
    for _ in 0..4 {
        ready_rx.recv().unwrap();
    }
    raise(sig);
    for t in threads {
        assert_eq!(t.join().unwrap(), (sig, sig));
    }
}

#[test]
fn a_handler_runs_each_delivery_in_a_coroutine_of_its_thread() {
    let _wd = util::watchdog("handler", Duration::from_secs(30));
    let sig = rt(6);
    let runs = Rc::new(Cell::new(0u32));
    let in_coroutine = Rc::new(Cell::new(true));
    let (r, c) = (runs.clone(), in_coroutine.clone());
    let root = moss::current().id();
    let h = signal::handler(sig, move || {
        c.set(c.get() && moss::current().id() != root);
        r.set(r.get() + 1);
    })
    .unwrap();
    assert!(h.is_active());
    assert_eq!(h.signal(), sig);
    // One at a time: no delivery is lost.
    for i in 1..=20 {
        raise(sig);
        util::until("the handler to run", Duration::from_secs(10), || {
            runs.get() == i
        });
    }
    assert!(in_coroutine.get(), "f ran in a new coroutine");
    // A burst may be coalesced, but the last delivery is never lost.
    for _ in 0..100 {
        raise(sig);
    }
    let after_burst = {
        util::until("the burst", Duration::from_secs(10), || runs.get() > 20);
        moss::sleep(Duration::from_millis(50));
        runs.get()
    };
    assert!(after_burst <= 120);
    raise(sig);
    util::until("the run after the burst", Duration::from_secs(10), || {
        runs.get() > after_burst
    });
    h.cancel();
    h.cancel();
    assert!(!h.is_active());
}

#[test]
fn a_panicking_handler_does_not_take_the_hub_down() {
    let _wd = util::watchdog("panicking handler", Duration::from_secs(30));
    let sig = rt(7);
    let runs = Rc::new(Cell::new(0u32));
    let r = runs.clone();
    let _h = signal::handler(sig, move || {
        r.set(r.get() + 1);
        panic!("handler failed");
    })
    .unwrap();
    for i in 1..=3 {
        raise(sig);
        util::until("the handler to run", Duration::from_secs(10), || {
            runs.get() == i
        });
    }
}

#[test]
fn handlers_on_several_threads_all_run() {
    let _wd = util::watchdog("handlers on threads", Duration::from_secs(30));
    let sig = rt(8);
    let hits = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let stop_rx = Arc::new(std::sync::Mutex::new(stop_rx));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (hits, ready, stop) = (hits.clone(), ready_tx.clone(), stop_rx.clone());
            std::thread::spawn(move || {
                let h = signal::handler(sig, move || {
                    hits.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
                ready.send(()).unwrap();
                // Keep the hub running until told to stop.
                while stop.lock().unwrap().try_recv().is_err() {
                    moss::sleep(Duration::from_millis(2));
                }
                drop(h);
            })
        })
        .collect();
    for _ in 0..3 {
        ready_rx.recv().unwrap();
    }
    raise(sig);
    let t = Instant::now();
    while hits.load(Ordering::SeqCst) < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not every handler ran"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..3 {
        stop_tx.send(()).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
}

static PREV_HITS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn counting(_: i32) {
    PREV_HITS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn dropping_the_last_handler_restores_the_previous_disposition() {
    const CASE: &str = "dropping_the_last_handler_restores_the_previous_disposition";
    if util::in_child(CASE) {
        let sig = libc::SIGUSR1;
        // A handler of the program's own.
        // SAFETY: all zeros is a valid `sigaction` (plain integers and pointers).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = counting as *const () as usize;
        assert_eq!(
            // SAFETY: installing `counting`, a handler that only touches an atomic.
            unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) },
            0
        );
        let runs = Rc::new(Cell::new(0));
        let r = runs.clone();
        let a = signal::handler(sig, move || r.set(r.get() + 1)).unwrap();
        let r = runs.clone();
        let b = signal::handler(sig, move || r.set(r.get() + 10)).unwrap();
        assert_ne!(disposition(sig), counting as *const () as usize);
        raise(sig);
        util::until("both handlers", Duration::from_secs(10), || {
            runs.get() == 11
        });
        assert_eq!(PREV_HITS.load(Ordering::SeqCst), 0, "moss replaced it");
        drop(a);
        // Still one moss user: still caught.
        raise(sig);
        util::until("the remaining handler", Duration::from_secs(10), || {
            runs.get() == 21
        });
        b.cancel();
        assert_eq!(disposition(sig), counting as *const () as usize);
        raise(sig);
        // Delivered to some thread of the process, maybe after kill returns.
        let t = Instant::now();
        while PREV_HITS.load(Ordering::SeqCst) == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the restored handler never ran"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(b);
        // SIG_DFL comes back too: SIGTERM's default action ends the process.
        let h = signal::handler(libc::SIGTERM, || ()).unwrap();
        assert_ne!(disposition(libc::SIGTERM), libc::SIG_DFL);
        drop(h);
        assert_eq!(disposition(libc::SIGTERM), libc::SIG_DFL);
        println!("restored");
        raise(libc::SIGTERM);
        std::thread::sleep(Duration::from_secs(10));
        println!("still alive");
        return;
    }
    let r = util::run_in_child(CASE, Duration::from_secs(60));
    assert!(r.stdout.contains("restored"), "{r:?}");
    assert!(!r.stdout.contains("still alive"), "{r:?}");
    assert_eq!(r.signal, Some(libc::SIGTERM), "{r:?}");
}

/// A signal sent before the last handler goes, but not yet taken by any
/// thread, is absorbed: it never meets the restored default action, which
/// would end the process. (Made deterministic by blocking the signal on
/// this thread and sending it to this thread only: it stays pending until
/// the unblock, after the drop.)
#[test]
fn a_signal_pending_when_the_last_handler_goes_is_absorbed() {
    util::isolated(
        "a_signal_pending_when_the_last_handler_goes_is_absorbed",
        Duration::from_secs(20),
        || {
            let sig = libc::SIGUSR1;
            let h = signal::handler(sig, || ()).unwrap();
            // SAFETY: sigset_t values owned by this frame; blocking and then
            // unblocking one signal on this thread; tgkill to this thread.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                let mut old: libc::sigset_t = std::mem::zeroed();
                assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old), 0);
                let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
                assert_eq!(libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig), 0);
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut pending);
                assert_eq!(libc::sigismember(&pending, sig), 1, "pending");
                drop(h);
                assert_eq!(disposition(sig), libc::SIG_DFL);
                libc::sigpending(&mut pending);
                assert_eq!(libc::sigismember(&pending, sig), 0, "absorbed");
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()),
                    0
                );
            }
            // Still alive; a new handler works as before.
            let runs = Rc::new(Cell::new(0));
            let r = runs.clone();
            let _h = signal::handler(sig, move || r.set(r.get() + 1)).unwrap();
            raise(sig);
            util::until("the new handler", Duration::from_secs(10), || {
                runs.get() >= 1
            });
        },
    );
}

#[test]
fn a_process_child_gets_the_disposition_from_before_moss() {
    const CASE: &str = "a_process_child_gets_the_disposition_from_before_moss";
    if util::in_child(CASE) {
        use moss::pool::Process;
        let parent_runs = Rc::new(Cell::new(0));
        let r = parent_runs.clone();
        let _term = signal::handler(libc::SIGTERM, move || r.set(r.get() + 1)).unwrap();
        let _usr = signal::handler(libc::SIGUSR2, || ()).unwrap();
        // A storm of SIGUSR2 at the parent while children are forked. The
        // storm thread has started before the first fork and ends after the
        // last: a std thread that starts or exits while another thread forks
        // can leave std's thread registry lock held in the child (a fork
        // hazard of any multithreaded program, see README), which is not
        // what this test is about.
        let forking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (started_tx, started) = mpsc::channel();
        let storm = std::thread::spawn({
            let forking = forking.clone();
            move || {
                started_tx.send(()).unwrap();
                let mut raised = 0;
                while raised < 2000 || forking.load(Ordering::Acquire) {
                    raise(libc::SIGUSR2);
                    raised += 1;
                    std::thread::yield_now();
                }
            }
        });
        started.recv().unwrap();
        // A child that does nothing with signals: SIGTERM ends it.
        let sleeper = Process::new(|| std::thread::sleep(Duration::from_secs(30)))
            .start()
            .unwrap();
        // A child with handlers of its own.
        let own = Process::new(|| {
            let got = signal::wait_timeout(&[libc::SIGUSR1], Duration::from_secs(20)).unwrap();
            std::process::exit(if got == Some(libc::SIGUSR1) { 42 } else { 1 });
        })
        .start()
        .unwrap();
        let quick: Vec<_> = (0..10)
            .map(|_| Process::new(|| ()).start().unwrap())
            .collect();
        forking.store(false, Ordering::Release);
        storm.join().unwrap();
        for q in quick {
            assert_eq!(q.join().unwrap(), 0);
        }
        moss::sleep(Duration::from_millis(200)); // the child's wait is installed
        // SAFETY: a plain syscall, signalling our own child.
        unsafe { libc::kill(own.pid() as i32, libc::SIGUSR1) };
        assert_eq!(own.join_timeout(Duration::from_secs(20)).unwrap(), Some(42));
        sleeper.terminate().unwrap();
        assert_eq!(
            sleeper.join_timeout(Duration::from_secs(20)).unwrap(),
            Some(-libc::SIGTERM)
        );
        // The parent's own handler still works after all that.
        raise(libc::SIGTERM);
        util::until("the parent's handler", Duration::from_secs(10), || {
            parent_runs.get() == 1
        });
        println!("ok");
        return;
    }
    let r = util::run_in_child(CASE, Duration::from_secs(90));
    assert!(r.success() && r.stdout.contains("ok"), "{r:?}");
}

/// Deliveries to the program's own handler, [`own_counting`] (each test
/// that installs it runs in a process of its own).
static OWN_HITS: AtomicUsize = AtomicUsize::new(0);

// One instance: the tests compare its address with the installed
// disposition, and a release build may give a small function a copy per
// codegen unit (a different address in each) unless it is never inlined.
#[inline(never)]
extern "C" fn own_counting(_: i32) {
    OWN_HITS.fetch_add(1, Ordering::SeqCst);
}

/// Installs [`own_counting`] for `sig`, as a program's own handler.
fn install_own_counting(sig: i32) {
    // SAFETY: all zeros is a valid `sigaction`; the handler only touches
    // an atomic.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = own_counting as *const () as usize;
    // SAFETY: as above.
    let r = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    assert_eq!(r, 0);
}

/// Real-time signals queue: every instance still pending when the last
/// handler goes is absorbed, not only one, also when the previous
/// disposition is a handler of the program's own and the thread that
/// drops the handler had the signal blocked already (it stays blocked).
#[test]
fn queued_real_time_signals_pending_at_the_drop_are_all_absorbed() {
    util::isolated(
        "queued_real_time_signals_pending_at_the_drop_are_all_absorbed",
        Duration::from_secs(20),
        || {
            let sig = rt(22);
            install_own_counting(sig);
            let h = signal::handler(sig, || ()).unwrap();
            // SAFETY: sigset_t values owned by this frame; blocking one
            // signal on this thread; tgkill to this thread.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                let mut old: libc::sigset_t = std::mem::zeroed();
                assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old), 0);
                let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
                for _ in 0..3 {
                    assert_eq!(libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig), 0);
                }
                drop(h);
                assert_eq!(disposition(sig), own_counting as *const () as usize);
                let mut now: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
                assert_eq!(libc::sigismember(&now, sig), 1, "still blocked");
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut pending);
                assert_eq!(libc::sigismember(&pending, sig), 0, "all absorbed");
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()),
                    0
                );
                assert_eq!(OWN_HITS.load(Ordering::SeqCst), 0, "none forwarded");
                // A signal sent after the drop reaches the restored handler.
                assert_eq!(libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig), 0);
            }
            assert_eq!(OWN_HITS.load(Ordering::SeqCst), 1);
        },
    );
}

/// Handlers on two threads dropped at the same moment, again and again,
/// while another thread raises the signal without pause: after each round
/// the program's own handler is back (and keeps counting), and a new round
/// of handlers catches the signal again.
#[test]
fn handlers_on_two_threads_dropped_at_once_under_a_storm() {
    util::isolated(
        "handlers_on_two_threads_dropped_at_once_under_a_storm",
        Duration::from_secs(60),
        || {
            let sig = rt(23);
            install_own_counting(sig);
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let storm = std::thread::spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Acquire) {
                        raise(sig);
                        std::thread::yield_now();
                    }
                }
            });
            for _ in 0..30 {
                let barrier = Arc::new(std::sync::Barrier::new(2));
                let (caught_tx, caught) = mpsc::channel();
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let (barrier, caught_tx) = (barrier.clone(), caught_tx.clone());
                        std::thread::spawn(move || {
                            let runs = Rc::new(Cell::new(0));
                            let r = runs.clone();
                            let h = signal::handler(sig, move || r.set(r.get() + 1)).unwrap();
                            util::until("a run", Duration::from_secs(20), || runs.get() > 0);
                            caught_tx.send(()).unwrap();
                            barrier.wait();
                            drop(h);
                        })
                    })
                    .collect();
                caught.recv().unwrap();
                caught.recv().unwrap();
                for t in threads {
                    t.join().unwrap();
                }
                assert_eq!(disposition(sig), own_counting as *const () as usize);
                let before = OWN_HITS.load(Ordering::SeqCst);
                let t = Instant::now();
                while OWN_HITS.load(Ordering::SeqCst) == before {
                    assert!(
                        t.elapsed() < Duration::from_secs(10),
                        "own handler never ran"
                    );
                    std::thread::yield_now();
                }
            }
            stop.store(true, Ordering::Release);
            storm.join().unwrap();
        },
    );
}

/// A `wait` keeps the signal caught for the rest of the process: a handler
/// added and dropped afterwards leaves the catcher in place (the default
/// action, which would end the process, never comes back), and the signal
/// raised after the drop is there for the next wait.
#[test]
fn a_handler_dropped_after_a_wait_leaves_the_signal_caught() {
    util::isolated(
        "a_handler_dropped_after_a_wait_leaves_the_signal_caught",
        Duration::from_secs(20),
        || {
            let sig = rt(24);
            assert_eq!(signal::wait_timeout(&[sig], Duration::ZERO).unwrap(), None);
            let caught = disposition(sig);
            assert_ne!(caught, libc::SIG_DFL);
            let runs = Rc::new(Cell::new(0));
            let r = runs.clone();
            let h = signal::handler(sig, move || r.set(r.get() + 1)).unwrap();
            raise(sig);
            util::until("the handler", Duration::from_secs(10), || runs.get() >= 1);
            drop(h);
            assert_eq!(disposition(sig), caught);
            raise(sig);
            assert_eq!(
                signal::wait_timeout(&[sig], Duration::from_secs(10)).unwrap(),
                Some(sig)
            );
        },
    );
}
