//! What happens to coroutines still alive when their thread exits: they are
//! killed (unwound) while the hub still runs, so they leave the wait lists of
//! shared objects (no hand-off is swallowed), their destructors run, and moss
//! keeps working in thread-local destructors. Cases that aborted before run
//! in a child process.

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use moss::sync::{Event, Mutex, Queue, Semaphore, bounded, channel};

mod util;

/// Runs `f` on a new thread (it spawns coroutines that are still blocked
/// when it returns) and waits for the thread to end.
fn on_exiting_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name("exiting".into())
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_get_blocked_at_thread_exit_does_not_swallow_the_next_put() {
    let q = Arc::new(Queue::<u32>::unbounded());
    let drops = util::DropCounter::new();
    let (q2, token) = (q.clone(), drops.token());
    on_exiting_thread(move || {
        let h = moss::spawn(move || {
            let _t = token;
            q2.get()
        });
        util::until_parked(h.id());
    });
    assert_eq!(drops.drops(), 1, "the blocked coroutine was unwound");
    q.put(1);
    assert_eq!(q.len(), 1, "the item stays in the queue");
    assert_eq!(q.get_timeout(Duration::from_secs(5)), Ok(1));
}

#[test]
fn a_lock_blocked_at_thread_exit_does_not_take_the_next_unlock() {
    let m = Arc::new(Mutex::new(0u32));
    let guard = m.lock();
    let m2 = m.clone();
    on_exiting_thread(move || {
        let h = moss::spawn(move || *m2.lock() += 1);
        util::until_parked(h.id());
    });
    drop(guard);
    let g = m
        .lock_timeout(Duration::from_secs(5))
        .expect("the mutex can be locked again");
    assert_eq!(*g, 0, "the killed waiter never held it");
}

#[test]
fn waiters_on_every_primitive_leave_at_thread_exit() {
    let q = Arc::new(Queue::<u32>::new(1));
    q.put(0); // full: a putter blocks
    let sem = Arc::new(Semaphore::new(0));
    let ev = Arc::new(Event::new());
    let (tx, rx) = channel::<u32>();
    let (btx, brx) = bounded::<u32>(0);
    let drops = util::DropCounter::new();
    {
        let (q, sem, ev) = (q.clone(), sem.clone(), ev.clone());
        let tokens: Vec<_> = (0..5).map(|_| drops.token()).collect();
        on_exiting_thread(move || {
            let mut tokens = tokens.into_iter();
            let mut t = move || tokens.next().unwrap();
            let hs = [
                moss::spawn({
                    let t = t();
                    move || {
                        let _t = t;
                        q.put(9); // blocks: the queue is full
                    }
                }),
                moss::spawn({
                    let t = t();
                    move || {
                        let _t = t;
                        sem.acquire();
                    }
                }),
                moss::spawn({
                    let t = t();
                    move || {
                        let _t = t;
                        ev.wait();
                    }
                }),
                moss::spawn({
                    let t = t();
                    move || {
                        let _t = t;
                        let _ = rx.recv();
                    }
                }),
                moss::spawn({
                    let t = t();
                    move || {
                        let _t = t;
                        let _ = btx.send(7); // no receiver takes it
                    }
                }),
            ];
            for h in &hs {
                util::until_parked(h.id());
            }
        });
    }
    assert_eq!(drops.drops(), 5, "every blocked coroutine was unwound");
    // The killed putter's item never entered the queue.
    assert_eq!(q.get_nowait(), Ok(0));
    assert!(q.get_nowait().is_err());
    // A released permit stays with the semaphore.
    sem.release();
    assert!(sem.try_acquire());
    ev.set();
    // The receiver is gone: the channel reports it.
    assert!(tx.send(1).is_err());
    // The killed sender's item was not delivered.
    assert!(brx.try_recv().is_err());
}

#[test]
fn a_destructor_that_sleeps_at_thread_exit_ends_early() {
    struct SleepsOnDrop(mpsc::Sender<Duration>);
    impl Drop for SleepsOnDrop {
        fn drop(&mut self) {
            let t = Instant::now();
            moss::sleep(Duration::from_secs(3600));
            let _ = self.0.send(t.elapsed());
        }
    }
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    on_exiting_thread(move || {
        let d = SleepsOnDrop(tx);
        let h = moss::spawn(move || {
            let _d = d;
            moss::sleep(Duration::from_secs(3600));
        });
        util::until_parked(h.id());
    });
    let slept = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(slept < Duration::from_secs(30), "{slept:?}");
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_destructor_that_waits_for_another_thread_at_exit_gets_its_item() {
    // A wait that cannot fail keeps waiting during the exit: the thread's
    // exit waits for the item another thread puts.
    struct GetsOnDrop(Arc<Queue<u32>>, mpsc::Sender<u32>);
    impl Drop for GetsOnDrop {
        fn drop(&mut self) {
            let _ = self.1.send(self.0.get());
        }
    }
    let q = Arc::new(Queue::unbounded());
    let (tx, rx) = mpsc::channel();
    let d = GetsOnDrop(q.clone(), tx);
    let exiting = std::thread::spawn(move || {
        let h = moss::spawn(move || {
            let _d = d;
            moss::sleep(Duration::from_secs(3600));
        });
        util::until_parked(h.id());
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "still waiting for the item");
    q.put(42);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(42));
    exiting.join().unwrap();
    assert_eq!(q.len(), 0);
}

#[test]
fn run_per_core_kills_what_can_never_finish() {
    let drops = util::DropCounter::new();
    let tokens = StdMutex::new((0..2).map(|_| drops.token()).collect::<Vec<_>>());
    moss::run_per_core(2, move |_| {
        let t = tokens.lock().unwrap().pop().unwrap();
        moss::spawn(move || {
            let _t = t;
            // Until killed: nothing can end it, so `run` stops waiting.
            moss::sleep(Duration::MAX);
        });
    });
    assert_eq!(drops.drops(), 2);
}

/// What a destructor that calls moss saw, reported to the test thread.
#[derive(Debug, PartialEq)]
struct Seen {
    joined: Result<u32, String>,
    slept_enough: bool,
}

/// Calls moss the way a destructor might: spawn + join, and a sleep.
fn use_moss() -> Seen {
    let joined = moss::spawn(|| 5u32).join().map_err(|e| e.to_string());
    let t = Instant::now();
    moss::sleep(Duration::from_millis(20));
    Seen {
        joined,
        slept_enough: t.elapsed() >= Duration::from_millis(20),
    }
}

/// Asserts that the destructor reporting to `rx` could spawn, join and
/// sleep as usual.
fn assert_used_moss(rx: &mpsc::Receiver<Seen>) {
    let seen = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let ok = Seen {
        joined: Ok(5),
        slept_enough: true,
    };
    assert_eq!(seen, ok);
}

struct UsesMossOnDrop(mpsc::Sender<Seen>);

impl Drop for UsesMossOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(use_moss());
    }
}

#[test]
fn an_unstarted_coroutine_whose_closure_calls_moss_on_drop_at_thread_exit() {
    const CASE: &str = "an_unstarted_coroutine_whose_closure_calls_moss_on_drop_at_thread_exit";
    util::isolated(CASE, Duration::from_secs(60), || {
        let (tx, rx) = mpsc::channel();
        on_exiting_thread(move || {
            let d = UsesMossOnDrop(tx);
            // Never started: its closure (and `d`) is dropped at thread exit.
            let _h = moss::spawn(move || drop(d));
        });
        assert_used_moss(&rx);
    });
}

thread_local! {
    static ON_EXIT: RefCell<Option<UsesMossOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn a_thread_local_whose_drop_calls_moss() {
    const CASE: &str = "a_thread_local_whose_drop_calls_moss";
    util::isolated(CASE, Duration::from_secs(60), || {
        let (tx, rx) = mpsc::channel();
        on_exiting_thread(move || {
            // Initialised before the hub exists: destroyed after anything
            // registered later, the hub's owner included.
            ON_EXIT.with(|v| *v.borrow_mut() = Some(UsesMossOnDrop(tx)));
            moss::spawn(|| moss::sleep(Duration::from_millis(1)))
                .join()
                .unwrap();
        });
        assert_used_moss(&rx);
    });
}

#[test]
fn a_pthread_key_destructor_after_the_hub_calls_moss() {
    const CASE: &str = "a_pthread_key_destructor_after_the_hub_calls_moss";
    util::isolated(CASE, Duration::from_secs(60), || {
        use std::sync::OnceLock;
        static TX: OnceLock<StdMutex<mpsc::Sender<Seen>>> = OnceLock::new();
        extern "C" fn key_dtor(_: *mut libc::c_void) {
            let seen = use_moss();
            let _ = TX.get().unwrap().lock().unwrap().send(seen);
        }
        let (tx, rx) = mpsc::channel();
        TX.set(StdMutex::new(tx)).unwrap();
        // The hub's own key exists (a hub was made): a key created now is
        // destroyed after it, when the thread's hub is gone.
        moss::yield_now();
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: a valid out-pointer and an extern "C" destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(key_dtor)) },
            0
        );
        on_exiting_thread(move || {
            moss::yield_now();
            // SAFETY: this thread's value of our key; any non-null value.
            unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
        });
        assert_used_moss(&rx);
    });
}

#[test]
fn a_socket_reader_killed_at_thread_exit_writes_in_its_destructor_and_closes() {
    const CASE: &str = "a_socket_reader_killed_at_thread_exit_writes_in_its_destructor_and_closes";
    util::isolated(CASE, Duration::from_secs(60), || {
        use std::io::{Read, Write};
        // Says goodbye on the socket when dropped (as a BufWriter flushes).
        struct Goodbye(moss::net::UnixStream);
        impl Drop for Goodbye {
            fn drop(&mut self) {
                let _ = self.0.write_all(b"bye");
            }
        }
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        on_exiting_thread(move || {
            let s = moss::net::UnixStream::from(theirs);
            let h = moss::spawn(move || {
                let mut g = Goodbye(s);
                let mut buf = [0u8; 8];
                let _ = g.0.read(&mut buf); // blocks: nothing comes
            });
            util::until_parked(h.id());
        });
        let mut got = Vec::new();
        let mut mine = mine;
        mine.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        mine.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye", "the destructor wrote, then the socket closed");
    });
}

#[test]
fn a_panicking_destructor_of_an_unstarted_coroutine_does_not_stop_the_others() {
    const CASE: &str = "a_panicking_destructor_of_an_unstarted_coroutine_does_not_stop_the_others";
    util::isolated(CASE, Duration::from_secs(60), || {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("a destructor panics at thread exit");
            }
        }
        let q = Arc::new(Queue::<u32>::unbounded());
        let q2 = q.clone();
        on_exiting_thread(move || {
            let d = PanicsOnDrop;
            let _unstarted = moss::spawn(move || drop(d));
            let h = moss::spawn(move || q2.get());
            util::until_parked(h.id());
        });
        q.put(3);
        assert_eq!(q.len(), 1, "the blocked getter was still killed");
    });
}
