//! Seeing a blocked hub (gevent's monitor thread): which coroutine keeps
//! its thread from switching, for how long, and where it was spawned.
//!
//! A coroutine that computes, or blocks in a call moss does not see (a
//! `std::thread::sleep` without `moss::monkey::patch_all`, a C library's
//! blocking read), holds up every other coroutine of its thread.
//! [`enable`] starts one thread that watches every hub of the process:
//!
//! ```text
//!   hub thread (switch path)              monitor thread (every period)
//!   ────────────────────────              ─────────────────────────────
//!   resume a context:                     for each hub:
//!     running = its header                  switches and running as last time,
//!     switches += 1                         running not null, for > max_blocking?
//!   the loop polls, a context finished,     → one report (this episode)
//!   or the root is alone (nobody to block):
//!     running = null
//!     switches += 1
//! ```
//!
//! The hub's part is two plain stores per switch (no lock, no fence, no
//! clock). Between a context's yield or park and the loop's next switch
//! or poll, that context still counts as running: the loop only picks
//! the next task then, and the context's header is alive (queued, or in
//! the task table); a context that finished is never left there. The monitor reads the blocking coroutine's id, name and spawn
//! site from its control block, which it may only do while that coroutine
//! cannot finish: it raises `pinned`, issues a fence, and reads only if
//! `switches` is still what it saw; a hub finishing a coroutine (or
//! dropped at thread exit) issues a fence and waits while `pinned` is up
//! (a few µs, and only then: the finish path costs a fence and a load).
//!
//! A hub's root counts as running only when the hub has coroutines it
//! could be blocking: a thread that once used moss and now does other
//! work is not reported.
//!
//! Fork safety: the registry of hubs and the monitor thread belong to the
//! process that made them. A forked child (moss's `Process`, a
//! `ProcessPool` worker) sees another fork generation: it never locks the
//! parent's registry (a parent thread may have held it at the fork) but
//! starts a fresh one, and a monitor enabled in the parent is started
//! again in the child on its first hub.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::task::{CoroutineId, Header};

/// What the monitor saw: a hub that did not switch for `blocked_for` while
/// one of its coroutines ran.
#[derive(Clone, Debug)]
pub struct BlockReport {
    /// The name of the hub's thread, if it has one.
    pub thread_name: Option<String>,
    /// The blocking coroutine (a thread's root is a context of its own).
    pub coroutine_id: CoroutineId,
    /// Its name, if it was given one (a root's is `"main"`).
    pub coroutine_name: Option<String>,
    /// Where it was spawned (`None` for a thread's root).
    pub spawn_site: Option<&'static Location<'static>>,
    /// How long the hub had not switched when the monitor noticed (at
    /// least this long; the monitor looks every quarter of the threshold).
    pub blocked_for: Duration,
}

impl std::fmt::Display for BlockReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "moss monitor: thread '{}' blocked for {:.3}s by coroutine #{} '{}'",
            self.thread_name.as_deref().unwrap_or("<unnamed>"),
            self.blocked_for.as_secs_f64(),
            self.coroutine_id,
            self.coroutine_name.as_deref().unwrap_or("-"),
        )?;
        match self.spawn_site {
            Some(site) => write!(f, " spawned at {site}"),
            None => write!(f, " (the thread's root)"),
        }
    }
}

/// Starts the monitor thread, or changes its threshold: from now on a hub
/// that does not switch for longer than `max_blocking` while one of its
/// coroutines runs gives one report per episode (to stderr unless
/// [`set_report`] says otherwise). Idempotent; the last value wins. The
/// cost on the hubs is two stores per switch, whether enabled or not.
///
/// The monitor is a thread of the process like any other: while it runs,
/// a `main` waiting on a `moss::sync` object that nothing can signal keeps
/// waiting instead of panicking with "would block forever" (which needs
/// no other thread left), as with any thread the program starts.
///
/// ```
/// use std::time::Duration;
/// moss::monitor::enable(Duration::from_millis(100));
/// moss::spawn(|| moss::sleep(Duration::from_millis(1))).join().unwrap(); // switches: no report
/// ```
///
/// # Panics
/// If `max_blocking` is zero, or the thread cannot be spawned.
pub fn enable(max_blocking: Duration) {
    assert!(
        !max_blocking.is_zero(),
        "moss::monitor::enable: max_blocking must not be zero"
    );
    let nanos = u64::try_from(max_blocking.as_nanos()).unwrap_or(u64::MAX);
    MAX_BLOCKING.store(nanos, Ordering::Relaxed);
    start_if_needed();
}

/// Replaces the report the monitor gives (by default, one line to stderr)
/// with `f`, called on the monitor thread once per blocking episode.
/// Keep it quick: the monitor watches no hub while it runs. A function
/// replaced by a later call is kept (never dropped).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// moss::monitor::set_report(move |r| s.lock().unwrap().push(r.to_string()));
/// ```
pub fn set_report(f: impl Fn(&BlockReport) + Send + Sync + 'static) {
    let b: Box<ReportFn> = Box::new(Box::new(f));
    // The previous function is leaked on purpose: the monitor thread may
    // be calling it now, and it is never freed so that no lock is needed
    // (none that a fork could leave held).
    REPORT.store(Box::into_raw(b), Ordering::Release);
}

type ReportFn = Box<dyn Fn(&BlockReport) + Send + Sync>;

/// The report function, or null for the default (a leaked box, never freed).
static REPORT: AtomicPtr<ReportFn> = AtomicPtr::new(std::ptr::null_mut());
/// The threshold in ns; 0 while never enabled.
static MAX_BLOCKING: AtomicU64 = AtomicU64::new(0);
/// The fork generation + 1 the monitor thread was started in; 0 for none.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// The fork generation + 1 of the monitor thread while it runs (set by the
/// thread itself when it begins, cleared when it ends); 0 otherwise.
static ALIVE: AtomicU64 = AtomicU64::new(0);

/// Whether the monitor thread runs in this process now. It only reads, so
/// it never wakes a coroutine: a hub that asks whether another thread
/// could wake it does not count it.
pub(crate) fn thread_alive() -> bool {
    ALIVE.load(Ordering::SeqCst) == crate::sys::atfork::generation() + 1
}

/// Gives `r` to the report function; one that panics loses that report,
/// not the monitor.
fn report(r: &BlockReport) {
    let p = REPORT.load(Ordering::Acquire);
    if p.is_null() {
        eprintln!("{r}");
    } else {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: a non-null `REPORT` comes from `Box::into_raw` in
            // `set_report` and is never freed.
            unsafe { (*p)(r) }
        }));
    }
}

/// Starts the monitor thread if it is enabled and not running in this
/// process (it never runs in a forked child until started there).
fn start_if_needed() {
    if MAX_BLOCKING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mine = crate::sys::atfork::generation() + 1;
    let seen = STARTED.load(Ordering::Relaxed);
    if seen == mine
        || STARTED
            .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if let Err(e) = std::thread::Builder::new()
        .name("moss-monitor".into())
        .spawn(move || {
            /// Clears `ALIVE` however the loop ends.
            struct Alive;
            impl Drop for Alive {
                fn drop(&mut self) {
                    ALIVE.store(0, Ordering::SeqCst);
                }
            }
            ALIVE.store(mine, Ordering::SeqCst);
            let _alive = Alive;
            watch_loop(mine)
        })
    {
        STARTED.store(0, Ordering::Relaxed);
        panic!("moss::monitor: cannot start the monitor thread: {e}");
    }
}

/// The part of a hub the monitor reads (see the module docs).
pub(crate) struct Watch {
    /// Bumped by the hub's thread at every switch (the only writer).
    switches: AtomicU64,
    /// The running context's header, or null (the loop, or a root alone).
    running: AtomicPtr<Header>,
    /// The monitor is reading `running`'s header: it must not be freed.
    pinned: AtomicBool,
    /// The hub is gone.
    dead: AtomicBool,
    thread_name: Option<String>,
    /// `dump_all` requests, answered from the hub loop.
    dumps: Mutex<Vec<mpsc::Sender<String>>>,
    dump_wanted: AtomicBool,
    /// The hub's eventfd, to wake it for `dump_all`; taken when the hub
    /// goes (a dead hub's watch may linger in the registry a while).
    waker: Mutex<Option<Arc<mio::Waker>>>,
}

impl Watch {
    /// The watch of a hub being created on this thread, registered.
    pub(crate) fn register(waker: Arc<mio::Waker>) -> Arc<Watch> {
        let w = Arc::new(Watch {
            switches: AtomicU64::new(0),
            running: AtomicPtr::new(std::ptr::null_mut()),
            pinned: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            // Unnamed once std's thread-locals are gone (a hub made by a
            // pthread key destructor at thread exit).
            thread_name: if crate::hub::thread_exited() {
                None
            } else {
                std::thread::current().name().map(str::to_owned)
            },
            dumps: Mutex::new(Vec::new()),
            dump_wanted: AtomicBool::new(false),
            waker: Mutex::new(Some(waker)),
        });
        let mut hubs = registry().hubs.lock().unwrap_or_else(|e| e.into_inner());
        // Dead hubs' watches go here too (each holds an eventfd).
        hubs.retain(|w| !w.dead.load(Ordering::Acquire));
        hubs.push(w.clone());
        drop(hubs);
        start_if_needed();
        w
    }

    /// A switch: `h` runs now (null: nobody the monitor should blame).
    #[inline(always)]
    pub(crate) fn switch_to(&self, h: *const Header) {
        self.running.store(h.cast_mut(), Ordering::Relaxed);
        let n = self.switches.load(Ordering::Relaxed);
        self.switches.store(n.wrapping_add(1), Ordering::Release);
    }

    /// The root runs and has just got a coroutine it could block: it
    /// counts as running from now on (if the loop did not say so already).
    #[inline]
    pub(crate) fn company(&self, root: *const Header) {
        if self.running.load(Ordering::Relaxed).is_null() {
            self.switch_to(root);
        }
    }

    /// Before a header the monitor may read is freed (a coroutine finished,
    /// the hub is dropped): waits while the monitor reads one.
    #[inline]
    pub(crate) fn before_free(&self) {
        fence(Ordering::SeqCst);
        while self.pinned.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
    }

    /// The hub is being dropped (on its thread).
    pub(crate) fn retire(&self) {
        self.running.store(std::ptr::null_mut(), Ordering::Relaxed);
        self.dead.store(true, Ordering::Release);
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.before_free();
    }

    /// Whether `dump_all` asked for this hub's dump (one load, at a poll).
    #[inline]
    pub(crate) fn dump_wanted(&self) -> bool {
        self.dump_wanted.load(Ordering::Relaxed)
    }

    /// Answers the `dump_all` requests with `dump` (on the hub's thread).
    #[cold]
    pub(crate) fn answer_dumps(&self, dump: impl FnOnce() -> String) {
        self.dump_wanted.store(false, Ordering::Relaxed);
        let asks = std::mem::take(&mut *self.dumps.lock().unwrap_or_else(|e| e.into_inner()));
        if asks.is_empty() {
            return;
        }
        let d = dump();
        for a in asks {
            // The asker may have given up: nothing to do.
            let _ = a.send(d.clone());
        }
    }

    /// Asks the hub for its dump: the answer comes on the returned channel.
    fn ask_dump(&self) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        self.dumps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        self.dump_wanted.store(true, Ordering::SeqCst);
        // Wakes a sleeping hub (a busy one answers at its next poll); a
        // failed wake leaves the asker to its deadline.
        if let Some(w) = &*self.waker.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = w.wake();
        }
        rx
    }

    /// The running context's identity, read only while the hub has not
    /// switched since `switches` was `seen` (see the module docs).
    fn identify(&self, seen: u64, h: *const Header) -> Option<Identity> {
        self.pinned.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let id = if self.switches.load(Ordering::Relaxed) == seen
            && !self.dead.load(Ordering::Relaxed)
        {
            // `h` was running when `switches` was `seen` and the hub has not
            // switched since (checked after the fence above, which pairs with
            // the one in `before_free`); freeing it waits for `pinned`.
            // SAFETY: so `h` is alive until `pinned` drops; only fields that never
            // change while it runs are read (id, name, spawn site), without
            // touching the name's reference count.
            unsafe {
                Some(Identity {
                    id: (*h).id,
                    name: (*h).name.as_deref().map(str::to_owned),
                    spawn_site: if (*h).is_root() {
                        None
                    } else {
                        Some((*h).spawn_site)
                    },
                })
            }
        } else {
            None
        };
        self.pinned.store(false, Ordering::Release);
        id
    }

    /// What `dump_all` puts before a hub's dump.
    fn heading(&self) -> String {
        format!(
            "thread '{}': ",
            self.thread_name.as_deref().unwrap_or("<unnamed>")
        )
    }

    /// One line for `dump_all` about a hub that did not answer.
    fn describe_silent(&self) -> String {
        let seen = self.switches.load(Ordering::Acquire);
        let h = self.running.load(Ordering::Acquire);
        let who = if h.is_null() {
            None
        } else {
            self.identify(seen, h)
        };
        match who {
            Some(i) => format!(
                "{}no answer (blocked?); running #{} '{}'{}\n",
                self.heading(),
                i.id,
                i.name.as_deref().unwrap_or("-"),
                i.spawn_site
                    .map(|s| format!(" spawned at {s}"))
                    .unwrap_or_default()
            ),
            None => format!("{}no answer\n", self.heading()),
        }
    }
}

struct Identity {
    id: CoroutineId,
    name: Option<String>,
    spawn_site: Option<&'static Location<'static>>,
}

/// Every hub of this process (of this fork generation).
struct Registry {
    generation: u64,
    hubs: Mutex<Vec<Arc<Watch>>>,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

/// This process's registry: a forked child makes its own and never
/// touches (or locks) the one it inherited, which is leaked.
fn registry() -> &'static Registry {
    let generation = crate::sys::atfork::generation();
    loop {
        let p = REGISTRY.load(Ordering::Acquire);
        // SAFETY: a non-null `REGISTRY` comes from `Box::into_raw` below
        // and is never freed.
        if !p.is_null() && unsafe { (*p).generation } == generation {
            // SAFETY: as above.
            return unsafe { &*p };
        }
        let new = Box::into_raw(Box::new(Registry {
            generation,
            hubs: Mutex::new(Vec::new()),
        }));
        if REGISTRY
            .compare_exchange(p, new, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `new` was never published; we own it.
            drop(unsafe { Box::from_raw(new) });
        }
    }
}

/// The live hubs of this process (dropping the dead ones).
fn hubs() -> Vec<Arc<Watch>> {
    let mut hubs = registry().hubs.lock().unwrap_or_else(|e| e.into_inner());
    hubs.retain(|w| !w.dead.load(Ordering::Acquire));
    hubs.clone()
}

/// What the monitor remembers of a hub between two looks.
struct Seen {
    switches: u64,
    since: Instant,
    reported: bool,
}

fn watch_loop(generation_plus_one: u64) {
    // By the address of each hub's watch; the watches of the last look
    // stay alive (in `kept`) until the next, so no new watch can have the
    // address of one that is gone.
    let mut seen: HashMap<*const Watch, Seen> = HashMap::new();
    let mut kept: Vec<Arc<Watch>> = Vec::new();
    loop {
        if STARTED.load(Ordering::Relaxed) != generation_plus_one {
            return; // a forked child's copy of this thread's state
        }
        let max = Duration::from_nanos(MAX_BLOCKING.load(Ordering::Relaxed));
        let period = (max / 4).clamp(Duration::from_millis(1), Duration::from_millis(250));
        std::thread::sleep(period);
        let now = Instant::now();
        let live = hubs();
        let mut last = std::mem::take(&mut seen);
        for w in &live {
            let switches = w.switches.load(Ordering::Acquire);
            let running = w.running.load(Ordering::Acquire);
            let key = Arc::as_ptr(w);
            let s = match last.remove(&key) {
                Some(s) => seen.entry(key).or_insert(s),
                None => {
                    seen.insert(
                        key,
                        Seen {
                            switches,
                            since: now,
                            reported: false,
                        },
                    );
                    continue;
                }
            };
            if s.switches != switches {
                (s.switches, s.since, s.reported) = (switches, now, false);
                continue;
            }
            let blocked_for = now - s.since;
            if running.is_null() || s.reported || blocked_for <= max {
                continue;
            }
            s.reported = true;
            if let Some(i) = w.identify(switches, running) {
                report(&BlockReport {
                    thread_name: w.thread_name.clone(),
                    coroutine_id: i.id,
                    coroutine_name: i.name,
                    spawn_site: i.spawn_site,
                    blocked_for,
                });
            }
        }
        drop(std::mem::replace(&mut kept, live));
    }
}

/// [`dump`](crate::dump) for every hub of the process, callable from any
/// thread: each hub answers from its loop (within 250 ms); a hub that does
/// not (it is blocked) is described by what it runs.
///
/// ```
/// let t = std::thread::spawn(|| {
///     moss::Builder::new().name("elsewhere").spawn(|| moss::sleep(std::time::Duration::from_millis(200))).unwrap().join().unwrap()
/// });
/// std::thread::sleep(std::time::Duration::from_millis(50));
/// assert!(moss::dump_all().contains("elsewhere"));
/// t.join().unwrap();
/// ```
pub fn dump_all() -> String {
    let own = crate::hub::Hub::try_current().map(|h| h.watch.clone());
    let mut out = String::new();
    let mut asked = Vec::new();
    for w in hubs() {
        if own.as_ref().is_some_and(|o| Arc::ptr_eq(o, &w)) {
            out.push_str(&w.heading());
            out.push_str(&crate::dump());
        } else {
            let rx = w.ask_dump();
            asked.push((w, rx));
        }
    }
    let deadline = Instant::now() + Duration::from_millis(250);
    let mut naps = crate::backoff::Backoff::new();
    while !asked.is_empty() {
        asked.retain(|(w, rx)| match rx.try_recv() {
            Ok(d) => {
                out.push_str(&w.heading());
                out.push_str(&d);
                false
            }
            Err(_) => true,
        });
        if asked.is_empty() || Instant::now() >= deadline {
            break;
        }
        // Other coroutines of this thread run meanwhile.
        if let crate::park::Wakeup::Cancelled = naps.nap(Some(deadline), "dump_all") {
            break;
        }
    }
    for (w, _) in asked {
        // A hub that ended meanwhile has nothing to show.
        if !w.dead.load(Ordering::Acquire) {
            out.push_str(&w.describe_silent());
        }
    }
    out
}
