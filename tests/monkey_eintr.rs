//! Signals and `EINTR` after `patch_all` (gevent's semantics): a hooked
//! call that waits through the hub is not interrupted by a signal handler,
//! even one installed without `SA_RESTART`; the handler runs and the call
//! goes on. Threads without a hub keep the kernel's behaviour. The
//! replacement for the `alarm()` timeout pattern is a `moss::signal`
//! handler that kills the waiting coroutine (or `moss::timeout`).
//!
//! Each case runs in a child process: it installs process-wide signal
//! handlers and timers.

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Installs `count` for SIGALRM without `SA_RESTART`: unpatched, a blocking
/// call fails with `EINTR` when it runs.
fn install_counting_handler() {
    // SAFETY: a zeroed sigaction is a valid start; the handler is an
    // async-signal-safe function (one atomic add).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()), 0);
    }
}

/// Sends SIGALRM to the calling thread every 50 ms from a helper thread
/// until the returned guard is dropped (thread-directed, so it lands on
/// this thread, wherever it waits).
fn alarms_to_this_thread() -> impl Drop {
    struct Stop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            if let Some(t) = self.1.take() {
                t.join().unwrap();
            }
        }
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: the target thread outlives this helper (the guard
            // joins the helper first).
            unsafe { libc::pthread_kill(me, libc::SIGALRM) };
        }
    });
    Stop(stop, Some(t))
}

fn in_child_ok(case: &str) {
    let r = util::run_in_child(case, Duration::from_secs(30));
    assert!(
        r.success() && !r.timed_out,
        "{case}: {r:?}\n--- stderr ---\n{}",
        r.stderr
    );
}

#[test]
fn hooked_reads_and_sleeps_are_not_interrupted_by_signal_handlers() {
    const CASE: &str = "hooked_reads_and_sleeps_are_not_interrupted_by_signal_handlers";
    if !util::in_child(CASE) {
        return in_child_ok(CASE);
    }
    moss::monkey::patch_all();
    install_counting_handler();
    let (a, b) = UnixStream::pair().unwrap();
    let writer = moss::spawn(move || {
        moss::sleep(Duration::from_millis(400));
        (&b).write_all(b"late").unwrap();
        b
    });
    let reader = moss::spawn(move || {
        let mut buf = [0u8; 4];
        let t = Instant::now();
        // SAFETY: a valid buffer of 4 bytes on a live socket.
        let n = unsafe { libc::read(a.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        let err = std::io::Error::last_os_error();
        assert_eq!(n, 4, "the hooked read failed: {err}");
        assert_eq!(&buf, b"late");
        t.elapsed()
    });
    let sleeper = moss::spawn(|| {
        let t = Instant::now();
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 400_000_000,
        };
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid timespecs.
        let r = unsafe { libc::nanosleep(&ts, &mut rem) };
        assert_eq!(r, 0, "the hooked sleep failed");
        t.elapsed()
    });
    let alarms = alarms_to_this_thread();
    let read_took = reader.join().unwrap();
    let slept = sleeper.join().unwrap();
    drop(alarms);
    writer.join().unwrap();
    assert!(HANDLED.load(Ordering::SeqCst) >= 2, "the handler never ran");
    assert!(read_took >= Duration::from_millis(350), "{read_took:?}");
    assert!(slept >= Duration::from_millis(390), "{slept:?}");
}

/// On a thread without a hub nothing changes: a blocking read there fails
/// with `EINTR` when a handler without `SA_RESTART` runs on that thread.
#[test]
fn a_thread_without_a_hub_still_sees_eintr() {
    const CASE: &str = "a_thread_without_a_hub_still_sees_eintr";
    if !util::in_child(CASE) {
        return in_child_ok(CASE);
    }
    moss::monkey::patch_all();
    install_counting_handler();
    let (a, _b) = UnixStream::pair().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let mut buf = [0u8; 4];
        let r = (&a).read(&mut buf);
        (r.map_err(|e| e.kind()), a)
    });
    let tid = rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: the thread is alive until it has been joined below.
        unsafe { libc::pthread_kill(tid, libc::SIGALRM) };
    }
    let (r, _a) = t.join().unwrap();
    assert_eq!(r.unwrap_err(), std::io::ErrorKind::Interrupted);
}

/// The replacement for the `alarm()` timeout pattern: a `moss::signal`
/// handler kills the waiting coroutine; its hooked read fails at once and
/// the kill is delivered at its next moss blocking point.
#[test]
fn a_signal_handler_coroutine_can_kill_a_hooked_wait() {
    const CASE: &str = "a_signal_handler_coroutine_can_kill_a_hooked_wait";
    if !util::in_child(CASE) {
        return in_child_ok(CASE);
    }
    moss::monkey::patch_all();
    let (a, _b) = UnixStream::pair().unwrap();
    let reader = moss::spawn(move || {
        let mut buf = [0u8; 4];
        let r = (&a).read(&mut buf);
        assert!(r.is_err(), "the read returned {r:?}");
        moss::sleep(Duration::from_secs(3600)); // the kill lands here
    });
    let target = Rc::new(RefCell::new(Some(reader)));
    let t = target.clone();
    let _h = moss::signal::handler(moss::signal::SIGALRM, move || {
        if let Some(r) = t.borrow().as_ref() {
            r.kill();
        }
    })
    .unwrap();
    let t0 = Instant::now();
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(1) };
    while target.borrow().as_ref().is_some_and(|r| !r.is_finished()) {
        moss::sleep(Duration::from_millis(10));
        assert!(t0.elapsed() < Duration::from_secs(10), "never killed");
    }
    let r = target.borrow_mut().take().unwrap().join();
    assert!(r.unwrap_err().is_killed());
}
