//! The fd readiness API under moss::net and the monkey hooks: waiting,
//! deadlines, close while waiting, cancellation.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss_runtime::reactor::{Interest, Registration, WaitError};

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

#[test]
fn readable_after_peer_writes() {
    let (mut a, b) = pair();
    let reg = Registration::new(a.as_raw_fd()).unwrap();
    let writer = moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        (&b).write_all(b"ping").unwrap();
        b
    });
    let mut buf = [0u8; 4];
    let err = a.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    reg.wait(Interest::Readable, None).unwrap();
    assert_eq!(a.read(&mut buf).unwrap(), 4);
    assert_eq!(&buf, b"ping");
    let _b = writer.join().unwrap();
}

#[test]
fn deadline_gives_timed_out_and_others_keep_running() {
    let (a, _b) = pair();
    let reg = Registration::new(a.as_raw_fd()).unwrap();
    let ticks = Rc::new(RefCell::new(0));
    let t = ticks.clone();
    let ticker = moss::spawn(move || {
        for _ in 0..5 {
            moss::sleep(Duration::from_millis(5));
            *t.borrow_mut() += 1;
        }
    });
    // The ticker needs 25 ms of timers; the wait's deadline is 20 times that
    // so that a loaded machine still lets every tick through, while a wait
    // that blocked the thread (or a hub that slept until the wait's deadline)
    // would see none or one.
    let start = Instant::now();
    let e = reg
        .wait(Interest::Readable, Some(start + Duration::from_millis(500)))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(*ticks.borrow(), 5);
    ticker.join().unwrap();
}

#[test]
fn dropping_the_registration_wakes_waiters_with_closed() {
    let (a, _b) = pair();
    let reg = Rc::new(RefCell::new(Some(
        Registration::new(a.as_raw_fd()).unwrap(),
    )));
    let r = reg.clone();
    let waiter = moss::spawn(move || {
        // Hold only a raw handle: the registration lives in `reg`.
        let w: *const Registration = r.borrow().as_ref().unwrap();
        // SAFETY: the root drops the registration only after this coroutine
        // parked inside `wait_raw`, which touches `self` after waking only
        // through fields it copied before parking (key, generation).
        unsafe { (*w).wait_raw(Interest::Readable, None) }
    });
    moss::yield_now();
    assert!(!waiter.is_finished());
    // Drop it while the coroutine waits (as a `close` hook does).
    drop(reg.borrow_mut().take());
    assert_eq!(waiter.join().unwrap(), Err(WaitError::Closed));
}

#[test]
fn kill_unwinds_a_waiter_and_raw_wait_reports_cancelled() {
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    let h = moss::spawn(move || {
        let reg = Registration::new(fd).unwrap();
        reg.wait(Interest::Readable, None)
    });
    moss::yield_now();
    h.kill();
    assert!(h.join().unwrap_err().is_killed());

    // The raw form reports the cancellation instead of unwinding; the
    // timeout still says Elapsed.
    let r = moss::timeout(Duration::from_millis(20), || {
        let reg = Registration::new(fd).unwrap();
        reg.wait_raw(Interest::Readable, None)
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn writable_right_away() {
    let (a, _b) = pair();
    let reg = Registration::new(a.as_raw_fd()).unwrap();
    reg.wait(
        Interest::Writable,
        Some(Instant::now() + Duration::from_secs(5)),
    )
    .unwrap();
}
