//! Fairness (`moss_runtime::coop`): a coroutine whose blocking calls keep
//! completing without parking yields after a budget of them, so a 10 ms
//! ticker on the same hub keeps ticking and its timers stay on time.
//!
//! Each case runs the ticker next to a flood for at least 1 s and at least
//! [`MIN_OPS`] operations of the flood, next to a peer that runs at the
//! same time on another thread: the same ticker next to the same flood,
//! made polite (it yields by itself after every operation). Without the
//! budget the ticker beside a flood gets a few ticks, or one.
//!
//! What decides is a measure the OS cannot skew: how many operations the
//! flood completed while a tick was overdue (due, but the ticker not yet
//! resumed). The budget keeps it to a few hundred (the budget, and the
//! reads of one forced-poll interval); without it, the flood does
//! millions. Tick counts and lateness in time are printed beside the
//! peer's, not asserted: on a loaded machine they are the OS's as much as
//! moss's (seen: 6 ticks beside the flood and 32 for the peer, medians
//! late by 86 ms and 10 ms, with the flood well within its budget). For
//! the same reason a run lasts until the flood did [`MIN_OPS`] operations,
//! not for a fixed time only: the flood is a flood however little CPU the
//! OS gives its thread.

mod util;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(1);
/// Operations a flood completes before its ticker ends (2^20 bytes of
/// 32-byte reads: megabytes through the socket).
const MIN_OPS: u64 = 1 << 15;

/// One flood at a time: floods on the other tests' threads would take the
/// CPU from this one's hub thread (the OS's slicing, not moss's).
static ONE_FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_flood() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner())
}
const TICK: Duration = Duration::from_millis(10);

/// What a ticker saw: its ticks, how late each sleep woke, and how many
/// operations the flood completed while each tick was overdue.
#[derive(Debug)]
struct Ticks {
    count: usize,
    late: Vec<Duration>,
    overdue: Vec<u64>,
}

/// The `p`th percentile of `v`.
fn percentile<T: Ord + Copy>(v: &[T], p: usize) -> Option<T> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len().saturating_sub(1) * p / 100).copied()
}

impl Ticks {
    fn percentile(&self, p: usize) -> Duration {
        percentile(&self.late, p).unwrap_or(Duration::MAX)
    }

    fn overdue(&self, p: usize) -> u64 {
        percentile(&self.overdue, p).unwrap_or(u64::MAX)
    }
}

/// Ticks every 10 ms on the calling thread's hub for `RUN`, and until
/// `flood` did [`MIN_OPS`] operations, telling `flood` when each tick is
/// due.
fn ticker(flood: &Flood) -> moss::JoinHandle<Ticks> {
    let (due, overdue, ops) = (flood.due.clone(), flood.overdue.clone(), flood.ops.clone());
    moss::spawn(move || {
        let start = Instant::now();
        let mut t = Ticks {
            count: 0,
            late: Vec::new(),
            overdue: Vec::new(),
        };
        while start.elapsed() < RUN || ops.get() < MIN_OPS {
            let before = Instant::now();
            due.set(Some(before + TICK));
            moss::sleep(TICK);
            due.set(None);
            t.late.push(before.elapsed().saturating_sub(TICK));
            t.overdue.push(overdue.replace(0));
            t.count += 1;
        }
        t
    })
}

/// What a flood is given: when to stop, and whether to be polite; it
/// counts its operations while the ticker's tick is overdue.
#[derive(Clone)]
struct Flood {
    stop: Rc<Cell<bool>>,
    /// The peer's copy: yields by itself after every operation.
    polite: bool,
    /// When the ticker's current tick is due (set by the ticker).
    due: Rc<Cell<Option<Instant>>>,
    /// Operations completed since then.
    overdue: Rc<Cell<u64>>,
    /// Operations completed in all.
    ops: Rc<Cell<u64>>,
}

impl Flood {
    fn new(polite: bool) -> Flood {
        Flood {
            stop: Rc::new(Cell::new(false)),
            polite,
            due: Rc::new(Cell::new(None)),
            overdue: Rc::new(Cell::new(0)),
            ops: Rc::new(Cell::new(0)),
        }
    }

    /// One operation done: whether to go on (a polite flood yields first).
    fn go_on(&self) -> bool {
        self.ops.set(self.ops.get() + 1);
        if self.due.get().is_some_and(|d| Instant::now() >= d) {
            self.overdue.set(self.overdue.get() + 1);
        }
        if self.polite {
            moss::yield_now();
        }
        !self.stop.get()
    }
}

/// Operations a flood may complete while a tick is overdue (median): the
/// reads of one forced-poll interval (250 µs, at ~0.5 µs per read in a
/// release build) and twice the budget, with room.
const OVERDUE_MAX: u64 = 1_500;

/// Checks the ticker beside a flood: at most [`OVERDUE_MAX`] operations of
/// the flood while a tick was overdue (median); prints its ticks and
/// lateness beside the peer's.
fn compare(what: &str, busy: &Ticks, peer: &Ticks) {
    eprintln!(
        "{what}: {} ticks beside the flood, {} for the peer; late p50 {:?} vs {:?}, \
         p90 {:?} vs {:?}; operations while overdue p50 {} vs {}, p90 {} vs {}",
        busy.count,
        peer.count,
        busy.percentile(50),
        peer.percentile(50),
        busy.percentile(90),
        peer.percentile(90),
        busy.overdue(50),
        peer.overdue(50),
        busy.overdue(90),
        peer.overdue(90),
    );
    assert!(
        busy.overdue(50) <= OVERDUE_MAX,
        "{what}: the flood did {} operations while a tick was overdue (median)",
        busy.overdue(50)
    );
}

/// Runs `flood` next to a ticker in a coroutine of one thread, and its
/// polite copy next to another ticker on a second thread, at the same time,
/// and compares the tickers. Returns what the impolite `flood` returned,
/// and what its polite copy did.
fn ticker_survives<R: Send + 'static>(
    what: &str,
    flood: impl Fn(Flood) -> R + Send + Clone + 'static,
) -> (R, R) {
    let _one = one_flood();
    let _wd = util::watchdog(what, Duration::from_secs(60));
    let side = |polite: bool, flood: Box<dyn FnOnce(Flood) -> R + Send>| {
        std::thread::spawn(move || {
            let f = Flood::new(polite);
            let t = ticker(&f);
            let stop = f.stop.clone();
            let h = moss::spawn(move || flood(f));
            let ticks = t.join().unwrap();
            stop.set(true);
            (ticks, h.join().unwrap())
        })
    };
    let peer = side(true, Box::new(flood.clone()));
    let busy = side(false, Box::new(flood));
    let (peer, p) = peer.join().unwrap();
    let (busy, r) = busy.join().unwrap();
    compare(what, &busy, &peer);
    (r, p)
}

/// A loopback TCP connection whose far end a plain thread keeps full.
fn flooded_connection() -> (std::net::TcpStream, Arc<AtomicBool>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let buf = vec![7u8; 64 * 1024];
        while !d.load(Ordering::Relaxed) {
            if c.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let (s, _) = l.accept().unwrap();
    (s, done)
}

/// Bytes per read of a flood reader: tiny, so the writer thread keeps far
/// ahead of it (megabytes buffered in the socket) and every read finds data
/// at once, even while the OS keeps the writer off the CPU for a while (a
/// reader that drains the socket parks now and then, fair without a
/// budget).
const READ: usize = 32;

/// Reads until `stop`, returning the bytes read and how many of the reads
/// found a full buffer (a flood: the socket always had data).
fn read_flood(mut read: impl FnMut(&mut [u8]) -> usize, flood: &Flood) -> (u64, u64) {
    let mut buf = vec![0u8; READ];
    let (mut bytes, mut full) = (0u64, 0u64);
    while flood.go_on() {
        let n = read(&mut buf);
        assert!(n > 0, "the flood ended early");
        bytes += n as u64;
        full += u64::from(n == buf.len());
    }
    (bytes, full)
}

#[test]
fn a_ticker_beside_a_moss_net_flood_reader() {
    let ((bytes, full), _) = ticker_survives("moss::net flood", |flood| {
        let (s, done) = flooded_connection();
        let mut s = moss::net::TcpStream::from(s);
        let r = read_flood(|b| s.read(b).unwrap(), &flood);
        done.store(true, Ordering::Relaxed);
        r
    });
    eprintln!("moss::net flood: {bytes} bytes, {full} full reads");
    // It was a flood: mostly full reads (and megabytes: MIN_OPS).
    assert!(full * 2 > bytes / READ as u64, "{full} full reads");
}

#[test]
fn a_ticker_beside_a_patched_std_flood_reader() {
    moss::monkey::patch_all();
    let ((bytes, full), _) = ticker_survives("patched std::net flood", |flood| {
        let (mut s, done) = flooded_connection();
        let r = read_flood(|b| s.read(b).unwrap(), &flood);
        done.store(true, Ordering::Relaxed);
        r
    });
    assert!(
        full * 2 > bytes / READ as u64,
        "{full} full reads of {bytes} bytes"
    );
}

#[test]
fn a_ticker_beside_a_coroutine_that_never_waits_on_its_queue_channel_or_lock() {
    // (At least MIN_OPS rounds: the ticker runs until then.)
    let (n, _) = ticker_survives("queue, channel and mutex loop", |flood| {
        let q = moss::sync::Queue::unbounded();
        let (tx, rx) = moss::sync::channel();
        let m = moss::sync::Mutex::new(0u64);
        let mut n = 0u64;
        while flood.go_on() {
            q.put(n);
            tx.send(q.get()).unwrap();
            *m.lock() += rx.recv().unwrap();
            n += 1;
        }
        n
    });
    eprintln!("queue, channel and mutex loop: {n} rounds");
}

#[test]
fn another_connection_of_the_hub_is_served_beside_a_flood() {
    // One hub: a coroutine reading a flooded connection, and an echo
    // coroutine for a second connection whose client (a plain thread)
    // counts round trips. What decides is a count the OS cannot skew: how
    // many reads the flood completed while a request of the client waited
    // in the echo's socket (written, not yet read). The number of round
    // trips is the OS's as much as moss's: each one needs the client
    // thread back on a CPU (on a loaded machine, 220 beside the flood and
    // 700 beside the polite one in one run).
    let ((trips, (bytes, full), waits), (peer_trips, _, peer_waits)) =
        ticker_survives("echo beside a flood", |flood| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let stop_client = Arc::new(AtomicBool::new(false));
            // Requests written by the client, and read by the echo: a
            // request waits while sent > served.
            let sent = Arc::new(AtomicU64::new(0));
            let served = Arc::new(AtomicU64::new(0));
            let (stop, sent2) = (stop_client.clone(), sent.clone());
            let client = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let (mut trips, mut back) = (0u64, [0u8; 8]);
                while !stop.load(Ordering::Relaxed) {
                    c.write_all(&trips.to_le_bytes()).unwrap();
                    sent2.fetch_add(1, Ordering::SeqCst);
                    c.read_exact(&mut back).unwrap();
                    assert_eq!(u64::from_le_bytes(back), trips);
                    trips += 1;
                }
                trips
            });
            let (s, _) = l.accept().unwrap();
            let mut s = moss::net::TcpStream::from(s);
            // Flood reads while a request waited, one count per request.
            let waited = Rc::new(Cell::new(0u64));
            let waits = Rc::new(std::cell::RefCell::new(Vec::new()));
            let (w2, ws2, served2) = (waited.clone(), waits.clone(), served.clone());
            let echo = moss::spawn(move || {
                let mut buf = [0u8; 8];
                while s.read_exact(&mut buf).is_ok() {
                    served2.fetch_add(1, Ordering::SeqCst);
                    ws2.borrow_mut().push(w2.replace(0));
                    s.write_all(&buf).unwrap();
                }
            });
            let (f, done) = flooded_connection();
            let mut f = moss::net::TcpStream::from(f);
            let (bytes, full) = read_flood(
                |b| {
                    let n = f.read(b).unwrap();
                    if sent.load(Ordering::SeqCst) > served.load(Ordering::SeqCst) {
                        waited.set(waited.get() + 1);
                    }
                    n
                },
                &flood,
            );
            done.store(true, Ordering::Relaxed);
            stop_client.store(true, Ordering::Relaxed);
            // Not a blocking join on this thread: its last round trip needs
            // the echo coroutine (std's join is not patched in this test).
            util::until("the client to end", Duration::from_secs(30), || {
                client.is_finished()
            });
            let trips = client.join().unwrap();
            echo.join().unwrap();
            // A request still waiting at the end counts too (a starved echo
            // has nothing else to show).
            let mut waits = waits.take();
            waits.push(waited.get());
            (trips, (bytes, full), waits)
        });
    let (p50, peer50) = (
        percentile(&waits, 50).unwrap(),
        percentile(&peer_waits, 50).unwrap(),
    );
    eprintln!(
        "echo beside a flood: {trips} round trips, {peer_trips} beside the polite one; \
         flood reads while a request waited p50 {p50} vs {peer50}, p90 {} vs {}",
        percentile(&waits, 90).unwrap(),
        percentile(&peer_waits, 90).unwrap(),
    );
    assert!(
        full * 2 > bytes / READ as u64,
        "{full} full reads of {bytes} bytes"
    );
    // A request waits for the flood's next forced poll (every 250 µs of
    // reads) at most; without the budget it waits for the end of the run:
    // the flood's millions of reads (the echo gets a handful of trips).
    assert!(
        p50 <= OVERDUE_MAX,
        "the flood did {p50} reads while a request of the other connection waited (median, \
         {trips} round trips)"
    );
}

#[test]
fn a_ticker_beside_a_flood_on_the_root() {
    // The root floods; the ticker is a coroutine of its hub.
    let _one = one_flood();
    let _wd = util::watchdog("root flood", Duration::from_secs(60));
    let side = |polite: bool| {
        std::thread::spawn(move || {
            let f = Flood::new(polite);
            let t = ticker(&f);
            let (s, done) = flooded_connection();
            let mut s = moss::net::TcpStream::from(s);
            let mut buf = vec![0u8; READ];
            while !t.is_finished() {
                assert!(s.read(&mut buf).unwrap() > 0);
                f.go_on();
            }
            done.store(true, Ordering::Relaxed);
            t.join().unwrap()
        })
    };
    let peer = side(true);
    let busy = side(false);
    let (peer, busy) = (peer.join().unwrap(), busy.join().unwrap());
    compare("root flood", &busy, &peer);
}

#[test]
fn a_flooding_coroutine_can_be_killed_and_timed_out() {
    let _one = one_flood();
    util::on_thread(Duration::from_secs(30), || {
        let (s, done) = flooded_connection();
        let s = Rc::new(moss::net::TcpStream::from(s));
        let reads = Rc::new(Cell::new(0u64));
        let (s2, r2) = (s.clone(), reads.clone());
        let flood = moss::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                assert!((&*s2).read(&mut buf).unwrap() > 0);
                r2.set(r2.get() + 1);
            }
        });
        // The kill gets through: the flood yields, and its next read is a
        // cancellation point.
        util::until("the flood to start", Duration::from_secs(10), || {
            reads.get() > 1000
        });
        flood.kill();
        assert!(flood.join().unwrap_err().is_killed());
        // A timeout around a flood fires.
        let (s3, r3) = (s.clone(), reads.clone());
        let t = Instant::now();
        let r = moss::timeout(Duration::from_millis(50), move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                assert!((&*s3).read(&mut buf).unwrap() > 0);
                r3.set(r3.get() + 1);
            }
        });
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        done.store(true, Ordering::Relaxed);
    });
}

#[test]
fn a_busy_greenlet_inside_a_coroutine_does_not_trip_over_the_budget() {
    // A greenlet driven by a coroutine cannot yield that coroutine: its
    // blocking calls that complete at once never yield (no panic).
    util::on_thread(Duration::from_secs(30), || {
        let h = moss::spawn(|| {
            let q = moss::sync::Queue::unbounded();
            let g = moss::greenlet::Greenlet::new(move |n: u64| {
                for i in 0..10 * u64::from(moss_runtime::coop::BUDGET) {
                    q.put(i);
                    assert_eq!(q.get(), i);
                }
                n + 1
            });
            g.switch(41)
        });
        assert_eq!(h.join().unwrap(), 42);
    });
}

#[test]
fn a_thread_without_coroutines_never_yields() {
    // The root of a hub with no coroutine has nobody to be fair to: a lock
    // loop there costs no poll (and needs no hub at all before).
    util::on_thread(Duration::from_secs(30), || {
        let m = moss::sync::Mutex::new(0u32);
        for _ in 0..100 * moss_runtime::coop::BUDGET {
            *m.lock() += 1;
        }
        assert_eq!(*m.lock(), 100 * moss_runtime::coop::BUDGET);
        assert!(!moss_runtime::park::hub_exists());
    });
}
