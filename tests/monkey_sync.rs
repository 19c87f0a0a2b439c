//! After `patch_all`, std's synchronisation (Mutex, Condvar, mpsc, OnceLock,
//! Barrier, RwLock, thread joins) parks coroutines instead of their thread.
//!
//! Without the futex and `pthread_join` hooks most of these cases freeze
//! the hub for good, so each runs in a child process of this test binary
//! (`util::run_in_child`), under a watchdog.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod util;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock, RwLock, mpsc};
use std::time::{Duration, Instant};

/// Runs `body` patched in a child process (the test named `case`) and
/// asserts that it passed there.
fn in_child(case: &str, body: impl FnOnce()) {
    if util::in_child(case) {
        moss::monkey::patch_all();
        let _wd = util::watchdog(case, Duration::from_secs(40));
        body();
        return;
    }
    let r = util::run_in_child(case, Duration::from_secs(60));
    assert!(r.success(), "{case} failed in its child process: {r:#?}");
}

#[test]
fn std_mutex_held_across_a_sleep_is_shared_by_two_coroutines() {
    in_child(
        "std_mutex_held_across_a_sleep_is_shared_by_two_coroutines",
        || {
            let m = Arc::new(Mutex::new(Vec::new()));
            let (ticks, tk) = util::ticker();
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let m = m.clone();
                    moss::spawn(move || {
                        for round in 0..3 {
                            let mut g = m.lock().unwrap();
                            g.push((i, round, "in"));
                            moss::sleep(Duration::from_millis(20));
                            g.push((i, round, "out"));
                        }
                    })
                })
                .collect();
            for r in moss::join_all(hs) {
                r.unwrap();
            }
            let log = m.lock().unwrap().clone();
            assert_eq!(log.len(), 12);
            // Exclusion: every "in" is directly followed by its own "out".
            for pair in log.chunks(2) {
                assert_eq!((pair[0].0, pair[0].1), (pair[1].0, pair[1].1), "{log:?}");
                assert_eq!((pair[0].2, pair[1].2), ("in", "out"));
            }
            // 6 holds of >= 20 ms each: the ticker ran meanwhile.
            assert!(ticks.get() >= 2, "ticker starved: {}", ticks.get());
            tk.kill();
        },
    );
}

#[test]
fn mpsc_consumer_coroutine_fed_by_a_coroutine_of_another_hub() {
    // std's channels never wake a receiver on the sender's own thread, so
    // the producer runs on another hub (a coroutine of another thread).
    in_child(
        "mpsc_consumer_coroutine_fed_by_a_coroutine_of_another_hub",
        || {
            let (tx, rx) = mpsc::sync_channel::<u32>(2);
            let (ticks, tk) = util::ticker();
            let consumer = moss::spawn(move || rx.iter().collect::<Vec<_>>());
            let producer = std::thread::spawn(move || {
                moss::run(move || {
                    moss::spawn(move || {
                        for i in 0..50 {
                            if i % 10 == 0 {
                                moss::sleep(Duration::from_millis(10));
                            }
                            tx.send(i).unwrap();
                        }
                    });
                })
            });
            assert_eq!(consumer.join().unwrap(), (0..50).collect::<Vec<_>>());
            producer.join().unwrap();
            assert!(ticks.get() >= 2, "ticker starved: {}", ticks.get());
            tk.kill();
        },
    );
}

#[test]
fn several_coroutines_of_one_thread_blocked_in_mpsc_at_once() {
    // Each receiver parks in the thread's single std parker: the hook's
    // group mode (see the monkey docs) keeps every wake-up.
    in_child(
        "several_coroutines_of_one_thread_blocked_in_mpsc_at_once",
        || {
            const N: usize = 8;
            let mut txs = Vec::new();
            let hs: Vec<_> = (0..N)
                .map(|i| {
                    let (tx, rx) = mpsc::channel::<usize>();
                    txs.push(tx);
                    moss::spawn(move || {
                        let mut got = Vec::new();
                        for _ in 0..20 {
                            got.push(rx.recv().unwrap());
                        }
                        assert!(got.iter().all(|&v| v == i), "{i}: {got:?}");
                        got.len()
                    })
                })
                .collect();
            moss::yield_now();
            // Senders: a plain thread for the even receivers, a coroutine of
            // another hub for the odd ones, interleaved with the waits.
            let (even, odd): (Vec<_>, Vec<_>) =
                txs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
            let plain = std::thread::spawn(move || {
                for round in 0..20 {
                    for (i, tx) in &even {
                        tx.send(*i).unwrap();
                    }
                    if round % 5 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
            let other_hub = std::thread::spawn(move || {
                moss::run(move || {
                    moss::spawn(move || {
                        for _ in 0..20 {
                            for (i, tx) in &odd {
                                tx.send(*i).unwrap();
                            }
                            moss::sleep(Duration::from_millis(1));
                        }
                    });
                })
            });
            let t = Instant::now();
            for r in moss::join_all(hs) {
                assert_eq!(r.unwrap(), 20);
            }
            other_hub.join().unwrap();
            plain.join().unwrap();
            assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        },
    );
}

#[test]
fn condvar_wait_and_notify_between_coroutines() {
    in_child("condvar_wait_and_notify_between_coroutines", || {
        let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let pair = pair.clone();
                moss::spawn(move || {
                    let (m, cv) = &*pair;
                    let g = cv.wait_while(m.lock().unwrap(), |v| *v < 3).unwrap();
                    *g
                })
            })
            .collect();
        let notifier = {
            let pair = pair.clone();
            moss::spawn(move || {
                let (m, cv) = &*pair;
                for _ in 0..3 {
                    moss::sleep(Duration::from_millis(10));
                    *m.lock().unwrap() += 1;
                    cv.notify_all();
                }
            })
        };
        notifier.join().unwrap();
        for r in moss::join_all(waiters) {
            assert_eq!(r.unwrap(), 3);
        }
    });
}

#[test]
fn condvar_wait_timeout_times_out_while_others_run() {
    in_child("condvar_wait_timeout_times_out_while_others_run", || {
        let (ticks, tk) = util::ticker();
        let h = moss::spawn(|| {
            let m = Mutex::new(());
            let cv = Condvar::new();
            let t = Instant::now();
            let (_g, r) = cv
                .wait_timeout(m.lock().unwrap(), Duration::from_millis(100))
                .unwrap();
            (r.timed_out(), t.elapsed())
        });
        let (timed_out, took) = h.join().unwrap();
        assert!(timed_out);
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(ticks.get() >= 2, "ticker starved: {}", ticks.get());
        tk.kill();
    });
}

#[test]
fn oncelock_initializer_sleeps_while_ten_coroutines_wait() {
    in_child(
        "oncelock_initializer_sleeps_while_ten_coroutines_wait",
        || {
            let cell = Arc::new(OnceLock::new());
            let runs = Arc::new(AtomicUsize::new(0));
            let t = Instant::now();
            let hs: Vec<_> = (0..11)
                .map(|i| {
                    let (cell, runs) = (cell.clone(), runs.clone());
                    moss::spawn(move || {
                        *cell.get_or_init(|| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            moss::sleep(Duration::from_millis(100));
                            i * 100 + 7
                        })
                    })
                })
                .collect();
            let vals: Vec<_> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            assert!(vals.iter().all(|&v| v == vals[0]), "{vals:?}");
            assert_eq!(vals[0] % 100, 7);
            // Waiting for one 100 ms initialisation, not eleven.
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        },
    );
}

#[test]
fn barrier_and_rwlock_between_coroutines() {
    in_child("barrier_and_rwlock_between_coroutines", || {
        let barrier = Arc::new(Barrier::new(4));
        let lock = Arc::new(RwLock::new(0u32));
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (barrier, lock) = (barrier.clone(), lock.clone());
                moss::spawn(move || {
                    if i == 0 {
                        let mut w = lock.write().unwrap();
                        moss::sleep(Duration::from_millis(30));
                        *w = 42;
                    }
                    let leader = barrier.wait().is_leader();
                    let v = *lock.read().unwrap();
                    (leader, v)
                })
            })
            .collect();
        let rs: Vec<_> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
        assert_eq!(rs.iter().filter(|(l, _)| *l).count(), 1, "{rs:?}");
        assert!(rs.iter().all(|&(_, v)| v == 42), "{rs:?}");
    });
}

#[test]
fn std_thread_joined_from_a_coroutine_while_others_run() {
    in_child(
        "std_thread_joined_from_a_coroutine_while_others_run",
        || {
            let (ticks, tk) = util::ticker();
            let h = moss::spawn(|| {
                let th = std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(150));
                    "from the thread".to_string()
                });
                th.join().unwrap()
            });
            // A thread that has already finished is joined at once.
            let quick = std::thread::spawn(|| 5);
            std::thread::sleep(Duration::from_millis(20));
            let q = moss::spawn(move || quick.join().unwrap());
            assert_eq!(q.join().unwrap(), 5);
            assert_eq!(h.join().unwrap(), "from the thread");
            assert!(ticks.get() >= 5, "ticker starved: {}", ticks.get());
            tk.kill();
        },
    );
}

#[test]
fn tiny_http_server_loop_in_a_coroutine_serves_ureq_coroutines() {
    in_child(
        "tiny_http_server_loop_in_a_coroutine_serves_ureq_coroutines",
        || {
            let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let port = server.server_addr().to_ip().unwrap().port();
            const CLIENTS: usize = 6;
            let srv = {
                let server = server.clone();
                moss::spawn(move || {
                    // tiny_http's blocking loop: recv waits on its
                    // Mutex/Condvar queue.
                    for _ in 0..CLIENTS {
                        let req = server.recv().unwrap();
                        let body = format!("hello {}", req.url());
                        req.respond(tiny_http::Response::from_string(body)).unwrap();
                    }
                })
            };
            let hs: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    moss::spawn(move || {
                        let url = format!("http://127.0.0.1:{port}/c{i}");
                        ureq::get(&url).call().unwrap().into_string().unwrap()
                    })
                })
                .collect();
            for (i, r) in moss::join_all(hs).into_iter().enumerate() {
                assert_eq!(r.unwrap(), format!("hello /c{i}"));
            }
            srv.join().unwrap();
        },
    );
}

#[test]
fn wake_ups_from_a_plain_thread_and_from_another_hub() {
    in_child("wake_ups_from_a_plain_thread_and_from_another_hub", || {
        let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
        let (ticks, tk) = util::ticker();
        let waiter = {
            let pair = pair.clone();
            moss::spawn(move || {
                let (m, cv) = &*pair;
                let g = cv.wait_while(m.lock().unwrap(), |v| *v < 1).unwrap();
                drop(g);
                // Second wait: released by a coroutine of another hub.
                let g = cv.wait_while(m.lock().unwrap(), |v| *v < 2).unwrap();
                *g
            })
        };
        moss::yield_now();
        let p = pair.clone();
        // A thread with no hub. (Never back from 2 to 1: a loaded machine
        // can run this thread after the other hub's coroutine.)
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut g = p.0.lock().unwrap();
            *g = (*g).max(1);
            p.1.notify_one();
        });
        let p = pair.clone();
        // Another hub: a coroutine that holds the mutex across a sleep.
        std::thread::spawn(move || {
            moss::run(move || {
                moss::spawn(move || {
                    moss::sleep(Duration::from_millis(100));
                    let mut g = p.0.lock().unwrap();
                    moss::sleep(Duration::from_millis(20));
                    *g = 2;
                    p.1.notify_all();
                });
            })
        });
        assert_eq!(waiter.join().unwrap(), 2);
        assert!(ticks.get() >= 2, "ticker starved: {}", ticks.get());
        tk.kill();
    });
}

#[test]
fn the_root_runs_its_hub_while_it_waits_for_a_std_mutex() {
    in_child(
        "the_root_runs_its_hub_while_it_waits_for_a_std_mutex",
        || {
            let m = Arc::new(Mutex::new(0u32));
            let holder = {
                let m = m.clone();
                moss::spawn(move || {
                    let mut g = m.lock().unwrap();
                    // Long enough for 2 ticks of 10 ms on a loaded machine.
                    moss::sleep(Duration::from_millis(200));
                    *g = 9;
                })
            };
            let (ticks, tk) = util::ticker();
            moss::yield_now(); // the holder takes the lock
            // The root blocks in Mutex::lock: the hub runs the holder (which
            // releases it) and the ticker meanwhile.
            assert_eq!(*m.lock().unwrap(), 9);
            assert!(ticks.get() >= 2, "ticker starved: {}", ticks.get());
            holder.join().unwrap();
            tk.kill();
        },
    );
}

#[test]
fn a_coroutine_killed_in_mutex_lock_unwinds_and_the_mutex_stays_usable() {
    in_child(
        "a_coroutine_killed_in_mutex_lock_unwinds_and_the_mutex_stays_usable",
        || {
            let m = Arc::new(Mutex::new(0u32));
            let drops = util::DropCounter::new();
            let holder = {
                let m = m.clone();
                moss::spawn(move || {
                    let mut g = m.lock().unwrap();
                    moss::sleep(Duration::from_millis(100));
                    *g += 1;
                })
            };
            moss::yield_now();
            let victim = {
                let (m, token) = (m.clone(), drops.token());
                moss::spawn(move || {
                    let _token = token;
                    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                    *g += 10;
                    // The kill is delivered here, guard held.
                    moss::sleep(Duration::from_secs(30));
                    *g += 100;
                })
            };
            util::until_parked(victim.id());
            let t = Instant::now();
            victim.kill();
            let r = victim.join();
            assert!(r.unwrap_err().is_killed());
            assert_eq!(drops.drops(), 1);
            // The kill took effect once the lock was acquired (the holder
            // released it at ~100 ms), not after the 30 s sleep.
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
            holder.join().unwrap();
            // Poisoned by the unwind, but consistent and still usable.
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            assert_eq!(*g, 11);
            *g += 1;
            drop(g);
            let other = {
                let m = m.clone();
                moss::spawn(move || *m.lock().unwrap_or_else(|e| e.into_inner()))
            };
            assert_eq!(other.join().unwrap(), 12);
        },
    );
}

#[test]
fn a_timeout_around_a_std_lock_reports_elapsed() {
    in_child("a_timeout_around_a_std_lock_reports_elapsed", || {
        let m = Arc::new(Mutex::new(()));
        let holder = {
            let m = m.clone();
            moss::spawn(move || {
                let _g = m.lock().unwrap();
                moss::sleep(Duration::from_millis(100));
            })
        };
        moss::yield_now();
        let m2 = m.clone();
        let h = moss::spawn(move || {
            moss::timeout(Duration::from_millis(20), || {
                let _g = m2.lock().unwrap();
                7
            })
        });
        assert!(h.join().unwrap().is_err(), "timeout fired during the wait");
        holder.join().unwrap();
        assert!(m.try_lock().is_ok());
    });
}

#[test]
fn raw_futex_calls_keep_kernel_semantics_in_coroutines() {
    in_child(
        "raw_futex_calls_keep_kernel_semantics_in_coroutines",
        || {
            let h = moss::spawn(|| {
                let word = AtomicU32::new(5);
                let futex = |op: i32, val: u32, ts: *const libc::timespec| {
                    // SAFETY: a valid futex word and timespec (or null).
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            word.as_ptr(),
                            op | libc::FUTEX_PRIVATE_FLAG,
                            val,
                            ts,
                            std::ptr::null::<u32>(),
                            u32::MAX,
                        )
                    };
                    (r, std::io::Error::last_os_error().raw_os_error().unwrap())
                };
                // Value mismatch: EAGAIN at once.
                assert_eq!(futex(libc::FUTEX_WAIT, 4, std::ptr::null()).0, -1);
                assert_eq!(futex(libc::FUTEX_WAIT, 4, std::ptr::null()).1, libc::EAGAIN);
                // Relative timeout.
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 30_000_000,
                };
                let t = Instant::now();
                let (r, e) = futex(libc::FUTEX_WAIT, 5, &ts);
                assert_eq!((r, e), (-1, libc::ETIMEDOUT));
                assert!(t.elapsed() >= Duration::from_millis(30));
                // Absolute CLOCK_MONOTONIC timeout already past.
                let (r, e) = futex(libc::FUTEX_WAIT_BITSET, 5, &ts);
                assert_eq!((r, e), (-1, libc::ETIMEDOUT));
                // An invalid timespec is the kernel's EINVAL.
                let bad = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 2_000_000_000,
                };
                assert_eq!(futex(libc::FUTEX_WAIT, 5, &bad), (-1, libc::EINVAL));
                // A wake with nobody waiting wakes nobody.
                assert_eq!(futex(libc::FUTEX_WAKE, 1, std::ptr::null()).0, 0);
                // Other syscalls pass straight through, errno included.
                // SAFETY: closing an invalid fd.
                let r = unsafe { libc::syscall(libc::SYS_close, -1) };
                let e = std::io::Error::last_os_error().raw_os_error().unwrap();
                assert_eq!((r, e), (-1, libc::EBADF));
                // SAFETY: getpid has no arguments.
                let pid = unsafe { libc::syscall(libc::SYS_getpid) };
                assert_eq!(pid, std::process::id() as i64);
            });
            h.join().unwrap();
        },
    );
}

#[test]
fn a_raw_futex_wait_is_woken_by_a_wake_from_a_plain_thread() {
    in_child(
        "a_raw_futex_wait_is_woken_by_a_wake_from_a_plain_thread",
        || {
            let word = Arc::new(AtomicU32::new(0));
            // Set by the waiter just before each wait; ticks counted by a
            // coroutine of the waiter's hub, which runs only while the
            // waiter is parked (both Send: the waker thread reads them).
            let armed = Arc::new(AtomicU32::new(0));
            let ticks = Arc::new(AtomicU32::new(0));
            let tk = {
                let ticks = ticks.clone();
                moss::spawn(move || {
                    loop {
                        moss::sleep(Duration::from_millis(10));
                        ticks.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            let (w, a) = (word.clone(), armed.clone());
            let h = moss::spawn(move || {
                let mut spurious = 0;
                while w.load(Ordering::SeqCst) == 0 {
                    a.store(1, Ordering::SeqCst);
                    // SAFETY: a valid futex word; no timeout.
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            w.as_ptr(),
                            libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                            0u32,
                            std::ptr::null::<libc::timespec>(),
                            std::ptr::null::<u32>(),
                            0b10u32,
                        )
                    };
                    if r == 0 {
                        spurious += 1;
                    }
                }
                spurious
            });
            let (w, t) = (word.clone(), ticks.clone());
            let waker = std::thread::spawn(move || {
                // Wake only once the waiter waits: it armed, and then its hub
                // ran the ticker twice (which it can only do while the waiter
                // is parked). A wait that blocked the thread never lets it
                // tick: give up after 30 s, and the assertions below fail.
                let deadline = Instant::now() + Duration::from_secs(30);
                while armed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let t0 = t.load(Ordering::SeqCst);
                while t.load(Ordering::SeqCst) < t0 + 2 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                // A bitset that does not match wakes nobody.
                // SAFETY: a valid futex word.
                let none = unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        w.as_ptr(),
                        libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG,
                        1,
                        std::ptr::null::<libc::timespec>(),
                        std::ptr::null::<u32>(),
                        0b01u32,
                    )
                };
                w.store(1, Ordering::SeqCst);
                // SAFETY: a valid futex word.
                let woken = unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        w.as_ptr(),
                        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                        i32::MAX,
                    )
                };
                (none, woken)
            });
            assert!(h.join().unwrap() <= 1);
            assert_eq!(waker.join().unwrap(), (0, 1));
            assert!(
                ticks.load(Ordering::SeqCst) >= 2,
                "ticker starved: {}",
                ticks.load(Ordering::SeqCst)
            );
            tk.kill();
        },
    );
}

#[test]
fn futex_waits_on_thread_local_words_block_the_thread_parking_lot() {
    // parking_lot parks each *thread* on a futex word in a thread-local
    // record that it links into its wait queues: two coroutines of one
    // thread parked there at once would share (and corrupt) that record.
    // Waits on words in the calling thread's TLS therefore block the thread,
    // as without patching: correct, if not cooperative.
    in_child(
        "futex_waits_on_thread_local_words_block_the_thread_parking_lot",
        || {
            let m = Arc::new(parking_lot::Mutex::new(0u64));
            // Paces the rounds with the root. The holder never waits for the
            // root while it holds `m`: a coroutine blocked on `m` blocks the
            // root's thread, so such a wait could never end.
            let round = Arc::new(std::sync::Barrier::new(2));
            let holder = {
                let (m, round) = (m.clone(), round.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mut g = m.lock();
                        // The coroutines below are now trying to lock.
                        std::thread::sleep(Duration::from_millis(5));
                        *g += 1;
                        drop(g);
                        round.wait();
                    }
                })
            };
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (m, stop) = (m.clone(), stop.clone());
                    moss::spawn(move || {
                        let mut n = 0;
                        while !stop.load(Ordering::SeqCst) {
                            *m.lock() += 1;
                            n += 1;
                            moss::yield_now();
                        }
                        n
                    })
                })
                .collect();
            // Pace the holder's rounds from the root: in each, every
            // coroutine may be waiting in parking_lot at once.
            for _ in 0..20 {
                moss::sleep(Duration::from_millis(2));
                round.wait();
            }
            holder.join().unwrap();
            stop.store(true, Ordering::SeqCst);
            let total: u64 = moss::join_all(hs).into_iter().map(|r| r.unwrap()).sum();
            assert_eq!(*m.lock(), 20 + total);
        },
    );
}
