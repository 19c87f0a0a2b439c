//! Futex hook: `syscall(SYS_futex, ...)`, through which std's `Mutex`,
//! `Condvar`, `RwLock`, `Once`/`OnceLock`/`LazyLock` and thread parking
//! (`mpsc`, `thread::park`, scoped-thread joins) wait and wake on Linux.
//!
//! # What the hook does
//!
//! Only private futexes (`FUTEX_PRIVATE_FLAG`, which std always sets) are
//! touched; every other operation, every shared futex and every other
//! syscall number goes straight to libc's `syscall` (errno untouched).
//!
//! * `FUTEX_WAIT`/`FUTEX_WAIT_BITSET` from a context that can park (a
//!   coroutine, or the running root of a thread with a hub; see
//!   `park::can_park`) parks that context on a moss-side wait table instead
//!   of the thread: a coroutine suspends, a root runs its hub meanwhile.
//!   Elsewhere (a thread without a hub, the hub loop itself, a greenlet
//!   driven by a coroutine) the real syscall blocks the thread as before,
//!   and so does a wait on a word in the calling thread's thread-local
//!   storage: that word belongs to the thread, not to one of its contexts
//!   (parking_lot's per-thread wait records; see `in_thread_tls`).
//! * `FUTEX_WAKE`/`FUTEX_WAKE_BITSET` from anywhere wakes up to `val`
//!   moss-side waiters of that address (and bitset), then asks the kernel
//!   for the rest, so threads blocked in the kernel still wake. A wake-up
//!   that finds nobody moss-side is just the real syscall.
//! * `FUTEX_REQUEUE`, `FUTEX_CMP_REQUEUE` and `FUTEX_WAKE_OP` run in the
//!   kernel first; then moss-side waiters of the addresses they name are
//!   woken (a requeued coroutine sees a spurious wake-up and waits again
//!   where its caller decides). PI futexes and `futex_waitv` pass through.
//!
//! # The wait table and lost wake-ups
//!
//! 256 buckets hashed by address, each a list of waiters (address, bitset,
//! the context's [`Unparker`]) behind a small lock that waits through the
//! *real* futex (never through this hook), and a count of waiters that
//! wakers read without the lock. The protocol mirrors the kernel's:
//!
//! ```text
//! waiter                                 waker (after changing the word)
//! count += 1; fence(SeqCst)              fence(SeqCst)
//! lock; load word                        if count == 0: done (kernel only)
//!   != expected: unlock; EAGAIN          lock; remove up to val waiters; unlock
//!   == expected: enqueue; unlock; park   unpark them
//! lock; still queued? unlock
//!   yes: timed out / spurious; no: woken (0)
//! ```
//!
//! The two fences make sure a waker that sees no waiter changed the word
//! before the waiter loaded it (so the waiter does not sleep); the bucket
//! lock orders a waiter's check-and-enqueue against a waker's removal. A
//! waiter removed by a waker reports a wake-up even if its timeout fired in
//! the meantime, as the kernel does, so no wake-up is swallowed. Waiters
//! are heap entries, never on the waiting coroutine's stack, and addresses
//! are only keys after the check, so a futex word on a coroutine's stack
//! (or a stack reused later) is harmless. A thread that exits purges its
//! entries (they would otherwise swallow wake-ups meant for live waiters),
//! and a forked child starts with an empty table.
//!
//! # Timeouts and cancellation
//!
//! `FUTEX_WAIT` timeouts are relative; `FUTEX_WAIT_BITSET` ones absolute on
//! `CLOCK_MONOTONIC` (what std uses) or, with `FUTEX_CLOCK_REALTIME`,
//! `CLOCK_REALTIME` (converted once, at the start: a later change of the
//! wall clock does not move the deadline). A `kill` or `timeout` of a
//! parked coroutine ends its wait as a spurious wake-up (0). std's
//! primitives then wait again, and a wait that starts with a cancellation
//! pending parks anyway (`park_shielded`): a lock must be acquired, so the
//! cancellation is delivered at the coroutine's next moss blocking point
//! after it, e.g. with the guard held, unwinding drops it. If none comes,
//! `join` reports the kill and `timeout` reports `Elapsed`.
//!
//! # Thread parking
//!
//! std's thread parker (`thread::park`, used by `mpsc` channels and
//! `thread::scope`) is one futex word per OS thread (0 empty, 1 notified,
//! `u32::MAX` parked), made for one waiter: a second context of the same
//! thread that parks while the word reads "parked" decrements it below
//! that and then spins in std without ever making a syscall. So a context
//! that parks cooperatively must not leave the word "parked": the hook
//! finds the thread's parker word once (a `park_timeout(0)` probe on the
//! thread's first futex wait), and a wait on it sets the word to "empty",
//! sleeps, and hands std's loop the "notified" state when it returns, so
//! that the caller re-checks its own condition (mpsc's "was my operation
//! selected"). Any number of contexts of one thread can park this way,
//! and none can lose a wake-up, but an `unpark` no longer calls the futex
//! while the word is "empty": parked contexts re-check on a timer, 1 ms
//! after parking, doubling while no token arrives, up to 16 ms. That is
//! the latency of a std channel hand-off to a coroutine (moss's own
//! channels wake precisely).
//!
//! std's channels never pair a sender with a receiver of the sender's own
//! thread (their waker skips entries of the current thread), so a blocking
//! `recv` in a coroutine is only ever woken by a send from another thread
//! (or another hub). Between two coroutines of one thread, use moss's
//! channels, or `recv_timeout` (which retries the channel at its deadline).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use libc::timespec;
use moss_runtime::park::{self, Unparker, Wakeup};

use super::{patched, real};

const MATCH_ANY: u32 = u32::MAX;
/// std's thread parker states (futex.rs in std's thread_parking).
const PARKER_NOTIFIED: u32 = 1;
const PARKER_PARKED: u32 = u32::MAX;
const BUCKETS: usize = 256;
const WHAT: &str = "std::sync futex (monkey)";

/// Hook for `syscall(2)`: futex operations as described in the module
/// docs; every other call goes straight to libc's `syscall`.
///
/// C declares `long syscall(long number, ...)`. On x86_64 the System V ABI
/// passes the integer arguments of a variadic call exactly as those of a
/// non-variadic one (rdi, rsi, rdx, rcx, r8, r9, then the stack; `%al`
/// only counts vector registers), so this seven-integer definition receives
/// what a variadic caller passed. An argument the caller did not pass is
/// read as whatever its register or stack slot holds and forwarded unused,
/// exactly as libc's own `syscall` loads all six. The hook is compiled for
/// x86_64 Linux only; elsewhere libc's `syscall` is used unchanged.
///
/// # Safety
/// As `syscall(2)` with the same arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    if n == libc::SYS_futex && patched() {
        // The kernel reads `op`, `val` and `val3` as 32-bit values.
        if let Some(r) = futex(
            a1 as usize,
            a2 as c_int,
            a3 as u32,
            a4,
            a5 as usize,
            a6 as u32,
        ) {
            return r;
        }
    }
    // SAFETY: forwarded unchanged.
    unsafe { real::syscall()(n, a1, a2, a3, a4, a5, a6) }
}

/// A private futex operation, or `None` to pass it to the kernel as is.
fn futex(
    uaddr: usize,
    op: c_int,
    val: u32,
    a4: c_long,
    uaddr2: usize,
    val3: u32,
) -> Option<c_long> {
    if op & libc::FUTEX_PRIVATE_FLAG == 0 {
        return None;
    }
    let realtime = op & libc::FUTEX_CLOCK_REALTIME != 0;
    match op & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) {
        libc::FUTEX_WAIT => wait(
            uaddr,
            val,
            a4 as *const timespec,
            MATCH_ANY,
            Clock::Relative,
        ),
        libc::FUTEX_WAIT_BITSET => {
            let clock = if realtime {
                Clock::Realtime
            } else {
                Clock::Monotonic
            };
            wait(uaddr, val, a4 as *const timespec, val3, clock)
        }
        libc::FUTEX_WAKE => wake(uaddr, op, val as c_int, MATCH_ANY),
        libc::FUTEX_WAKE_BITSET => wake(uaddr, op, val as c_int, val3),
        libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE => {
            let r = real_futex(uaddr, op, val, a4, uaddr2, val3);
            if r < 0 {
                return Some(r);
            }
            let n = wanted(val as c_int).saturating_add((a4 as u32 as c_int).max(0) as usize);
            Some(r + real::keep_errno(|| wake_table(uaddr, n, MATCH_ANY)) as c_long)
        }
        libc::FUTEX_WAKE_OP => {
            let r = real_futex(uaddr, op, val, a4, uaddr2, val3);
            if r < 0 {
                return Some(r);
            }
            let n = real::keep_errno(|| {
                wake_table(uaddr, wanted(val as c_int), MATCH_ANY)
                    + wake_table(uaddr2, (a4 as u32 as c_int).max(0) as usize, MATCH_ANY)
            });
            Some(r + n as c_long)
        }
        _ => None,
    }
}

/// The real futex syscall (through libc's `syscall`, errno as it sets it).
fn real_futex(uaddr: usize, op: c_int, val: u32, a4: c_long, uaddr2: usize, val3: u32) -> c_long {
    // SAFETY: the caller's own arguments, forwarded to the kernel.
    unsafe {
        real::syscall()(
            libc::SYS_futex,
            uaddr as c_long,
            op as c_long,
            val as c_long,
            a4,
            uaddr2 as c_long,
            val3 as c_long,
        )
    }
}

/// How many waiters a wake of `nr` wakes: the kernel wakes one for `nr <= 0`.
fn wanted(nr: c_int) -> usize {
    nr.max(1) as usize
}

/// How a wait's timeout is read.
#[derive(Clone, Copy)]
enum Clock {
    /// `FUTEX_WAIT`: relative.
    Relative,
    /// `FUTEX_WAIT_BITSET`: absolute on `CLOCK_MONOTONIC`...
    Monotonic,
    /// ... or on `CLOCK_REALTIME` with `FUTEX_CLOCK_REALTIME`.
    Realtime,
}

/// The deadline of a wait (`Ok(None)`: none), `Err` for a timespec the
/// kernel would reject (the kernel then reports it).
fn deadline(ts: *const timespec, clock: Clock) -> Result<Option<Instant>, ()> {
    if ts.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-null timeout points at a timespec (the caller's
    // contract; the kernel would read it too).
    let t = unsafe { ts.read() };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(());
    }
    let d = Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
    let left = match clock {
        Clock::Relative => d,
        Clock::Monotonic | Clock::Realtime => {
            let id = match clock {
                Clock::Realtime => libc::CLOCK_REALTIME,
                _ => libc::CLOCK_MONOTONIC,
            };
            let mut now = timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid out-pointer and clock id.
            if unsafe { libc::clock_gettime(id, &mut now) } != 0 {
                return Err(());
            }
            d.saturating_sub(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
        }
    };
    Ok(Instant::now().checked_add(left))
}

// ---------------------------------------------------------------------------
// The wait table.

/// A lock for the buckets that waits through the real futex, so that
/// contention on it never re-enters the hook.
///
/// # Invariants
/// 0 unlocked, 1 locked, 2 locked with (possible) sleepers.
struct RawLock(AtomicU32);

impl RawLock {
    const fn new() -> RawLock {
        RawLock(AtomicU32::new(0))
    }

    #[inline]
    fn lock(&self) {
        if self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..100 {
            if self.0.load(Ordering::Relaxed) == 0
                && self
                    .0
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        while self.0.swap(2, Ordering::Acquire) != 0 {
            real::keep_errno(|| {
                real_futex(
                    self.0.as_ptr() as usize,
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    2,
                    0,
                    0,
                    0,
                )
            });
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            real::keep_errno(|| {
                real_futex(
                    self.0.as_ptr() as usize,
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1,
                    0,
                    0,
                    0,
                )
            });
        }
    }
}

/// One parked context.
struct Waiter {
    addr: usize,
    bitset: u32,
    /// Unique per wait.
    id: u64,
    /// The waiting thread's tag (see [`ThreadSlot`]).
    thread: u64,
    unparker: Unparker,
}

struct Bucket {
    lock: RawLock,
    /// Entries in `list`, plus waiters between announcing themselves and
    /// enqueueing. Wakers skip the bucket when it is 0 (see the module docs).
    count: AtomicUsize,
    list: UnsafeCell<Vec<Waiter>>,
}

// SAFETY: `list` is only accessed through a `Locked` guard, i.e. with
// `lock` held; the other fields are atomics.
unsafe impl Sync for Bucket {}

static TABLE: [Bucket; BUCKETS] = [const {
    Bucket {
        lock: RawLock::new(),
        count: AtomicUsize::new(0),
        list: UnsafeCell::new(Vec::new()),
    }
}; BUCKETS];

static NEXT_WAIT: AtomicU64 = AtomicU64::new(1);
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

fn bucket(addr: usize) -> &'static Bucket {
    let h = ((addr as u64) >> 2).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    &TABLE[h as usize % BUCKETS]
}

/// A bucket's list, locked.
struct Locked(&'static Bucket);

impl Bucket {
    fn locked(&'static self) -> Locked {
        self.lock.lock();
        Locked(self)
    }
}

impl std::ops::Deref for Locked {
    type Target = Vec<Waiter>;
    fn deref(&self) -> &Vec<Waiter> {
        // SAFETY: the lock is held for the guard's life (type invariant of
        // `Bucket`), so no other reference to the list exists.
        unsafe { &*self.0.list.get() }
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut Vec<Waiter> {
        // SAFETY: as in `deref`.
        unsafe { &mut *self.0.list.get() }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        self.0.lock.unlock();
    }
}

/// `ThreadSlot::parker` before the probe, and when it failed.
const PARKER_UNKNOWN: usize = 0;
const PARKER_NONE: usize = 1;

/// Per-thread state: a tag naming the thread's waiters (purged when the
/// thread exits), the address of the thread's std parker word (found by a
/// probe), and the idle re-checks of each coroutine sharing it.
struct ThreadSlot {
    tag: u64,
    parker: Cell<usize>,
    /// Set during the probe: the next futex wait of this thread is the
    /// probe's, and records its address here instead of waiting.
    probe: Cell<Option<usize>>,
    /// Coroutine id → consecutive re-checks that found nothing (back-off).
    idle: RefCell<Vec<(u64, u32)>>,
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        // The thread exits: its parked contexts never run again, and their
        // entries would swallow wake-ups meant for live waiters.
        for b in &TABLE {
            if b.count.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let mut list = b.locked();
            let before = list.len();
            list.retain(|w| w.thread != self.tag);
            let gone = before - list.len();
            drop(list);
            b.count.fetch_sub(gone, Ordering::SeqCst);
        }
    }
}

thread_local! {
    static THREAD: ThreadSlot = ThreadSlot {
        tag: NEXT_THREAD.fetch_add(1, Ordering::Relaxed),
        parker: Cell::new(PARKER_UNKNOWN),
        probe: Cell::new(None),
        idle: RefCell::new(Vec::new()),
    };
}

impl ThreadSlot {
    /// The address of this thread's std parker word. The first call probes
    /// it: `park_timeout(0)` makes std wait on it once, and this hook, told
    /// to expect the probe, records the address and returns at once. It
    /// runs before any context of this thread has waited through the hook
    /// (the first wait of the thread), so no other context is in the
    /// parker; a token the probe may have consumed is given back with
    /// `unpark` (at worst a spurious wake-up, which parking allows).
    fn parker(&self) -> usize {
        let p = self.parker.get();
        if p != PARKER_UNKNOWN {
            return p;
        }
        self.parker.set(PARKER_NONE);
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..2 {
                self.probe.set(Some(0));
                std::thread::park_timeout(Duration::ZERO);
                if let Some(a) = self.probe.take().filter(|&a| a != 0) {
                    return Some(a);
                }
                // A pending token made park_timeout return without
                // waiting; it is consumed now, so the second try waits.
            }
            None
        }));
        self.probe.set(None);
        let _ = std::panic::catch_unwind(|| std::thread::current().unpark());
        if let Ok(Some(a)) = found {
            self.parker.set(a);
            return a;
        }
        PARKER_NONE
    }

    /// How long a coroutine sharing the parker sleeps before re-checking:
    /// 1 ms, doubling with each re-check that found no token, up to 16 ms.
    fn recheck_interval(&self, coroutine: u64) -> Duration {
        let idle = self.idle.borrow();
        let n = idle
            .iter()
            .find(|(c, _)| *c == coroutine)
            .map_or(0, |(_, n)| *n);
        Duration::from_millis(1 << n.min(4))
    }

    fn note_recheck(&self, coroutine: u64, found_nothing: bool) {
        let mut idle = self.idle.borrow_mut();
        let pos = idle.iter().position(|(c, _)| *c == coroutine);
        match (pos, found_nothing) {
            (Some(i), true) => idle[i].1 += 1,
            (None, true) => idle.push((coroutine, 1)),
            (Some(i), false) => {
                idle.swap_remove(i);
            }
            (None, false) => {}
        }
    }
}

/// Removes up to `want` waiters of `addr` matching `bitset` from `list`
/// (oldest first), appending their unparkers to `out`.
fn take_waiters(
    list: &mut Vec<Waiter>,
    addr: usize,
    want: usize,
    bitset: u32,
    out: &mut Vec<Unparker>,
) {
    list.retain(|w| {
        if out.len() < want && w.addr == addr && w.bitset & bitset != 0 {
            out.push(w.unparker.clone());
            false
        } else {
            true
        }
    });
}

/// Wakes up to `want` moss-side waiters of `addr` matching `bitset`;
/// returns how many were woken.
fn wake_table(addr: usize, want: usize, bitset: u32) -> usize {
    if want == 0 {
        return 0;
    }
    let b = bucket(addr);
    fence(Ordering::SeqCst);
    if b.count.load(Ordering::SeqCst) == 0 {
        return 0;
    }
    let mut out = Vec::new();
    take_waiters(&mut b.locked(), addr, want, bitset, &mut out);
    b.count.fetch_sub(out.len(), Ordering::SeqCst);
    let n = out.len();
    for u in out {
        u.unpark();
    }
    n
}

/// `FUTEX_WAKE`/`FUTEX_WAKE_BITSET`: moss-side waiters first, then the
/// kernel for the rest.
fn wake(uaddr: usize, op: c_int, nr: c_int, bitset: u32) -> Option<c_long> {
    if bitset == 0 {
        return None;
    }
    let want = wanted(nr);
    let woken = real::keep_errno(|| wake_table(uaddr, want, bitset));
    if woken == 0 {
        return None;
    }
    if woken >= want {
        return Some(woken as c_long);
    }
    let e = real::errno();
    let r = real_futex(uaddr, op, (want - woken) as u32, 0, 0, bitset);
    if r < 0 {
        real::set_errno(e);
        return Some(woken as c_long);
    }
    Some(woken as c_long + r)
}

/// A wait on the calling thread's own std parker (see the module docs):
/// the word is left "empty" while the context sleeps, so that another
/// context of the thread that parks too reaches this hook instead of
/// spinning in std, and the context re-checks periodically.
fn wait_parker(word: &AtomicU32, deadline: Option<Instant>) -> c_long {
    // std has just moved the word from "empty" to "parked"; an `unpark`
    // may have made it "notified" since.
    if word
        .compare_exchange(PARKER_PARKED, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // "notified": take the token (std's loop consumes it). Anything
        // else is another context's doing: re-check as well.
        word.store(PARKER_NOTIFIED, Ordering::SeqCst);
        return 0;
    }
    let coroutine = moss_runtime::current().id().as_u64();
    let every = THREAD
        .try_with(|t| t.recheck_interval(coroutine))
        .unwrap_or(Duration::from_millis(1));
    let at = Instant::now() + every;
    let until = Some(deadline.map_or(at, |d| d.min(at)));
    let w = real::keep_errno(|| {
        if park::cancel_pending() {
            park::park_shielded(until, WHAT)
        } else {
            park::park(until, WHAT)
        }
    });
    let token = word.load(Ordering::SeqCst) == PARKER_NOTIFIED;
    let _ = THREAD.try_with(|t| t.note_recheck(coroutine, !token));
    if w == Wakeup::TimedOut && deadline.is_some_and(|d| Instant::now() >= d) {
        real::set_errno(libc::ETIMEDOUT);
        return -1;
    }
    // Hand std's parker loop the "notified" state so that it returns and
    // its caller re-checks its condition, whoever took the token.
    word.store(PARKER_NOTIFIED, Ordering::SeqCst);
    0
}

/// `FUTEX_WAIT`/`FUTEX_WAIT_BITSET` from a context that can park.
fn wait(
    uaddr: usize,
    expected: u32,
    ts: *const timespec,
    bitset: u32,
    clock: Clock,
) -> Option<c_long> {
    if !park::can_park() || uaddr == 0 || !uaddr.is_multiple_of(4) || bitset == 0 {
        return None;
    }
    if in_thread_tls(uaddr) {
        return None;
    }
    let probing = THREAD.try_with(|t| {
        if t.probe.get().is_some() {
            t.probe.set(Some(uaddr));
            true
        } else {
            false
        }
    });
    match probing {
        Err(_) => return None,
        Ok(true) => {
            real::set_errno(libc::ETIMEDOUT);
            return Some(-1);
        }
        Ok(false) => {}
    }
    let deadline = deadline(ts, clock).ok()?;
    let (tag, parker) = THREAD.try_with(|t| (t.tag, t.parker())).ok()?;
    // SAFETY: a non-null, aligned futex word the caller waits on (its
    // contract with the kernel: valid for reads during the call).
    let word = unsafe { AtomicU32::from_ptr(uaddr as *mut u32) };
    if uaddr == parker && expected == PARKER_PARKED {
        return Some(wait_parker(word, deadline));
    }
    let b = bucket(uaddr);
    b.count.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let mut list = b.locked();
    if word.load(Ordering::SeqCst) != expected {
        drop(list);
        b.count.fetch_sub(1, Ordering::SeqCst);
        real::set_errno(libc::EAGAIN);
        return Some(-1);
    }
    let id = NEXT_WAIT.fetch_add(1, Ordering::Relaxed);
    list.push(Waiter {
        addr: uaddr,
        bitset,
        id,
        thread: tag,
        unparker: park::unparker(),
    });
    drop(list);
    let w = real::keep_errno(|| {
        if park::cancel_pending() {
            park::park_shielded(deadline, WHAT)
        } else {
            park::park(deadline, WHAT)
        }
    });
    let mut list = b.locked();
    let queued = match list.iter().position(|w| w.id == id) {
        Some(i) => {
            list.remove(i);
            true
        }
        None => false,
    };
    drop(list);
    if !queued {
        // A waker removed the entry: woken, whatever else happened.
        return Some(0);
    }
    b.count.fetch_sub(1, Ordering::SeqCst);
    if w == Wakeup::TimedOut && deadline.is_some_and(|d| Instant::now() >= d) {
        real::set_errno(libc::ETIMEDOUT);
        return Some(-1);
    }
    // Spurious (a cancellation, or a stray wake-up): std re-checks.
    Some(0)
}

/// Whether `addr` lies in one of the calling thread's thread-local storage
/// blocks (one per loaded object with a TLS segment).
///
/// A futex word there belongs to the *thread*, not to the context waiting
/// on it: a lock library that keeps a per-thread wait record (parking_lot's
/// `ThreadData`, linked into its wait queues while the thread waits) would
/// have two coroutines of one thread share, and corrupt, that record. So
/// such waits block the thread, exactly as without patching. std's own
/// primitives never wait on thread-local words (their futexes live in the
/// lock, and the thread parker's word is on the heap).
///
/// `dl_iterate_phdr` reports the calling thread's block of each object
/// (`dlpi_tls_data`; null where this thread has not allocated it yet, and
/// then no word can be there either). It takes the loader's lock, which
/// is never held around a `syscall()` futex wait; the cost (well under a
/// microsecond) is paid only by waits that are about to park.
fn in_thread_tls(addr: usize) -> bool {
    struct Probe {
        addr: usize,
        hit: bool,
    }
    extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: glibc passes a valid `dl_phdr_info` for the duration of
        // the callback, and `data` is the `Probe` below, borrowed
        // exclusively by this walk.
        let (info, probe) = unsafe { (&*info, &mut *data.cast::<Probe>()) };
        let base = info.dlpi_tls_data as usize;
        if base == 0 || info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of
        // the object, valid during the callback.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        for ph in phdrs {
            if ph.p_type == libc::PT_TLS
                && probe.addr >= base
                && probe.addr - base < ph.p_memsz as usize
            {
                probe.hit = true;
                return 1;
            }
        }
        0
    }
    let mut probe = Probe { addr, hit: false };
    // SAFETY: `each` matches the callback type and only reads what glibc
    // hands it; `probe` outlives the walk.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut probe).cast()) };
    probe.hit
}

static FORK_HANDLER: AtomicBool = AtomicBool::new(false);

/// Registers the fork handler that empties the table in a child (called by
/// `patch_all`).
pub(crate) fn init() {
    if !FORK_HANDLER.swap(true, Ordering::SeqCst) {
        // SAFETY: registers a handler with no preparation or parent part.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
    }
}

/// In a forked child only the forking thread exists: every entry belongs
/// to a context that will never run here, and a bucket lock may have been
/// held by a thread that is gone. Entries are leaked, not dropped (their
/// unparkers belong to the parent's hubs).
extern "C" fn after_fork_child() {
    for b in &TABLE {
        b.lock.0.store(0, Ordering::SeqCst);
        b.count.store(0, Ordering::SeqCst);
        // SAFETY: single-threaded child, and the lock was just reset: no
        // other reference to the list exists.
        std::mem::forget(std::mem::take(unsafe { &mut *b.list.get() }));
    }
}
