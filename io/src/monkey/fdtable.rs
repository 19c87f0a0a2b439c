//! Per-fd state of the hooks: which fds are cooperative, the user's view of
//! `O_NONBLOCK`, the emulated `SO_RCVTIMEO`/`SO_SNDTIMEO`, and each thread's
//! reactor registrations.
//!
//! # The process-wide table
//!
//! One [`Entry`] per fd number, in chunks of 1024 allocated on first use
//! (fds past `MAX_FD` are never cooperative and pass straight through). It
//! is lock-free (atomics only), so hooks may touch it anywhere, including in
//! a child between `fork` and `exec`. An entry is in one of three kinds:
//!
//! ```text
//!            close / dup2 onto it            fstat: not pollable
//!   Unknown ◀─────────────────────── any ──  Unknown ──────────────────▶ Plain
//!      │  socket()/accept() on a hub thread, or the first hooked I/O
//!      │  on a hub thread and fstat says socket, FIFO or tty
//!      ▼
//!    Coop: the kernel fd is O_NONBLOCK; `nonblock` holds what the user set
//! ```
//!
//! `Plain` fds (regular files, eventfds, other devices, ...) and `Unknown`
//! ones pass straight through. Sockets, pipes and ttys become cooperative
//! lazily, on their first hooked call on a thread with a hub (`fstat`,
//! `isatty`, `fcntl` once per fd). fds 0–2 are never classified: they are
//! usually shared with other processes (the shell's terminal, a parent's
//! pipe), and `O_NONBLOCK` belongs to the shared file description. A pipe
//! end the process made itself is its own description, so making it
//! non-blocking does not reach the other end: a child started with
//! `Stdio::piped()` still gets blocking stdio. Each reset bumps the entry's
//! generation, which invalidates the registrations threads hold for the old
//! fd.
//!
//! # Per-thread registrations
//!
//! A [`Registration`](moss::reactor::Registration) belongs to one
//! hub, so each thread waits through its own: one per fd, kept in the
//! table the hooks share with `moss::net` (`registry.rs`), claimed for the
//! fd's generation and made on the first wait of that fd on that thread
//! (edge-triggered, both directions: one `epoll_ctl` per fd and thread,
//! none per wait). Beside it, each thread keeps the hooks' own state of
//! the fd: its waits in progress (woken by `close`) and the drained hint.
//! `close` on the owning thread wakes those waits (they report `EBADF`)
//! and gives up the claim, which deregisters the fd while it is still open.
//! A registration whose fd was closed on another thread, or while a
//! coroutine was waiting on it, is replaced when its number comes back, and
//! never deregistered by number once a newer file has taken it.

use std::cell::RefCell;
use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moss_runtime::backoff::{Polled, poll_until};
use moss_runtime::park::{self, Unparker};
use moss_runtime::reactor::{Interest, WaitError};

use super::real;
use crate::registry::{self, Owner, Reg};

const CHUNK: usize = 1024;
const CHUNKS: usize = 4096;
/// fds at or above this are never cooperative.
const MAX_FD: usize = CHUNK * CHUNKS;

const KIND_MASK: u64 = 0b11;
const UNKNOWN: u64 = 0;
const PLAIN: u64 = 1;
const COOP: u64 = 2;
const NONBLOCK: u64 = 0b100;
/// A byte stream (stream socket or pipe): a short read means "drained".
const STREAM: u64 = 0b1000;
const GEN_SHIFT: u32 = 8;

/// One fd's state.
///
/// # Invariants
/// `state` packs kind (bits 0–1), the user's `O_NONBLOCK` (bit 2) and the
/// generation (bits 8–63). The timeouts are nanoseconds, 0 for none.
struct Entry {
    state: AtomicU64,
    rcv_ns: AtomicU64,
    snd_ns: AtomicU64,
}

static TABLE: [AtomicPtr<Entry>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];

fn entry(fd: c_int, alloc: bool) -> Option<&'static Entry> {
    let fd = usize::try_from(fd).ok().filter(|&f| f < MAX_FD)?;
    let slot = &TABLE[fd / CHUNK];
    let mut chunk = slot.load(Ordering::Acquire);
    if chunk.is_null() {
        if !alloc {
            return None;
        }
        chunk = alloc_chunk(slot);
    }
    // SAFETY: chunks are arrays of CHUNK entries that are never freed once
    // published, and `fd % CHUNK < CHUNK`.
    Some(unsafe { &*chunk.add(fd % CHUNK) })
}

#[cold]
fn alloc_chunk(slot: &AtomicPtr<Entry>) -> *mut Entry {
    let fresh: Box<[Entry]> = (0..CHUNK)
        .map(|_| Entry {
            state: AtomicU64::new(0),
            rcv_ns: AtomicU64::new(0),
            snd_ns: AtomicU64::new(0),
        })
        .collect();
    let fresh = Box::into_raw(fresh) as *mut Entry;
    match slot.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => fresh,
        Err(winner) => {
            // SAFETY: `fresh` came from `Box::into_raw` of a CHUNK-long boxed
            // slice just above and was never published.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, CHUNK)) });
            winner
        }
    }
}

/// A snapshot of one fd's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FdState(u64);

impl FdState {
    /// Cooperative, and the user expects blocking calls: the slow path.
    #[inline]
    pub(crate) fn blocking_coop(self) -> bool {
        self.0 & (KIND_MASK | NONBLOCK) == COOP
    }
    pub(crate) fn is_stream(self) -> bool {
        self.0 & STREAM != 0
    }
    pub(crate) fn is_coop(self) -> bool {
        self.0 & KIND_MASK == COOP
    }
    pub(crate) fn is_unknown(self) -> bool {
        self.0 & KIND_MASK == UNKNOWN
    }
    pub(crate) fn user_nonblock(self) -> bool {
        self.0 & NONBLOCK != 0
    }
    fn generation(self) -> u64 {
        self.0 >> GEN_SHIFT
    }
}

/// The recorded state of `fd` (no syscall).
#[inline]
pub(crate) fn get(fd: c_int) -> FdState {
    match entry(fd, false) {
        Some(e) => FdState(e.state.load(Ordering::Acquire)),
        None => FdState(UNKNOWN),
    }
}

/// The state of `fd` for a hooked call on this thread: an unknown fd is
/// classified first when this thread has a hub (one `fstat`, and for a
/// socket `fcntl` + two `getsockopt`, once per fd).
#[inline]
pub(crate) fn state_for_io(fd: c_int) -> FdState {
    let s = get(fd);
    if !s.is_unknown() || fd <= 2 || !park::can_park() {
        return s;
    }
    classify(fd)
}

#[cold]
fn classify(fd: c_int) -> FdState {
    real::keep_errno(|| {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is a valid out-pointer for one `stat`.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return FdState(UNKNOWN);
        }
        // SAFETY: fstat succeeded, so it filled `st`.
        let kind = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
        let is_socket = kind == libc::S_IFSOCK;
        // SAFETY: isatty only queries the fd.
        let pollable = is_socket
            || kind == libc::S_IFIFO
            || (kind == libc::S_IFCHR && unsafe { libc::isatty(fd) } == 1);
        if !pollable {
            set_kind(fd, PLAIN, false);
            return get(fd);
        }
        // SAFETY: F_GETFL takes no argument.
        let fl = unsafe { real::fcntl()(fd, libc::F_GETFL, 0usize) };
        if fl < 0 {
            return FdState(UNKNOWN);
        }
        let user_nb = fl & libc::O_NONBLOCK != 0;
        if !user_nb {
            // SAFETY: F_SETFL takes an int flag argument.
            let r = unsafe { real::fcntl()(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as usize) };
            if r != 0 {
                return FdState(UNKNOWN);
            }
        }
        if is_socket {
            set_timeout(fd, libc::SO_RCVTIMEO, read_timeout(fd, libc::SO_RCVTIMEO));
            set_timeout(fd, libc::SO_SNDTIMEO, read_timeout(fd, libc::SO_SNDTIMEO));
        }
        let stream = if is_socket {
            let mut ty: c_int = 0;
            let mut len = size_of::<c_int>() as libc::socklen_t;
            // SAFETY: `ty`/`len` are valid out-pointers of the sizes given.
            let r = unsafe {
                real::getsockopt()(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    (&raw mut ty).cast(),
                    &mut len,
                )
            };
            r == 0 && ty == libc::SOCK_STREAM
        } else {
            kind == libc::S_IFIFO
        };
        set_kind(fd, COOP, user_nb);
        set_stream(fd, stream);
        get(fd)
    })
}

fn read_timeout(fd: c_int, opt: c_int) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv`/`len` are valid out-pointers of the sizes given.
    let r =
        unsafe { real::getsockopt()(fd, libc::SOL_SOCKET, opt, (&raw mut tv).cast(), &mut len) };
    if r != 0 {
        None
    } else {
        timeval_to_duration(&tv)
    }
}

/// `SO_RCVTIMEO`'s value as a timeout (`None` for "no timeout").
pub(crate) fn timeval_to_duration(tv: &libc::timeval) -> Option<Duration> {
    let d = Duration::from_secs(tv.tv_sec.max(0) as u64)
        + Duration::from_micros(tv.tv_usec.max(0) as u64);
    (!d.is_zero()).then_some(d)
}

/// Marks `fd` cooperative (its kernel fd is already non-blocking); `stream`
/// for a stream socket.
pub(crate) fn adopt(
    fd: c_int,
    user_nonblock: bool,
    rcv: Option<Duration>,
    snd: Option<Duration>,
    stream: bool,
) {
    set_timeout(fd, libc::SO_RCVTIMEO, rcv);
    set_timeout(fd, libc::SO_SNDTIMEO, snd);
    set_kind(fd, COOP, user_nonblock);
    set_stream(fd, stream);
}

fn set_stream(fd: c_int, stream: bool) {
    let Some(e) = entry(fd, true) else { return };
    if stream {
        e.state.fetch_or(STREAM, Ordering::AcqRel);
    } else {
        e.state.fetch_and(!STREAM, Ordering::AcqRel);
    }
}

fn set_kind(fd: c_int, kind: u64, nonblock: bool) {
    let Some(e) = entry(fd, true) else { return };
    let nb = if nonblock { NONBLOCK } else { 0 };
    let _ = e
        .state
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some((s & !(KIND_MASK | NONBLOCK)) | kind | nb)
        });
}

/// Records the user's `O_NONBLOCK` for a cooperative fd. Going
/// non-blocking also drops this thread's registration: the hooks never wait
/// on such an fd, and its new owner (typically `moss::net` taking over a std
/// socket) may want to register it with the hub itself.
pub(crate) fn set_user_nonblock(fd: c_int, nonblock: bool) {
    set_kind(fd, COOP, nonblock);
    if nonblock {
        drop_local(fd);
    }
}

/// Records an `SO_RCVTIMEO`/`SO_SNDTIMEO` value.
pub(crate) fn set_timeout(fd: c_int, opt: c_int, d: Option<Duration>) {
    let ns = d.map_or(0, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    });
    let existing = entry(fd, false);
    let Some(e) = existing.or_else(|| if ns == 0 { None } else { entry(fd, true) }) else {
        return;
    };
    let field = if opt == libc::SO_RCVTIMEO {
        &e.rcv_ns
    } else {
        &e.snd_ns
    };
    field.store(ns, Ordering::Relaxed);
}

/// The emulated timeout for waits in direction `dir`.
pub(crate) fn timeout(fd: c_int, dir: Interest) -> Option<Duration> {
    let e = entry(fd, false)?;
    let ns = match dir {
        Interest::Readable => e.rcv_ns.load(Ordering::Relaxed),
        Interest::Writable => e.snd_ns.load(Ordering::Relaxed),
    };
    (ns != 0).then(|| Duration::from_nanos(ns))
}

/// Forgets everything about `fd` (it is being closed or replaced): back to
/// `Unknown` with a new generation, and this thread's registration dropped.
pub(crate) fn reset(fd: c_int) {
    let Some(e) = entry(fd, false) else { return };
    let old = e.state.load(Ordering::Acquire);
    if old == 0 {
        // Never classified: nothing to invalidate.
        return;
    }
    let was_coop = old & KIND_MASK == COOP;
    e.state
        .store(((old >> GEN_SHIFT) + 1) << GEN_SHIFT, Ordering::Release);
    e.rcv_ns.store(0, Ordering::Relaxed);
    e.snd_ns.store(0, Ordering::Relaxed);
    if was_coop {
        drop_local(fd);
    }
}

/// Gives `to` the state of `from` (after a successful `dup`).
pub(crate) fn copy(from: c_int, to: c_int) {
    reset(to);
    let s = get(from);
    if s.is_unknown() {
        return;
    }
    let (rcv, snd) = (
        timeout(from, Interest::Readable),
        timeout(from, Interest::Writable),
    );
    set_timeout(to, libc::SO_RCVTIMEO, rcv);
    set_timeout(to, libc::SO_SNDTIMEO, snd);
    set_kind(to, s.0 & KIND_MASK, s.user_nonblock());
    set_stream(to, s.is_stream());
}

/// Why a wait for readiness ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ready,
    TimedOut,
    Cancelled,
    Closed,
}

struct Local {
    generation: u64,
    /// Unparkers of the waits in progress (by wait number), woken by `close`.
    waiters: Vec<(u64, Unparker)>,
    /// The last read on this thread was short on a stream: the kernel's
    /// queue was empty then, so any later data comes with a readiness edge
    /// and the next read may wait first (see [`take_drained`]). Cleared by
    /// every readable wait, since a wait consumes the edge it returns on,
    /// and ignored while `moss::net` shares the registration.
    drained: bool,
}

thread_local! {
    static LOCAL: RefCell<Vec<Option<Local>>> = const { RefCell::new(Vec::new()) };
    static NEXT_WAIT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Forgets this thread's waits on `fd` (before it is closed, or when it
/// goes non-blocking), waking them: they re-check the fd and report `EBADF`
/// if it was closed. The hooks' claim on the shared registration goes too
/// (deregistering the fd now if nobody else uses it).
fn drop_local(fd: c_int) {
    let taken = LOCAL
        .try_with(|l| {
            l.try_borrow_mut()
                .ok()
                .and_then(|mut l| l.get_mut(fd as usize).and_then(Option::take))
        })
        .ok()
        .flatten();
    let Some(local) = taken else { return };
    for (_, u) in &local.waiters {
        u.unpark();
    }
    registry::release(fd, Owner::Hook(local.generation));
}

/// This thread's registration of `fd` for generation `generation` (from the
/// table shared with `moss::net`), with an unparker of the caller's coming
/// wait (number `wait`) enlisted for `close`; `None` if the reactor refuses
/// the fd.
fn local_registration(fd: c_int, generation: u64, wait: u64, readable: bool) -> Option<Rc<Reg>> {
    let idx = usize::try_from(fd).ok()?;
    let got = real::keep_errno(|| registry::get(fd, Owner::Hook(generation))).ok()?;
    LOCAL
        .try_with(|l| {
            let mut l = l.try_borrow_mut().ok()?;
            if l.len() <= idx {
                l.resize_with(idx + 1, || None);
            }
            let local = match &mut l[idx] {
                Some(x) if x.generation == generation => x,
                slot => slot.insert(Local {
                    generation,
                    waiters: Vec::new(),
                    drained: false,
                }),
            };
            local.waiters.push((wait, park::unparker()));
            local.drained &= !readable && !got.shared && !got.fresh;
            Some(())
        })
        .ok()
        .flatten()?;
    Some(got.reg)
}

fn with_local(fd: c_int, generation: u64, f: impl FnOnce(&mut Local)) {
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut()
            && let Some(Some(x)) = l.get_mut(fd as usize)
            && x.generation == generation
        {
            f(x);
        }
    });
}

/// Whether this thread's last read of `fd` was short on a stream (and
/// forgets it). Then the kernel queue was empty after that read, any data
/// since came with an edge the registration recorded, and the next read can
/// wait first instead of paying for an `EAGAIN`, as `moss::net` does.
pub(crate) fn take_drained(fd: c_int, st: FdState) -> bool {
    let mut d = false;
    with_local(fd, st.generation(), |l| d = std::mem::take(&mut l.drained));
    d
}

/// Records that a read of `fd` on this thread was short on a stream.
pub(crate) fn set_drained(fd: c_int, st: FdState) {
    with_local(fd, st.generation(), |l| l.drained = true);
}

/// Waits until `fd` (in state `st`) is ready for `dir`, or `deadline`.
///
/// On a thread with a hub: parks on the fd's registration (a coroutine
/// suspends; the root runs the hub), or, if the reactor refuses the fd,
/// polls it with growing naps on hub timers. Elsewhere: blocks the thread
/// in `poll(2)`.
pub(crate) fn wait(fd: c_int, st: FdState, dir: Interest, deadline: Option<Instant>) -> Outcome {
    if park::can_park() {
        return wait_hub(fd, st.generation(), dir, deadline)
            .unwrap_or_else(|| wait_napping(fd, st.generation(), dir, deadline));
    }
    wait_poll(fd, dir, deadline)
}

fn wait_hub(
    fd: c_int,
    generation: u64,
    dir: Interest,
    deadline: Option<Instant>,
) -> Option<Outcome> {
    let wait = NEXT_WAIT.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    let reg = local_registration(fd, generation, wait, dir == Interest::Readable)?;
    let r = real::keep_errno(|| reg.wait_raw(dir, deadline));
    with_local(fd, generation, |l| l.waiters.retain(|(w, _)| *w != wait));
    let closed = get(fd).generation() != generation;
    // Deregisters late if the fd was closed meanwhile (see `registry.rs`).
    real::keep_errno(|| drop(reg));
    if closed {
        return Some(Outcome::Closed);
    }
    Some(match r {
        Ok(()) => Outcome::Ready,
        Err(WaitError::TimedOut) => Outcome::TimedOut,
        Err(WaitError::Cancelled) => Outcome::Cancelled,
        Err(WaitError::Closed) => Outcome::Closed,
    })
}

/// [`wait`] on a thread with a hub for an fd the reactor refuses (see the
/// module docs of `moss_runtime::backoff`): zero-timeout `poll(2)`s with
/// growing naps in between, so the hub keeps running. A `close` or `dup2`
/// onto the fd by another coroutine ends the wait within one nap.
fn wait_napping(fd: c_int, generation: u64, dir: Interest, deadline: Option<Instant>) -> Outcome {
    let events = match dir {
        Interest::Readable => libc::POLLIN,
        Interest::Writable => libc::POLLOUT,
    };
    let ready = || {
        if get(fd).generation() != generation {
            return Some(Outcome::Closed);
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { real::poll()(&mut p, 1, 0) };
        let closed = p.revents & libc::POLLNVAL != 0;
        (r > 0).then_some(if closed {
            Outcome::Closed
        } else {
            Outcome::Ready
        })
    };
    real::keep_errno(
        || match poll_until(deadline, "fd wait (monkey, not registered)", ready) {
            Polled::Ready(o) => o,
            Polled::TimedOut => Outcome::TimedOut,
            Polled::Cancelled => Outcome::Cancelled,
        },
    )
}

/// Milliseconds for `poll(2)` until `deadline` (rounded up), -1 for none.
fn poll_timeout(deadline: Option<Instant>) -> Option<c_int> {
    match deadline {
        None => Some(-1),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            Some(c_int::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX))
        }
    }
}

/// Blocks the thread in `poll(2)` (a thread without a hub keeps its
/// blocking behaviour on an fd another thread made non-blocking).
fn wait_poll(fd: c_int, dir: Interest, deadline: Option<Instant>) -> Outcome {
    let events = match dir {
        Interest::Readable => libc::POLLIN,
        Interest::Writable => libc::POLLOUT,
    };
    real::keep_errno(|| {
        loop {
            let Some(ms) = poll_timeout(deadline) else {
                return Outcome::TimedOut;
            };
            let mut p = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { real::poll()(&mut p, 1, ms) };
            if r > 0 {
                return if p.revents & libc::POLLNVAL != 0 {
                    Outcome::Closed
                } else {
                    Outcome::Ready
                };
            }
            // r == 0: the deadline (re-checked above); r < 0: EINTR, retry.
        }
    })
}
