//! A forked child and its parent's hub: the child never runs the parent's
//! coroutines nor polls, registers or deregisters on the parent's epoll
//! instance (it gets a fresh hub), and fd waits keep their deadlines also
//! when the reactor holds a stale entry for the fd they register.
//!
//! Each case that forks or could hang runs in a child process of this test
//! binary (`util::run_in_child`) under a watchdog.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::{ProcessPool, ProcessQueue};
use moss::sync::Timeout;
use moss_runtime::reactor::{Interest, Registration};

fn exit_now(code: i32) -> ! {
    // SAFETY: ends the forked child without running the parent's atexit
    // handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// A coroutine that writes this process's pid to a socket every 2 ms, and
/// the socket's other end: a copy of it that ran in a forked child would
/// write the child's pid.
fn ticker() -> (UnixStream, moss::JoinHandle<()>) {
    let (r, w) = UnixStream::pair().unwrap();
    let h = moss::spawn(move || {
        loop {
            moss::sleep(Duration::from_millis(2));
            let pid = std::process::id();
            (&w).write_all(&pid.to_le_bytes()).unwrap();
        }
    });
    (r, h)
}

/// Stops the ticker and returns the pids of its ticks that are not ours.
fn foreign_ticks(r: UnixStream, ticker: moss::JoinHandle<()>) -> Vec<u32> {
    ticker.kill();
    r.set_nonblocking(true).unwrap();
    let mut buf = Vec::new();
    let _ = (&r).read_to_end(&mut buf);
    assert!(buf.len() >= 4, "the ticker never ticked");
    buf.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .filter(|&p| p != std::process::id())
        .collect()
}

fn square(x: u32) -> u32 {
    x * x
}

/// The hang reported against `ProcessQueue`: after a `ProcessPool` had
/// been created (which gives the thread a hub), an empty queue's
/// `get_timeout` looped forever on its third call. Each wait registered a
/// duplicate of the queue's pipe fd and closed the duplicate before
/// deregistering it; epoll keeps such an entry (the pipe stayed open
/// through the original fd), so the next duplicate, with the same number,
/// collided with it (`EEXIST`), and the fallback napped 5 ms and reported
/// "ready" regardless of the deadline, forever.
#[test]
fn process_queue_get_timeout_keeps_its_deadline_after_a_pool() {
    util::isolated(
        "process_queue_get_timeout_keeps_its_deadline_after_a_pool",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::new(2).unwrap();
            assert_eq!(pool.apply(square, 7).unwrap(), 49);
            pool.close();
            pool.join();
            let q = ProcessQueue::<u32>::new(2).unwrap();
            for i in 0..200 {
                let t = Instant::now();
                assert_eq!(q.get_timeout(Duration::from_millis(5)), Err(Timeout));
                let took = t.elapsed();
                assert!(took < Duration::from_secs(5), "get {i} took {took:?}");
            }
            q.put(5);
            assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(5));
        },
    );
}

/// Fifty pools created, used and dropped in a row, then twenty coroutines
/// timing out on one empty queue at the same time (twenty duplicates of
/// one fd registered at once), ten times each: every wait ends at its
/// deadline, and they overlap.
#[test]
fn queue_timeouts_after_fifty_pools_and_twenty_concurrent_waiters() {
    util::isolated(
        "queue_timeouts_after_fifty_pools_and_twenty_concurrent_waiters",
        Duration::from_secs(150),
        || {
            for i in 0..50 {
                let pool = ProcessPool::new(1).unwrap();
                assert_eq!(pool.apply(square, i).unwrap(), i * i);
            }
            let q = Arc::new(ProcessQueue::<u32>::new(4).unwrap());
            let t = Instant::now();
            let hs: Vec<_> = (0..20)
                .map(|_| {
                    let q = q.clone();
                    moss::spawn(move || {
                        (0..10)
                            .filter(|_| q.get_timeout(Duration::from_millis(20)) == Err(Timeout))
                            .count()
                    })
                })
                .collect();
            let timed_out: usize = moss::join_all(hs).into_iter().map(Result::unwrap).sum();
            assert_eq!(timed_out, 200);
            // 200 waits of 20 ms one after another would take 4 s.
            assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
            q.put(9);
            assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(9));
        },
    );
}

/// A registration whose fd was closed before the registration was dropped
/// leaves its entry in the epoll instance when the open file lives on
/// through another fd. The number, reused for the same file, registers
/// again (the stale entry is taken over) and its events arrive.
#[test]
fn a_stale_epoll_entry_is_taken_over() {
    let _wd = util::watchdog("stale epoll entry", Duration::from_secs(30));
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    // SAFETY: dup of an fd we own; the result is closed below.
    let d = unsafe { libc::dup(a.as_raw_fd()) };
    assert!(d >= 0);
    let reg = Registration::new(d).unwrap();
    // SAFETY: our own duplicate, closed before its registration is dropped
    // on purpose (the registration does not own it).
    unsafe { libc::close(d) };
    drop(reg); // EPOLL_CTL_DEL fails: the number is closed
    // SAFETY: as above.
    let d2 = unsafe { libc::dup(a.as_raw_fd()) };
    assert_eq!(d2, d, "the lowest free number comes back");
    let reg = Registration::new(d2).expect("the stale entry is taken over");
    let writer = moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        (&b).write_all(b"x").unwrap();
        b
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    reg.wait(Interest::Readable, Some(deadline))
        .expect("the event reaches the new registration");
    let mut buf = [0u8; 1];
    assert_eq!((&a).read(&mut buf).unwrap(), 1);
    assert_eq!(&buf, b"x");
    drop(reg);
    // SAFETY: our own duplicate, closed after its registration is dropped.
    unsafe { libc::close(d2) };
    drop(writer.join().unwrap());
}

/// A second registration of an fd that is registered and alive is refused
/// (`AlreadyExists`), not taken over: the first keeps its events.
#[test]
fn a_live_registration_is_not_taken_over() {
    let _wd = util::watchdog("live registration", Duration::from_secs(30));
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let first = Registration::new(a.as_raw_fd()).unwrap();
    let second = Registration::new(a.as_raw_fd());
    assert_eq!(
        second.map(drop).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    let writer = moss::spawn(move || {
        moss::sleep(Duration::from_millis(20));
        (&b).write_all(b"y").unwrap();
        b
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    first
        .wait(Interest::Readable, Some(deadline))
        .expect("the first registration still gets the event");
    drop(writer.join().unwrap());
}

/// A coroutine that calls `fork` goes on in the child as the root of a
/// fresh hub: it sleeps and spawns there, the parent's coroutines (a
/// ticker) never run in the child, and when it returns, the child runs
/// what it spawned and exits with status 0.
#[test]
fn a_forking_coroutine_is_the_root_of_a_fresh_hub_in_the_child() {
    util::isolated(
        "a_forking_coroutine_is_the_root_of_a_fresh_hub_in_the_child",
        Duration::from_secs(30),
        || {
            let (ticks, ticker) = ticker();
            let (mut done_r, done_w) = UnixStream::pair().unwrap();
            let forker = moss::spawn(move || {
                let pid = util::fork();
                if pid == 0 {
                    // The parent's ticker would tick here if it ran.
                    moss::sleep(Duration::from_millis(60));
                    moss::spawn(move || {
                        moss::sleep(Duration::from_millis(20));
                        (&done_w).write_all(b"spawned in the child").unwrap();
                    });
                    return 0; // the child runs the spawned coroutine, then exits 0
                }
                drop(done_w);
                pid
            });
            let pid = forker.join().unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
            let mut got = String::new();
            done_r.read_to_string(&mut got).unwrap();
            assert_eq!(got, "spawned in the child");
            assert_eq!(foreign_ticks(ticks, ticker), Vec::<u32>::new());
        },
    );
}

/// A forking coroutine that panics in the child ends it with status 101.
#[test]
fn a_forking_coroutine_that_panics_in_the_child_exits_101() {
    util::isolated(
        "a_forking_coroutine_that_panics_in_the_child_exits_101",
        Duration::from_secs(30),
        || {
            let forker = moss::spawn(|| {
                let pid = util::fork();
                if pid == 0 {
                    moss::sleep(Duration::from_millis(5));
                    panic!("in the forked child (expected by the test)");
                }
                pid
            });
            let pid = forker.join().unwrap();
            assert_eq!(util::exit_code_of(pid), moss::pool::PANIC_EXIT_CODE);
        },
    );
}

/// Eight coroutines parked on sockets when another coroutine forks. The
/// child does I/O of its own in its fresh hub (a coroutine reads what the
/// child writes after 300 ms), polling epoll meanwhile; the parent's hub is
/// not polling (its root sleeps in a raw `nanosleep`) while a plain thread
/// writes to the eight sockets. Every parent reader still gets its data:
/// the child never polled the parent's epoll instance.
#[test]
fn fork_while_coroutines_are_parked_on_sockets() {
    util::isolated(
        "fork_while_coroutines_are_parked_on_sockets",
        Duration::from_secs(30),
        || {
            let mut writers = Vec::new();
            let readers: Vec<_> = (0..8u32)
                .map(|_| {
                    let (a, b) = UnixStream::pair().unwrap();
                    writers.push(b);
                    let a = moss::net::UnixStream::from(a);
                    moss::spawn(move || {
                        let mut buf = [0u8; 4];
                        (&a).read_exact(&mut buf).unwrap();
                        u32::from_le_bytes(buf)
                    })
                })
                .collect();
            for r in &readers {
                util::until_parked(r.id());
            }
            let forker = moss::spawn(|| {
                let pid = util::fork();
                if pid == 0 {
                    let (x, y) = moss::net::UnixStream::pair().unwrap();
                    let h = moss::spawn(move || {
                        let mut b = [0u8; 5];
                        (&x).read_exact(&mut b).map(|_| b)
                    });
                    moss::sleep(Duration::from_millis(300));
                    (&y).write_all(b"child").unwrap();
                    let ok = matches!(h.join(), Ok(Ok(b)) if &b == b"child");
                    exit_now(if ok { 0 } else { 1 });
                }
                pid
            });
            let pid = forker.join().unwrap();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                for (i, w) in writers.iter().enumerate() {
                    (&*w).write_all(&(i as u32).to_le_bytes()).unwrap();
                }
                writers
            });
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 200_000_000,
            };
            // SAFETY: a raw nanosleep with a valid timespec: the hub does
            // not poll meanwhile.
            unsafe { libc::syscall(libc::SYS_nanosleep, &ts, std::ptr::null_mut::<u8>()) };
            let _writers = writer.join().unwrap();
            for (i, r) in readers.into_iter().enumerate() {
                let got = r.join_timeout(Duration::from_secs(5));
                assert_eq!(
                    got.ok().map(Result::unwrap),
                    Some(i as u32),
                    "reader {i} never got its data"
                );
            }
            assert_eq!(util::exit_code_of(pid), 0, "the child's own I/O failed");
        },
    );
}

/// The root forks while coroutines are parked: in the child the root has
/// a fresh hub, with none of the parent's coroutines (`wait` returns at
/// once, the ticker never runs there), and spawns and joins as usual.
#[test]
fn fork_from_the_root_with_parked_coroutines() {
    util::isolated(
        "fork_from_the_root_with_parked_coroutines",
        Duration::from_secs(30),
        || {
            let (ticks, ticker) = ticker();
            moss::sleep(Duration::from_millis(10));
            let pid = util::fork();
            if pid == 0 {
                let t = Instant::now();
                moss::wait(); // the ticker is the parent's: nothing to wait for
                let waited = t.elapsed();
                let h = moss::spawn(|| {
                    moss::sleep(Duration::from_millis(60));
                    5
                });
                let ok = h.join().ok() == Some(5) && waited < Duration::from_secs(2);
                exit_now(if ok { 0 } else { 1 });
            }
            assert_eq!(util::exit_code_of(pid), 0);
            assert_eq!(foreign_ticks(ticks, ticker), Vec::<u32>::new());
        },
    );
}

/// A task of a `ProcessPool` worker forks from a coroutine: the child
/// (`_exit` with the task's code, or returning from the coroutine: status
/// 0) is reaped by the task, and the worker keeps serving.
fn fork_in_a_task(code: i32) -> i32 {
    moss::spawn(move || {
        let pid = util::fork();
        if pid == 0 {
            moss::sleep(Duration::from_millis(10));
            if code == 0 {
                return -1; // returns in the child: it exits with 0
            }
            exit_now(code);
        }
        util::exit_code_of(pid)
    })
    .join()
    .unwrap()
}

#[test]
fn fork_from_a_coroutine_inside_a_process_pool_task() {
    util::isolated(
        "fork_from_a_coroutine_inside_a_process_pool_task",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::new(2).unwrap();
            assert_eq!(pool.apply(fork_in_a_task, 7).unwrap(), 7);
            assert_eq!(pool.apply(fork_in_a_task, 0).unwrap(), 0);
            let codes = pool.map(fork_in_a_task, vec![3, 4, 5, 6]).unwrap();
            assert_eq!(codes, vec![3, 4, 5, 6]);
            assert_eq!(pool.apply(square, 3).unwrap(), 9);
            pool.close();
            pool.join();
        },
    );
}

/// A `ProcessQueue` across a raw fork from a coroutine, while a parent
/// coroutine is parked in `get`: the child times out on the empty queue,
/// kills a coroutine of its own parked in `get`, then puts ten items; the
/// parent's getters (the one parked at the fork among them) take all ten
/// exactly once, and later timeouts still keep their deadlines.
#[test]
fn process_queue_across_a_fork_with_timeouts_and_kills() {
    util::isolated(
        "process_queue_across_a_fork_with_timeouts_and_kills",
        Duration::from_secs(60),
        || {
            let q = Arc::new(ProcessQueue::<u32>::new(4).unwrap());
            let q1 = q.clone();
            let parked = moss::spawn(move || q1.get_timeout(Duration::from_secs(20)));
            util::until_parked(parked.id());
            let q2 = q.clone();
            let forker = moss::spawn(move || {
                let pid = util::fork();
                if pid != 0 {
                    return pid;
                }
                let fail = |why: &str| -> ! {
                    eprintln!("child: {why}");
                    exit_now(1)
                };
                let t = Instant::now();
                if q2.get_timeout(Duration::from_millis(30)) != Err(Timeout)
                    || t.elapsed() > Duration::from_secs(5)
                {
                    fail("get_timeout on the empty queue");
                }
                let q3 = q2.clone();
                let victim = moss::spawn(move || q3.get());
                moss::sleep(Duration::from_millis(20));
                victim.kill();
                if !victim.join().is_err_and(|e| e.is_killed()) {
                    fail("the killed getter");
                }
                for i in 1..=10 {
                    if moss::timeout(Duration::from_secs(10), || q2.put(i)).is_err() {
                        fail("put");
                    }
                }
                exit_now(0)
            });
            let pid = forker.join().unwrap();
            let mut got = vec![parked.join().unwrap().unwrap()];
            for _ in 1..10 {
                got.push(q.get_timeout(Duration::from_secs(10)).unwrap());
            }
            got.sort();
            assert_eq!(got, (1..=10).collect::<Vec<_>>());
            assert_eq!(util::exit_code_of(pid), 0);
            for _ in 0..20 {
                let t = Instant::now();
                assert_eq!(q.get_timeout(Duration::from_millis(5)), Err(Timeout));
                assert!(t.elapsed() < Duration::from_secs(5));
            }
        },
    );
}

/// A child process SIGKILLed while it waits in `get` on an empty queue
/// (it holds the readers' lock, but no item has started): the queue goes
/// on working for the parent, which takes the lock over.
#[test]
fn a_getter_killed_while_waiting_leaves_the_queue_working() {
    util::isolated(
        "a_getter_killed_while_waiting_leaves_the_queue_working",
        Duration::from_secs(60),
        || {
            let q = Arc::new(ProcessQueue::<u32>::new(4).unwrap());
            let ready = Arc::new(ProcessQueue::<()>::new(1).unwrap());
            let (q2, ready2) = (q.clone(), ready.clone());
            let child = moss::pool::Process::new(move || {
                ready2.put(());
                q2.get();
            })
            .start()
            .unwrap();
            ready.get_timeout(Duration::from_secs(10)).unwrap();
            // Parked in the get, holding the readers' lock.
            util::until_process_sleeps(child.pid());
            child.kill().unwrap();
            child.join().unwrap();
            q.put(7);
            assert_eq!(
                q.checked_get(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string()),
                Ok(7)
            );
        },
    );
}

/// A child process SIGKILLed while its `put` waits for room in the full
/// data pipe (it holds the writers' lock and its item's slot, but has
/// written no byte of the item): the queue goes on working, with every item
/// the child had put, in order, every slot back and the count right.
#[test]
fn a_putter_killed_before_its_first_byte_leaves_the_queue_working() {
    util::isolated(
        "a_putter_killed_before_its_first_byte_leaves_the_queue_working",
        Duration::from_secs(60),
        || {
            const CAPACITY: usize = 400;
            const BYTES: usize = 4000;
            // Each frame is written whole or not at all (at most PIPE_BUF
            // bytes): the data pipe (1 MiB, or 64 KiB where it cannot
            // grow) is full with fewer than CAPACITY items, and the put
            // after them waits with none of its bytes written.
            let q = Arc::new(ProcessQueue::<(u32, Vec<u8>)>::new(CAPACITY).unwrap());
            let ready = Arc::new(ProcessQueue::<()>::new(1).unwrap());
            let (q2, ready2) = (q.clone(), ready.clone());
            let child = moss::pool::Process::new(move || {
                ready2.put(());
                for i in 0.. {
                    q2.put((i, vec![7; BYTES]));
                }
            })
            .start()
            .unwrap();
            ready.get_timeout(Duration::from_secs(10)).unwrap();
            util::until_process_sleeps(child.pid());
            // The items written, and the one waiting for room.
            let counted = q.len();
            assert!((2..CAPACITY).contains(&counted), "{counted} items");
            child.kill().unwrap();
            child.join().unwrap();
            // This put takes the writers' lock over, then waits for room.
            let last = moss::spawn({
                let q = q.clone();
                move || q.checked_put((u32::MAX, Vec::new()), None)
            });
            let mut got = Vec::new();
            loop {
                let (i, v) = q.checked_get(Some(Duration::from_secs(20))).unwrap();
                got.push((i, v.len()));
                if i == u32::MAX {
                    break;
                }
            }
            let want: Vec<(u32, usize)> = (0..counted as u32 - 1)
                .map(|i| (i, BYTES))
                .chain([(u32::MAX, 0)])
                .collect();
            assert_eq!(got, want);
            last.join().unwrap().unwrap();
            assert_eq!(q.len(), 0);
            for i in 0..CAPACITY as u32 {
                assert!(q.put_nowait((i, Vec::new())).is_ok(), "slot {i} is lost");
            }
            assert!(q.put_nowait((0, Vec::new())).is_err(), "a slot too many");
            assert_eq!(q.len(), CAPACITY);
        },
    );
}

/// At the fd limit a wait cannot duplicate the queue's fd: it polls with
/// growing naps instead, and still ends at its deadline (the fallback used
/// to nap 5 ms and report "ready" whatever the deadline, so a timed get
/// on an empty queue never returned), while the hub keeps running.
#[test]
fn process_queue_timeouts_at_the_fd_limit() {
    util::isolated(
        "process_queue_timeouts_at_the_fd_limit",
        Duration::from_secs(60),
        || {
            let q = ProcessQueue::<u32>::new(2).unwrap();
            let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let t2 = ticks.clone();
            let ticker = moss::spawn(move || {
                loop {
                    moss::sleep(Duration::from_millis(5));
                    t2.set(t2.get() + 1);
                }
            });
            moss::sleep(Duration::from_millis(10)); // the hub and its timers exist
            let lim = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            // SAFETY: lowers this (test child) process's own fd limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
            let mut taken = Vec::new();
            loop {
                // SAFETY: dup of stdin; closed below.
                let fd = unsafe { libc::dup(0) };
                if fd < 0 {
                    break;
                }
                taken.push(fd);
            }
            let t = Instant::now();
            for i in 0..10 {
                let t = Instant::now();
                assert_eq!(q.get_timeout(Duration::from_millis(30)), Err(Timeout));
                let took = t.elapsed();
                assert!(took < Duration::from_secs(5), "get {i} took {took:?}");
            }
            let elapsed = t.elapsed();
            let n = ticks.get();
            for fd in taken {
                // SAFETY: our own duplicates.
                unsafe { libc::close(fd) };
            }
            ticker.kill();
            // 300 ms of waits: the ticker ran meanwhile (~60 ticks if idle).
            assert!(
                n >= 5,
                "{n} ticks in {elapsed:?}: the waits blocked the hub"
            );
        },
    );
}

/// Timeouts work in the child's fresh hub, also for a coroutine that forked
/// inside a `timeout` of the parent's; and a coroutine of the child that
/// forks again makes a grandchild with a hub of its own, which exits 0 when
/// that coroutine returns.
#[test]
fn timeouts_and_a_second_fork_in_the_child() {
    util::isolated(
        "timeouts_and_a_second_fork_in_the_child",
        Duration::from_secs(30),
        || {
            let forker = moss::spawn(|| {
                moss::timeout(Duration::from_secs(20), || {
                    let pid = util::fork();
                    if pid != 0 {
                        return pid;
                    }
                    let t = Instant::now();
                    let r = moss::timeout(Duration::from_millis(30), || {
                        moss::sleep(Duration::from_secs(10))
                    });
                    if r.is_ok() || t.elapsed() > Duration::from_secs(5) {
                        exit_now(2);
                    }
                    let grandchild = moss::spawn(|| {
                        let pid = util::fork();
                        if pid == 0 {
                            moss::sleep(Duration::from_millis(10));
                            return 0; // the grandchild exits 0
                        }
                        util::exit_code_of(pid)
                    })
                    .join()
                    .unwrap();
                    exit_now(if grandchild == 0 { 0 } else { 3 })
                })
                .unwrap()
            });
            let pid = forker.join().unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

/// A `moss::net` socket keeps the registration it waited through and waits
/// through it again directly. One that waited in the parent, used in a
/// forked child (a fresh hub), registers anew there and gets its data; the
/// parent's use of it goes on undisturbed.
#[test]
fn a_socket_that_waited_in_the_parent_waits_in_a_forked_child() {
    util::isolated(
        "a_socket_that_waited_in_the_parent_waits_in_a_forked_child",
        Duration::from_secs(30),
        || {
            let (a, b) = moss::net::UnixStream::pair().unwrap();
            let (a, b) = (std::rc::Rc::new(a), std::rc::Rc::new(b));
            let w = b.clone();
            let writer = moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                (&*w).write_all(b"p").unwrap();
            });
            let mut buf = [0u8; 8];
            // A wait (the registration is kept), then a short read.
            assert_eq!((&*a).read(&mut buf).unwrap(), 1);
            writer.join().unwrap();
            let (ca, cb) = (a.clone(), b.clone());
            let forker = moss::spawn(move || {
                let pid = util::fork();
                if pid == 0 {
                    let h = moss::spawn(move || {
                        moss::sleep(Duration::from_millis(50));
                        (&*cb).write_all(b"child").unwrap();
                    });
                    let mut got = [0u8; 5];
                    let ok = (&*ca).read_exact(&mut got).is_ok() && &got == b"child";
                    let ok = ok && h.join().is_ok();
                    exit_now(if ok { 0 } else { 1 });
                }
                pid
            });
            let pid = forker.join().unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
            let w = b.clone();
            let writer = moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                (&*w).write_all(b"parent").unwrap();
            });
            let mut got = [0u8; 6];
            (&*a).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"parent");
            writer.join().unwrap();
        },
    );
}
