//! A forked child gets a fresh hub, whatever context forked: a greenlet
//! inside a coroutine, a thread pool worker, a signal handler's coroutine,
//! a coroutine inside a pending `timeout` or holding a lock that another
//! coroutine waits on; and the child then uses moss (coroutines, sleeps,
//! queues, locks, signals, thread pools, name lookups, patched std sockets
//! it inherited or made). Each case runs in a child process of this test
//! binary (the failure modes are hangs and crashes); the forked child
//! reports by its exit status: 0 when every check there held.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use moss::sync::{Event, Mutex, Queue};

/// Ends the forked child with `ok`'s verdict, without the parent's
/// destructors or atexit handlers: 0 if it held, 1 if it failed, 2 if it
/// panicked.
fn finish_child(ok: impl FnOnce() -> bool) -> ! {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(ok));
    let code = match r {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(_) => 2,
    };
    // SAFETY: ends the forked child at once.
    unsafe { libc::_exit(code) }
}

/// What every forked child checks: coroutines, sleeps, a queue hand-off, a
/// timeout and a thread pool work on its fresh hub.
fn moss_works() -> bool {
    let q = Arc::new(Queue::unbounded());
    let q2 = q.clone();
    let h = moss::spawn(move || {
        moss::sleep(Duration::from_millis(5));
        q2.put(7u32);
    });
    let got = q.get_timeout(Duration::from_secs(5));
    h.join().unwrap();
    let timed = moss::timeout(Duration::from_millis(10), || {
        moss::sleep(Duration::from_secs(3600))
    });
    let pool = moss::pool::ThreadPool::new(1);
    let from_thread = pool.apply(|| 6 * 7);
    let verdict = (got, timed.is_err(), from_thread);
    if verdict != (Ok(7), true, Ok(42)) {
        eprintln!("moss in the child: queue, timeout, thread pool: {verdict:?}");
        return false;
    }
    true
}

#[test]
fn fork_from_a_greenlet_inside_a_coroutine() {
    util::isolated(
        "fork_from_a_greenlet_inside_a_coroutine",
        Duration::from_secs(40),
        || {
            let h = moss::spawn(|| {
                let g = moss::greenlet::Greenlet::new(|_: i32| {
                    let pid = util::fork();
                    if pid == 0 {
                        finish_child(moss_works);
                    }
                    pid
                });
                g.switch(0)
            });
            let pid = h.join().unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

#[test]
fn fork_from_a_thread_pool_worker() {
    util::isolated(
        "fork_from_a_thread_pool_worker",
        Duration::from_secs(40),
        || {
            let pool = moss::pool::ThreadPool::new(1);
            // The worker ran moss before (a hub of its own on that thread).
            pool.apply(|| moss::sleep(Duration::from_millis(1)))
                .unwrap();
            let pid = pool
                .apply(|| {
                    let pid = util::fork();
                    if pid == 0 {
                        finish_child(moss_works);
                    }
                    pid
                })
                .unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
            // The pool goes on in the parent.
            assert_eq!(pool.apply(|| 5).unwrap(), 5);
        },
    );
}

#[test]
fn fork_from_a_signal_handlers_coroutine() {
    util::isolated(
        "fork_from_a_signal_handlers_coroutine",
        Duration::from_secs(40),
        || {
            let pids = Arc::new(Queue::unbounded());
            let p = pids.clone();
            let _handler = moss::signal::handler(moss::signal::SIGUSR1, move || {
                let pid = util::fork();
                if pid == 0 {
                    finish_child(moss_works);
                }
                p.put(pid);
            })
            .unwrap();
            // SAFETY: a signal to this process; moss catches it.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
            let pid = pids.get_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

/// The parent's timeout does not follow the coroutine into the child (the
/// child's sleep outlasts the deadline and returns normally), and the
/// scope ends cleanly there; in the parent it fires as usual.
#[test]
fn fork_inside_a_pending_timeout() {
    util::isolated(
        "fork_inside_a_pending_timeout",
        Duration::from_secs(40),
        || {
            let h = moss::spawn(|| {
                let mut pid = 0;
                let r = moss::timeout(Duration::from_millis(100), || {
                    pid = util::fork();
                    if pid == 0 {
                        moss::sleep(Duration::from_millis(300));
                    } else {
                        moss::sleep(Duration::from_secs(3600));
                    }
                });
                if pid == 0 {
                    finish_child(|| r.is_ok() && moss_works());
                }
                assert!(r.is_err(), "the parent's timeout fired");
                pid
            });
            let pid = h.join().unwrap();
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

/// A process forks while it holds a `Mutex` and an `RwLock` that its
/// coroutines wait on, and while others wait on a `Queue` and a
/// `Semaphore`: those waiters are the parent's and never run in the
/// child, so nothing may be handed to them there. In the child the locks,
/// once released, can be taken again, an item put is there to get, a
/// released permit can be acquired; in the parent the waiters get them.
#[test]
fn fork_while_coroutines_wait_on_locks_queues_and_permits() {
    util::isolated(
        "fork_while_coroutines_wait_on_locks_queues_and_permits",
        Duration::from_secs(40),
        || {
            let m = Arc::new(Mutex::new(0u32));
            let rw = Arc::new(moss::sync::RwLock::new(0u32));
            let q = Arc::new(Queue::unbounded());
            let sem = Arc::new(moss::sync::Semaphore::new(0));
            let g = m.lock();
            let w = rw.write();
            let (m2, rw2) = (m.clone(), rw.clone());
            let locker = moss::spawn(move || {
                *m2.lock() += 1;
                drop(rw2.read());
            });
            let (rw3, q2, sem2) = (rw.clone(), q.clone(), sem.clone());
            let writer = moss::spawn(move || *rw3.write() += 1);
            let getter = moss::spawn(move || q2.get());
            let acquirer = moss::spawn(move || sem2.acquire());
            for h in [locker.id(), writer.id(), getter.id(), acquirer.id()] {
                util::until_parked(h);
            }
            let pid = util::fork();
            if pid == 0 {
                finish_child(|| {
                    drop(g);
                    drop(w);
                    let again = m.lock_timeout(Duration::from_secs(5)).is_ok();
                    let read = rw.read_timeout(Duration::from_secs(5)).is_ok();
                    let write = rw.write_timeout(Duration::from_secs(5)).is_ok();
                    q.put(5u32);
                    let item = q.get_timeout(Duration::from_secs(5)) == Ok(5);
                    sem.release();
                    let permit = sem.acquire_timeout(Duration::from_secs(5)).is_ok();
                    let verdict = [again, read, write, item, permit];
                    eprintln!("child: lock, read, write, item, permit: {verdict:?}");
                    verdict.iter().all(|&v| v) && moss_works()
                });
            }
            drop(g);
            drop(w);
            q.put(6);
            sem.release();
            locker.join().unwrap();
            writer.join().unwrap();
            assert_eq!(getter.join().unwrap(), 6);
            acquirer.join().unwrap();
            assert_eq!(*m.lock(), 1);
            assert_eq!(*rw.read(), 1);
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

/// Signals in a child forked while the parent waits for one: the child's
/// own waits and handlers get the signals sent to the child, the parent's
/// get those sent to it.
#[test]
fn signal_waits_in_a_child_forked_while_the_parent_waits() {
    util::isolated(
        "signal_waits_in_a_child_forked_while_the_parent_waits",
        Duration::from_secs(40),
        || {
            let waiter = moss::spawn(|| moss::signal::wait(&[moss::signal::SIGUSR2]).unwrap());
            util::until_parked(waiter.id());
            let pid = util::fork();
            if pid == 0 {
                finish_child(|| {
                    let w = moss::spawn(|| {
                        moss::signal::wait_timeout(&[libc::SIGUSR1], Duration::from_secs(10))
                            .unwrap()
                    });
                    moss::sleep(Duration::from_millis(20));
                    // SAFETY: a signal to this (child) process; moss catches it.
                    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                    w.join().unwrap() == Some(libc::SIGUSR1) && moss_works()
                });
            }
            assert_eq!(util::exit_code_of(pid), 0);
            // SAFETY: a signal to this process; moss catches it.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
            assert_eq!(waiter.join().unwrap(), libc::SIGUSR2);
        },
    );
}

/// Name lookups run on a shared thread pool; the child forked after the
/// parent used it has no such threads, and looks names up all the same.
#[test]
fn lookup_host_in_a_child_after_the_parent_used_it() {
    util::isolated(
        "lookup_host_in_a_child_after_the_parent_used_it",
        Duration::from_secs(40),
        || {
            assert!(moss::net::lookup_host("localhost:80").unwrap().count() > 0);
            let pid = util::fork();
            if pid == 0 {
                finish_child(|| {
                    let ok = moss::net::lookup_host("localhost:80")
                        .map(|a| a.count() > 0)
                        .unwrap_or(false);
                    ok && moss_works()
                });
            }
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

/// Under `patch_all`, std sockets the parent used in coroutines (their fds
/// known to the parent's hub) work in the child: it reads and writes an
/// inherited connection, waiting cooperatively (a ticker runs meanwhile),
/// and serves a new connection of its own.
#[test]
fn patched_std_sockets_inherited_by_a_forked_child() {
    util::isolated_patched(
        "patched_std_sockets_inherited_by_a_forked_child",
        Duration::from_secs(40),
        || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let client = moss::spawn(move || std::net::TcpStream::connect(addr).unwrap());
            let (mut server_side, _) = l.accept().unwrap();
            let mut client = client.join().unwrap();
            // One exchange in the parent: the fds are in use on its hub.
            let echo = moss::spawn(move || {
                let mut b = [0u8; 4];
                server_side.read_exact(&mut b).unwrap();
                server_side.write_all(&b).unwrap();
                server_side
            });
            client.write_all(b"abcd").unwrap();
            let mut b = [0u8; 4];
            client.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"abcd");
            let mut server_side = echo.join().unwrap();
            let pid = util::fork();
            if pid == 0 {
                finish_child(move || {
                    let (ticks, ticker) = util::ticker();
                    // The parent writes "ping" after a while.
                    let mut b = [0u8; 4];
                    server_side.read_exact(&mut b).unwrap();
                    server_side.write_all(b"pong").unwrap();
                    let waited_cooperatively = ticks.get() >= 2;
                    ticker.kill();
                    // A connection of the child's own.
                    let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let a2 = l2.local_addr().unwrap();
                    let srv = util::std_echo_server(l2, 1);
                    let mut c = std::net::TcpStream::connect(a2).unwrap();
                    c.write_all(b"xyz").unwrap();
                    let mut e = [0u8; 3];
                    c.read_exact(&mut e).unwrap();
                    drop(c);
                    srv.join().unwrap();
                    &b == b"ping" && &e == b"xyz" && waited_cooperatively && moss_works()
                });
            }
            moss::sleep(Duration::from_millis(100));
            client.write_all(b"ping").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut b = [0u8; 4];
            client.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"pong");
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}

/// A child forks a grandchild while its own coroutines wait; the grandchild
/// gets a fresh hub too, and an `Event` set by the child's coroutine reaches
/// the child's waiter, not the grandchild's copy.
#[test]
fn a_grandchild_forked_from_a_childs_coroutine() {
    util::isolated(
        "a_grandchild_forked_from_a_childs_coroutine",
        Duration::from_secs(40),
        || {
            let pid = util::fork();
            if pid == 0 {
                finish_child(|| {
                    let ev = Arc::new(Event::new());
                    let ev2 = ev.clone();
                    let waiter = moss::spawn(move || ev2.wait_timeout(Duration::from_secs(10)));
                    util::until_parked(waiter.id());
                    let forker = moss::spawn(move || {
                        let pid = util::fork();
                        if pid == 0 {
                            finish_child(moss_works);
                        }
                        ev.set();
                        util::exit_code_of(pid)
                    });
                    forker.join().unwrap() == 0 && waiter.join().unwrap()
                });
            }
            assert_eq!(util::exit_code_of(pid), 0);
        },
    );
}
