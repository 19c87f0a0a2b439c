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
//!   driven by a coroutine) the real syscall blocks the thread as before.
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
//! # Thread parking shared by coroutines
//!
//! std's thread parker is one futex word per OS thread (0 empty,
//! 1 notified, `u32::MAX` parked), built for a single waiter. Two contexts
//! of one thread parked in it at once (two coroutines each blocked in
//! `mpsc::Receiver::recv`, say) break its state machine: the second
//! decrement leaves `u32::MAX - 1`, which would make the second waiter spin
//! and every `unpark` silent. The hook recognises that state (a wait for
//! `u32::MAX` on a word another context of the same thread waits on, found
//! decremented), repairs the word and switches that address to *group
//! mode* for this thread: every waiter on it is woken by any wake-up of
//! the word and re-checks its own condition (the hook hands each escaping
//! waiter the "notified" state std's loop needs). Because a waiter leaving
//! the parker briefly leaves the word "empty" while others still wait, an
//! `unpark` from another thread landing in that window would not call the
//! futex at all; group-mode waiters therefore also re-check periodically
//! (1 ms, backing off to 50 ms while the mode lasts), which bounds such a
//! wake-up's delay instead of losing it. A single waiter per thread (the
//! usual case) is woken precisely.

use std::cell::{RefCell, UnsafeCell};
use std::ffi::{c_int, c_long};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use libc::timespec;
use moss_runtime::park::{self, Unparker, Wakeup};

use super::{patched, real};

const MATCH_ANY: u32 = u32::MAX;
/// std's thread parker states (futex.rs in std's thread_parking).
const PARKER_NOTIFIED: u32 = 1;
const PARKER_PARKED: u32 = u32::MAX;
/// How far below `PARKER_PARKED` a parker word can be decremented by extra
/// contexts of one thread before we stop recognising it.
const PARKER_SLACK: u32 = 1 << 16;
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
        if let Some(r) = futex(a1 as usize, a2 as c_int, a3 as u32, a4, a5 as usize, a6 as u32) {
            return r;
        }
    }
    // SAFETY: forwarded unchanged.
    unsafe { real::syscall()(n, a1, a2, a3, a4, a5, a6) }
}

/// A private futex operation, or `None` to pass it to the kernel as is.
fn futex(uaddr: usize, op: c_int, val: u32, a4: c_long, uaddr2: usize, val3: u32) -> Option<c_long> {
    if op & libc::FUTEX_PRIVATE_FLAG == 0 {
        return None;
    }
    let realtime = op & libc::FUTEX_CLOCK_REALTIME != 0;
    match op & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) {
        libc::FUTEX_WAIT => wait(uaddr, val, a4 as *const timespec, MATCH_ANY, Clock::Relative),
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
    /// A waiter on this thread's shared thread parker (see the module docs):
    /// woken together with every other group waiter of its address.
    group: bool,
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

/// Per-thread state: a tag naming the thread's waiters (purged when the
/// thread exits) and the addresses in group mode on this thread, with
/// when the mode started (for the re-check back-off).
struct ThreadSlot {
    tag: u64,
    groups: RefCell<Vec<(usize, Instant)>>,
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
        groups: RefCell::new(Vec::new()),
    };
}

impl ThreadSlot {
    fn group_since(&self, addr: usize) -> Option<Instant> {
        let g = self.groups.borrow();
        g.iter().find(|(a, _)| *a == addr).map(|(_, t)| *t)
    }

    fn set_group(&self, addr: usize, on: bool) {
        let mut g = self.groups.borrow_mut();
        let pos = g.iter().position(|(a, _)| *a == addr);
        match (pos, on) {
            (None, true) => g.push((addr, Instant::now())),
            (Some(i), false) => {
                g.swap_remove(i);
            }
            _ => {}
        }
    }
}

/// How long a group-mode waiter sleeps before re-checking: 1 ms, growing
/// with the age of the mode up to 50 ms.
fn recheck_interval(since: Instant) -> Duration {
    (since.elapsed() / 4).clamp(Duration::from_millis(1), Duration::from_millis(50))
}

/// Removes the waiters to wake for a wake-up of `want` waiters of `addr`
/// (and `bitset`) from `list`, appending their unparkers to `out`; returns
/// how many count against `want` (all group waiters of the address count
/// as one).
fn take_waiters(list: &mut Vec<Waiter>, addr: usize, want: usize, bitset: u32, out: &mut Vec<Unparker>) -> usize {
    let matches = |w: &Waiter| w.addr == addr && w.bitset & bitset != 0;
    let mut n = 0;
    if list.iter().any(|w| w.group && matches(w)) {
        n = 1;
        list.retain(|w| {
            if w.group && matches(w) {
                out.push(w.unparker.clone());
                false
            } else {
                true
            }
        });
    }
    list.retain(|w| {
        if n < want && !w.group && matches(w) {
            n += 1;
            out.push(w.unparker.clone());
            false
        } else {
            true
        }
    });
    n
}

/// Wakes up to `want` moss-side waiters of `addr` matching `bitset`;
/// returns how many were woken (group waiters of one address count once).
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
    let n = {
        let mut list = b.locked();
        take_waiters(&mut list, addr, want, bitset, &mut out)
    };
    b.count.fetch_sub(out.len(), Ordering::SeqCst);
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

/// Whether `v` is std's parker word decremented below "parked" by extra
/// contexts of one thread.
fn parker_overdrawn(v: u32) -> bool {
    v != PARKER_PARKED && v >= PARKER_PARKED - PARKER_SLACK
}

/// Moves a parker word back to "parked"; false if it became "notified"
/// meanwhile (an `unpark` landed: the caller returns at once instead).
fn repair_parker(word: &AtomicU32) -> bool {
    let mut cur = word.load(Ordering::SeqCst);
    loop {
        if cur == PARKER_NOTIFIED {
            return false;
        }
        if cur == PARKER_PARKED {
            return true;
        }
        match word.compare_exchange(cur, PARKER_PARKED, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(v) => cur = v,
        }
    }
}

/// `FUTEX_WAIT`/`FUTEX_WAIT_BITSET` from a context that can park.
fn wait(uaddr: usize, expected: u32, ts: *const timespec, bitset: u32, clock: Clock) -> Option<c_long> {
    if !park::can_park() || uaddr == 0 || uaddr % 4 != 0 || bitset == 0 {
        return None;
    }
    let deadline = deadline(ts, clock).ok()?;
    let (tag, group_since) = THREAD
        .try_with(|t| {
            let g = if expected == PARKER_PARKED {
                t.group_since(uaddr)
            } else {
                None
            };
            (t.tag, g)
        })
        .ok()?;
    // SAFETY: a non-null, aligned futex word the caller waits on (its
    // contract with the kernel: valid for reads during the call).
    let word = unsafe { AtomicU32::from_ptr(uaddr as *mut u32) };
    let b = bucket(uaddr);
    b.count.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let mut list = b.locked();
    let cur = word.load(Ordering::SeqCst);
    let mut group = group_since.is_some();
    let mut converted = Vec::new();
    if cur != expected || group {
        let local = |l: &Vec<Waiter>| l.iter().any(|w| w.addr == uaddr && w.thread == tag);
        let parker_state = cur == PARKER_PARKED || cur == 0 || cur == PARKER_NOTIFIED;
        let parker = expected == PARKER_PARKED
            && if group {
                parker_state || parker_overdrawn(cur)
            } else {
                parker_overdrawn(cur) && local(&list)
            };
        let escape = parker && (cur == PARKER_NOTIFIED || !repair_parker(word));
        if !parker || escape {
            if escape {
                // A token is there: take it (std's loop consumes it) and let
                // the other waiters of this thread re-check too.
                take_waiters(&mut list, uaddr, usize::MAX, MATCH_ANY, &mut converted);
            }
            drop(list);
            b.count.fetch_sub(1 + converted.len(), Ordering::SeqCst);
            for u in converted {
                u.unpark();
            }
            if escape {
                return Some(0);
            }
            real::set_errno(libc::EAGAIN);
            return Some(-1);
        }
        if !group {
            // A second context of this thread entered std's thread parker:
            // group mode for this address. The precise waiters re-enter.
            group = true;
            let _ = THREAD.try_with(|t| t.set_group(uaddr, true));
            list.retain(|w| {
                if w.addr == uaddr && w.thread == tag {
                    converted.push(w.unparker.clone());
                    false
                } else {
                    true
                }
            });
        }
    }
    let id = NEXT_WAIT.fetch_add(1, Ordering::Relaxed);
    list.push(Waiter {
        addr: uaddr,
        bitset,
        id,
        thread: tag,
        group,
        unparker: park::unparker(),
    });
    drop(list);
    b.count.fetch_sub(converted.len(), Ordering::SeqCst);
    for u in converted.drain(..) {
        u.unpark();
    }
    let park_until = if group {
        let since = group_since.unwrap_or_else(Instant::now);
        let recheck = Instant::now() + recheck_interval(since);
        Some(deadline.map_or(recheck, |d| d.min(recheck)))
    } else {
        deadline
    };
    let w = real::keep_errno(|| {
        if park::cancel_pending() {
            park::park_shielded(park_until, WHAT)
        } else {
            park::park(park_until, WHAT)
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
    let mut alone = false;
    if group {
        // Leaving a shared parker: any other waiter of this thread on it
        // must be in group mode (it now depends on re-checks), and the mode
        // ends when nobody of this thread is left on it.
        let others = list.iter().any(|w| w.addr == uaddr && w.thread == tag);
        if others {
            list.retain(|w| {
                if w.addr == uaddr && w.thread == tag && !w.group {
                    converted.push(w.unparker.clone());
                    false
                } else {
                    true
                }
            });
        }
        alone = !others;
    }
    drop(list);
    b.count
        .fetch_sub(usize::from(queued) + converted.len(), Ordering::SeqCst);
    if group {
        let _ = THREAD.try_with(|t| t.set_group(uaddr, !alone));
    }
    for u in converted {
        u.unpark();
    }
    let timed_out = queued
        && w == Wakeup::TimedOut
        && deadline.is_some_and(|d| Instant::now() >= d);
    if timed_out {
        real::set_errno(libc::ETIMEDOUT);
        return Some(-1);
    }
    if group {
        // Hand std's parker loop the "notified" state so it returns and
        // its caller re-checks its condition.
        word.store(PARKER_NOTIFIED, Ordering::SeqCst);
    }
    Some(0)
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
