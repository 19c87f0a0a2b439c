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
//! The waiters of each address queue in FIFO order in a table of 256
//! buckets (`futex_table.rs`): enqueueing, leaving (timeout, cancellation)
//! and waking `n` waiters cost O(1) each plus the waiters woken, whatever
//! else waits. Each bucket has a small lock that waits through the *real*
//! futex (never through this hook), and a count of waiters that wakers
//! read without the lock. The protocol mirrors the kernel's:
//!
//! ```text
//! waiter                                 waker (after changing the word)
//! count += 1; fence(SeqCst)              fence(SeqCst)
//! lock; load word                        if count == 0: done (kernel only)
//!   != expected: unlock; EAGAIN          lock; dequeue up to val waiters; unlock
//!   == expected: enqueue; unlock; park   unpark them
//! lock; still queued? dequeue; unlock
//!   yes: timed out / spurious; no: woken (0)
//! ```
//!
//! The two fences make sure a waker that sees no waiter changed the word
//! before the waiter loaded it (so the waiter does not sleep); the bucket
//! lock orders a waiter's check-and-enqueue against a waker's removal. A
//! waiter removed by a waker reports a wake-up even if its timeout fired in
//! the meantime, as the kernel does, so no wake-up is swallowed. Waiters
//! are table entries, never on the waiting coroutine's stack, and addresses
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
//! wall clock does not move the deadline). A timeout that has already
//! passed returns `ETIMEDOUT` at once, as the kernel does. A `kill` or
//! `timeout` of a parked coroutine ends its wait as a spurious wake-up
//! (0). std's primitives then wait again, and a wait that starts with a
//! cancellation pending parks anyway (`park_shielded`): a lock must be
//! acquired, so the cancellation is delivered at the coroutine's next moss
//! blocking point after it, e.g. with the guard held, unwinding drops it.
//! If none comes, `join` reports the kill and `timeout` reports `Elapsed`.
//!
//! # Thread parking
//!
//! std's thread parker (`thread::park`, used by `mpsc` channels and
//! `thread::scope`) is one futex word per OS thread (0 empty, 1 notified,
//! `u32::MAX` parked), made for one waiter: `park` subtracts one and, if
//! that made the word "parked", waits while it reads "parked" (if it reads
//! anything else std loops in user space without a syscall); `unpark`
//! sets "notified" and makes the futex call only if the word read
//! "parked". Several coroutines of one thread share that word, and an
//! `unpark` names the thread, never one of its coroutines. The hook finds
//! the thread's parker word once (a `park_timeout(0)` probe on the
//! thread's first futex wait) and runs this protocol on it:
//!
//! * **The word stays "empty" while contexts sleep in it**, so that the
//!   next context of the thread that parks makes it "parked" and reaches
//!   this hook (from anything but "empty" std would spin). An `unpark`
//!   then only sets "notified", without a syscall.
//! * **One sleeper per thread keeps watch**: it looks at the word after
//!   1 ms, then twice as late after each look that found nothing, up to
//!   every 16 ms, without returning to std. When it finds "notified"
//!   (or any context arriving in the hook or waking in it does), the
//!   target is unknown, so
//!   **every sleeper of the thread wakes**, returns to std with the token
//!   and re-checks its own condition (std's channels: was my operation
//!   selected), parking again if it must. The watch then looks again soon,
//!   after 10 µs per sleeper just woken (between 1 and 16 ms), so that
//!   busy hand-offs are picked up quickly without re-checking k sleepers
//!   more than ~every k × 10 µs. When the watcher leaves, the oldest
//!   sleeper takes over.
//! * **A backstop**: std takes a token in user space when `park` finds
//!   "notified" (and when its loop ends), so a token meant for one sleeper
//!   can be taken by another context of the thread before the watcher
//!   sees it, without any trace reaching the hook. Every sleeper therefore
//!   also returns to std to re-check once every 2 s; a hand-off lost in
//!   that race arrives then.
//!
//! The trade-off, against a precise wake-up (impossible here: std's
//! `unpark` carries no more than the thread, and its tokens are taken
//! without a syscall): a hand-off to a coroutine parked in std's parker
//! is seen within the watch interval (1–16 ms), and costs a re-check of
//! every coroutine of that thread parked there at the time (k of them:
//! O(k) per observed hand-off, hand-offs within one interval sharing one
//! round). Idle, a thread's parked coroutines cost one look every 16 ms
//! for the thread plus one re-check per coroutine every 2 s: 2000 idle
//! std `mpsc` receivers on one hub use 0.6% of a core (~2% in a debug
//! build; the former per-coroutine 1–16 ms re-checks: 24%). The parker keeps
//! no per-coroutine state: a sleeper's entry goes with its wait.
//!
//! std's channels never pair a sender with a receiver of the sender's own
//! thread (their waker skips entries of the current thread), so a blocking
//! `recv` in a coroutine is only ever woken by a send from another thread
//! (or another hub). Between two coroutines of one thread, use moss's
//! channels, or `recv_timeout` (which retries the channel at its deadline).
//! moss's channels also wake exactly the receiver concerned, so prefer
//! them for many receivers per thread.

use std::cell::Cell;
use std::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use libc::timespec;
use moss_runtime::park::{self, Unparker, Wakeup};

use super::futex_table::{self, Locked};
use super::{patched, real};

const MATCH_ANY: u32 = u32::MAX;
/// std's thread parker states (futex.rs in std's thread_parking); "empty"
/// is 0.
const PARKER_NOTIFIED: u32 = 1;
const PARKER_PARKED: u32 = u32::MAX;
/// The watch over a thread's parker word and the backstop re-check of
/// each parked context (see "Thread parking").
const WATCH_MIN: Duration = Duration::from_millis(1);
const WATCH_MAX: Duration = Duration::from_millis(16);
const WATCH_PER_SLEEPER: Duration = Duration::from_micros(10);
const BACKSTOP: Duration = Duration::from_secs(2);
const WHAT: &str = "std::sync futex (monkey)";
const PARKER_WHAT: &str = "std thread parker (monkey)";

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
            Some(r + real::keep_errno(|| wake_table(uaddr, n, MATCH_ANY).0) as c_long)
        }
        libc::FUTEX_WAKE_OP => {
            let r = real_futex(uaddr, op, val, a4, uaddr2, val3);
            if r < 0 {
                return Some(r);
            }
            let n = real::keep_errno(|| {
                wake_table(uaddr, wanted(val as c_int), MATCH_ANY).0
                    + wake_table(uaddr2, (a4 as u32 as c_int).max(0) as usize, MATCH_ANY).0
            });
            Some(r + n as c_long)
        }
        _ => None,
    }
}

/// The real futex syscall (through libc's `syscall`, errno as it sets it).
pub(super) fn real_futex(
    uaddr: usize,
    op: c_int,
    val: u32,
    a4: c_long,
    uaddr2: usize,
    val3: u32,
) -> c_long {
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
    // An invalid pointer: the kernel reports EFAULT.
    let t = super::user::read(ts).map_err(|_| ())?;
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
// Waking.

/// Wakes up to `want` moss-side waiters of `addr` matching `bitset` (all
/// of them for a thread's parker word). Returns how many were woken and
/// whether `addr` is a parker word.
fn wake_table(addr: usize, want: usize, bitset: u32) -> (usize, bool) {
    if want == 0 {
        return (0, false);
    }
    let b = futex_table::bucket(addr);
    fence(Ordering::SeqCst);
    if b.count.load(Ordering::SeqCst) == 0 {
        return (0, false);
    }
    let mut out = Vec::new();
    let parker = b.locked().take(addr, want, bitset, &mut out);
    b.count.fetch_sub(out.len(), Ordering::SeqCst);
    let n = out.len();
    unpark_all(out);
    (n, parker)
}

fn unpark_all(us: Vec<Unparker>) {
    for u in us {
        u.unpark();
    }
}

/// `FUTEX_WAKE`/`FUTEX_WAKE_BITSET`: moss-side waiters first, then the
/// kernel for the rest (for a parker word always: the thread itself may
/// wait there in the kernel when it cannot park).
fn wake(uaddr: usize, op: c_int, nr: c_int, bitset: u32) -> Option<c_long> {
    if bitset == 0 {
        return None;
    }
    let want = wanted(nr);
    let (woken, parker) = real::keep_errno(|| wake_table(uaddr, want, bitset));
    if woken == 0 {
        return None;
    }
    if woken >= want && !parker {
        return Some(woken as c_long);
    }
    let rest = if parker { want } else { want - woken };
    let e = real::errno();
    let r = real_futex(uaddr, op, rest as u32, 0, 0, bitset);
    if r < 0 {
        real::set_errno(e);
        return Some(woken as c_long);
    }
    Some(woken as c_long + r)
}

// ---------------------------------------------------------------------------
// Waiting.

/// `FUTEX_WAIT`/`FUTEX_WAIT_BITSET`: parks a context that can park.
fn wait(
    uaddr: usize,
    expected: u32,
    ts: *const timespec,
    bitset: u32,
    clock: Clock,
) -> Option<c_long> {
    if uaddr == 0 || !uaddr.is_multiple_of(4) || bitset == 0 {
        return None;
    }
    if !park::can_park() {
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
    // The kernel fails an unreadable word with EFAULT; the loads below
    // would crash. (The parker word is std's own.)
    if uaddr != parker && super::user::read(uaddr as *const u32).is_err() {
        real::set_errno(libc::EFAULT);
        return Some(-1);
    }
    // SAFETY: a non-null, aligned futex word the caller waits on, readable
    // (just checked; its contract with the kernel: it stays valid for
    // reads during the call).
    let word = unsafe { AtomicU32::from_ptr(uaddr as *mut u32) };
    if uaddr == parker && expected == PARKER_PARKED {
        return Some(wait_parker(uaddr, word, tag, deadline));
    }
    let b = futex_table::bucket(uaddr);
    b.count.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let mut w = b.locked();
    let early = if word.load(Ordering::SeqCst) != expected {
        Some(libc::EAGAIN)
    } else if passed(deadline) {
        Some(libc::ETIMEDOUT)
    } else {
        None
    };
    if let Some(e) = early {
        drop(w);
        b.count.fetch_sub(1, Ordering::SeqCst);
        real::set_errno(e);
        return Some(-1);
    }
    let slot = w.push(uaddr, bitset, tag, false, park::unparker());
    drop(w);
    let woke = real::keep_errno(|| park_for(deadline, WHAT));
    if !b.locked().remove(slot) {
        // A waker dequeued it: woken, whatever else happened.
        return Some(0);
    }
    b.count.fetch_sub(1, Ordering::SeqCst);
    if woke == Wakeup::TimedOut && passed(deadline) {
        real::set_errno(libc::ETIMEDOUT);
        return Some(-1);
    }
    // Spurious (a cancellation, or a stray wake-up): std re-checks.
    Some(0)
}

/// Parks the calling context: a wait that starts with a cancellation
/// pending parks anyway (see the module docs).
fn park_for(until: Option<Instant>, what: &'static str) -> Wakeup {
    if park::cancel_pending() {
        park::park_shielded(until, what)
    } else {
        park::park(until, what)
    }
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// A wait on the calling thread's own std parker word (see "Thread
/// parking" in the module docs).
fn wait_parker(uaddr: usize, word: &AtomicU32, tag: u64, deadline: Option<Instant>) -> c_long {
    let b = futex_table::bucket(uaddr);
    b.count.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let mut w = b.locked();
    // std has just moved the word from "empty" to "parked"; an unpark may
    // have made it "notified" since. It stays "empty" while this context
    // sleeps, so that another context of the thread that parks reaches
    // this hook too instead of spinning in std.
    if word
        .compare_exchange(PARKER_PARKED, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // "notified": a token for some context of this thread. Everyone
        // re-checks; this context returns with it (std's loop takes it).
        let wakes = take_all(&mut w, uaddr);
        drop(w);
        b.count.fetch_sub(1 + wakes.len(), Ordering::SeqCst);
        note_token(wakes.len());
        unpark_all(wakes);
        word.store(PARKER_NOTIFIED, Ordering::SeqCst);
        return 0;
    }
    if passed(deadline) {
        drop(w);
        b.count.fetch_sub(1, Ordering::SeqCst);
        real::set_errno(libc::ETIMEDOUT);
        return -1;
    }
    let slot = w.push(uaddr, MATCH_ANY, tag, true, park::unparker());
    let mut watching = w.claim_watch(uaddr, slot);
    drop(w);
    let backstop_at = Instant::now().checked_add(BACKSTOP);
    loop {
        let watch_at = watching.then(|| Instant::now() + watch_tick());
        let until = [deadline, backstop_at, watch_at]
            .into_iter()
            .flatten()
            .min();
        let woke = real::keep_errno(|| park_for(until, PARKER_WHAT));
        let mut w = b.locked();
        if !w.is_queued(slot) {
            // A token was seen: every context of the thread re-checks.
            let wakes = hand_token(&mut w, uaddr, word);
            drop(w);
            unpark_all(wakes);
            return 0;
        }
        watching = watching || w.is_watcher(uaddr, slot);
        if word.load(Ordering::SeqCst) == PARKER_NOTIFIED {
            // An unpark since the last look: everyone re-checks, this
            // context included (the word stays "notified" for it).
            let wakes = take_all(&mut w, uaddr);
            drop(w);
            b.count.fetch_sub(wakes.len(), Ordering::SeqCst);
            note_token(wakes.len());
            unpark_all(wakes);
            return 0;
        }
        let now = Instant::now();
        let timed_out = deadline.is_some_and(|d| now >= d);
        let backstop = backstop_at.is_some_and(|d| now >= d);
        if !timed_out && !backstop && woke != Wakeup::Cancelled {
            // A quiet look, the watch handed over, or a stray wake-up.
            if watch_at.is_some_and(|t| now >= t) {
                quiet_tick();
            }
            w.set_unparker(slot, park::unparker());
            continue;
        }
        // The caller's deadline, the backstop, or a cancellation: leave;
        // the oldest sleeper takes over the watch.
        w.remove(slot);
        b.count.fetch_sub(1, Ordering::SeqCst);
        let mut wakes: Vec<Unparker> = w.hand_watch(uaddr).into_iter().collect();
        if timed_out && woke == Wakeup::TimedOut && word.load(Ordering::SeqCst) != PARKER_NOTIFIED {
            drop(w);
            unpark_all(wakes);
            real::set_errno(libc::ETIMEDOUT);
            return -1;
        }
        wakes.extend(hand_token(&mut w, uaddr, word));
        drop(w);
        unpark_all(wakes);
        return 0;
    }
}

/// Every sleeper in the parker `uaddr` (bucket `w`, locked), dequeued.
fn take_all(w: &mut Locked, uaddr: usize) -> Vec<Unparker> {
    let mut wakes = Vec::new();
    w.take(uaddr, usize::MAX, MATCH_ANY, &mut wakes);
    wakes
}

/// A context leaves the parker and returns to std: hands std's loop the
/// "notified" state, so that it returns and its caller re-checks its
/// condition. If the word was "notified" already, an unpark is pending
/// (its target unknown): the sleepers left (bucket `w`, locked) wake too;
/// returns them, to be woken once the bucket is unlocked.
fn hand_token(w: &mut Locked, uaddr: usize, word: &AtomicU32) -> Vec<Unparker> {
    if word.swap(PARKER_NOTIFIED, Ordering::SeqCst) != PARKER_NOTIFIED {
        return Vec::new();
    }
    let wakes = take_all(w, uaddr);
    w.bucket().count.fetch_sub(wakes.len(), Ordering::SeqCst);
    note_token(wakes.len());
    wakes
}

/// The watcher's next look comes after this long (see "Thread parking").
fn watch_tick() -> Duration {
    THREAD.try_with(|t| t.watch_tick.get()).unwrap_or(WATCH_MAX)
}

/// A look that found nothing: the next one comes twice as late.
fn quiet_tick() {
    let _ = THREAD.try_with(|t| t.watch_tick.set((t.watch_tick.get() * 2).min(WATCH_MAX)));
}

/// A token was seen and `woken` sleepers re-check: the next look comes
/// soon, though not so often that re-checking them all would dominate
/// (10 µs per sleeper), and not later than the usual maximum.
fn note_token(woken: usize) {
    let tick = (WATCH_PER_SLEEPER * woken as u32).clamp(WATCH_MIN, WATCH_MAX);
    let _ = THREAD.try_with(|t| t.watch_tick.set(tick));
}

// ---------------------------------------------------------------------------
// Per-thread state.

/// `ThreadSlot::parker` before the probe, and when it failed.
const PARKER_UNKNOWN: usize = 0;
const PARKER_NONE: usize = 1;

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

/// Per-thread state: a tag naming the thread's waiters (purged when the
/// thread exits), the address of the thread's std parker word (found by a
/// probe), and the watch interval of that parker.
struct ThreadSlot {
    tag: u64,
    parker: Cell<usize>,
    /// Set during the probe: the next futex wait of this thread is the
    /// probe's, and records its address here instead of waiting.
    probe: Cell<Option<usize>>,
    /// When the watcher of the thread's parker looks next (see "Thread
    /// parking").
    watch_tick: Cell<Duration>,
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        // The thread exits: its parked contexts never run again, and their
        // entries would swallow wake-ups meant for live waiters.
        for b in futex_table::buckets() {
            if b.count.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let gone = b.locked().purge_thread(self.tag);
            b.count.fetch_sub(gone, Ordering::SeqCst);
        }
    }
}

thread_local! {
    static THREAD: ThreadSlot = ThreadSlot {
        tag: NEXT_THREAD.fetch_add(1, Ordering::Relaxed),
        parker: Cell::new(PARKER_UNKNOWN),
        probe: Cell::new(None),
        watch_tick: Cell::new(WATCH_MIN),
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

/// In a forked child only the forking thread exists: the table starts
/// empty (see `futex_table::forget_all_after_fork`).
extern "C" fn after_fork_child() {
    futex_table::forget_all_after_fork();
}

hook_addresses!(syscall);
