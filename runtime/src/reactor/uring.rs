//! The io_uring backend of a hub (opt-in: `MOSS_IO=uring`).
//!
//! On this backend the operations of `moss::net` are not "try the
//! syscall, wait for readiness, retry": the coroutine describes the whole
//! operation in a submission queue entry (SQE) that points at its own
//! buffer, parks, and is woken with the operation's result (the CQE). The
//! hub submits every SQE queued since its last poll and reaps the
//! completions in one `io_uring_enter` per loop iteration, so N
//! coroutines' receives and sends cost one syscall, not N.
//!
//! Receives, `accept` and `connect` wait inside the kernel (the ring arms
//! its own poll). Sends never do: they carry `MSG_DONTWAIT`, so a send that
//! finds no room completes at once with `-EAGAIN`, and the caller waits for
//! room on the hub's edge-triggered epoll set, then submits again
//! (`moss_io`'s `net/sys.rs` says why a send must not wait in the ring).
//!
//! # Submission and completion
//!
//! ```text
//!   coroutine (its stack holds the buffer)     hub loop (root stack)
//!   ──────────────────────────────────────     ─────────────────────
//!   op(entry): ops.insert(token) → key
//!              SQ ◀── entry, user_data = key
//!              park ─────────────────────────▶ runs the other ready tasks
//!                                               poll: one io_uring_enter
//!                                                 submits the SQ (N entries)
//!                                                 waits ≥ 1 CQE or the next
//!                                                 timer (EXT_ARG timeout)
//!                                               reap: CQE(key, res)
//!                                                 ops[key].res = res
//!              ◀──────────────────────────────── wake(ops[key].token)
//!   ops.remove(key) → res
//!
//!   a send's res = -EAGAIN (no room):
//!   wait(Writable) on the epoll set ────────────▶ (the ring's poll on the
//!              ◀──────────────────────────────── epoll fd reports the edge)
//!   submit the send again
//! ```
//!
//! A coroutine parked on an SQE runs again only after the hub's next poll.
//! The hub polls once the run queue is empty or `BATCH` tasks ran, and a
//! coroutine that yields while entries are queued lets it poll even when
//! it is alone: a producer that yields after each item does not outrun
//! the coroutines parked on those entries.
//!
//! Readiness waits (the monkey hooks, `wait_fd`, `Registration`) keep the
//! hub's epoll set; the ring watches the epoll fd itself with a one-shot
//! `POLL_ADD`, so the same `io_uring_enter` also wakes for them. When that
//! CQE arrives the hub harvests the epoll set with a zero timeout and arms
//! the poll again. The cross-thread waker is an eventfd in that epoll set:
//! a wake-up from another thread ends the ring's wait too. Timers are the
//! wait's timeout. One wait, three sources.
//!
//! # Cancellation is exact
//!
//! The kernel may write into (or read from) the buffer until it posts the
//! CQE, and the buffer lives on the coroutine's stack. So a coroutine never
//! leaves [`submit`] — neither returns nor unwinds — before the CQE of its
//! operation arrived:
//!
//! ```text
//!   park ends without the CQE (deadline passed, kill, timeout):
//!     SQ ◀── ASYNC_CANCEL(key)          (its own CQE is ignored)
//!     loop: ops[key].token = this park; park, shielded (a pending or new
//!           cancellation does not end the wait; only the CQE does)
//!     CQE(key, res):
//!       res = -ECANCELED → the deadline's or the cancellation's error
//!                          (a kill then unwinds, from here, buffer released)
//!       anything else    → the operation completed first: its result is
//!                          returned (no byte received is lost, no byte sent
//!                          unreported); a pending kill or timeout is
//!                          delivered at the next blocking point, and a
//!                          `timeout` whose closure returns before one
//!                          returns the closure's value, not `Elapsed`
//! ```
//!
//! A key is freed only when its CQE has been taken, so a CQE always finds
//! the operation it belongs to: user_data is never reused while the kernel
//! may still complete it. The ring is dropped with the hub, after every
//! coroutine has ended (thread exit kills them, and each one waits for its
//! CQE as above); the coroutines a hub leaks keep their stacks mapped.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use super::WaitError;
use crate::hub::{Hub, Mode};
use crate::task::{Token, Wakeup};

/// The user_data of the poll on the hub's epoll fd.
const EPOLL_UD: u64 = u64::MAX;
/// The user_data of `ASYNC_CANCEL` requests (their CQEs are ignored).
const CANCEL_UD: u64 = u64::MAX - 1;

/// Submission queue entries; a full queue is submitted early.
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries (the kernel keeps overflowing CQEs until reaped).
const CQ_ENTRIES: u32 = 4096;

/// The ring's setup flags beyond the defaults, from `MOSS_URING_SETUP`
/// (a comma-separated list of `coop`, `single`, `defer`, `sendsys`,
/// `pollfirst`; read once). A measurement knob for the benchmarks: every combination works,
/// none is on by default (the README's numbers say why).
#[derive(Clone, Copy, Default)]
struct Setup {
    /// `IORING_SETUP_COOP_TASKRUN`: completions do not interrupt the
    /// thread; their task work runs at its next `io_uring_enter`.
    coop: bool,
    /// `IORING_SETUP_SINGLE_ISSUER`: only this thread submits.
    single: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`): completions'
    /// task work runs only in an `io_uring_enter` that asks for events.
    defer: bool,
    /// Sends stay `send(2)` (see [`ring_sends`]).
    sendsys: bool,
    /// Receives carry `IORING_RECVSEND_POLL_FIRST` (see [`recv_ioprio`]).
    pollfirst: bool,
}

impl Setup {
    fn get() -> Setup {
        // Fork-safe: a child forked while another thread reads it reads
        // its own.
        static SETUP: crate::sys::atfork::ForkSafeOnceLock<Setup> =
            crate::sys::atfork::ForkSafeOnceLock::new();
        *SETUP.get_or_init(|| {
            let mut s = Setup::default();
            let v = std::env::var("MOSS_URING_SETUP").unwrap_or_default();
            for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                match f {
                    "coop" => s.coop = true,
                    "single" => s.single = true,
                    "defer" => s.defer = true,
                    "sendsys" => s.sendsys = true,
                    "pollfirst" => s.pollfirst = true,
                    _ => eprintln!(
                        "moss: MOSS_URING_SETUP: unknown flag {f:?} \
                         (coop, single, defer, sendsys, pollfirst)"
                    ),
                }
            }
            s
        })
    }
}

/// An operation in flight.
struct Op {
    /// The park its CQE ends.
    token: Token,
    /// The CQE's result, once it arrived.
    res: Option<i32>,
}

/// One hub's ring.
pub(crate) struct Ring {
    ring: RefCell<IoUring>,
    ops: RefCell<Slab<Op>>,
    /// The `POLL_ADD` on the epoll fd is in flight.
    epoll_armed: Cell<bool>,
    epfd: RawFd,
    /// CQEs copied out of the ring before they are acted on.
    reaped: RefCell<Vec<(u64, i32)>>,
    /// Entries were queued since the last `io_uring_enter` (a yield then
    /// lets the hub poll: see [`Ring::queued`]).
    queued: Cell<bool>,
    /// `moss::net` submits sends to this ring (see [`ring_sends`]).
    sends: bool,
    /// The `ioprio` of `moss::net`'s receives (see [`recv_ioprio`]).
    recv_ioprio: u16,
}

impl Ring {
    /// A ring watching the epoll instance `epfd`. Fails if io_uring cannot
    /// be set up (old kernel, seccomp, `io_uring_disabled`) or lacks the
    /// timed wait (`IORING_FEAT_EXT_ARG`, Linux 5.11).
    pub(crate) fn new(epfd: RawFd) -> io::Result<Ring> {
        let mut b = IoUring::builder();
        b.setup_cqsize(CQ_ENTRIES);
        let setup = Setup::get();
        if setup.coop {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        if setup.single {
            b.setup_single_issuer();
        }
        if setup.defer {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }
        let ring = b.build(SQ_ENTRIES)?;
        if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks EXT_ARG or NODROP (Linux 5.11 or later needed)",
            ));
        }
        Ok(Ring {
            ring: RefCell::new(ring),
            ops: RefCell::new(Slab::new()),
            epoll_armed: Cell::new(false),
            epfd,
            reaped: RefCell::new(Vec::new()),
            queued: Cell::new(false),
            sends: !setup.sendsys,
            recv_ioprio: if setup.pollfirst {
                RECVSEND_POLL_FIRST
            } else {
                0
            },
        })
    }

    /// Whether operations are in flight or queued (the hub must enter).
    pub(crate) fn busy(&self) -> bool {
        !self.ops.borrow().is_empty()
    }

    /// Whether entries wait for the next `io_uring_enter`. A coroutine
    /// that yields while this holds lets the hub poll even if nobody else
    /// is ready: the coroutines parked on those entries (a writer whose
    /// send is queued, say) can only go on after the next poll.
    #[inline]
    pub(crate) fn queued(&self) -> bool {
        self.queued.get()
    }

    /// Queues `e`; a full submission queue is submitted first.
    fn push(&self, e: &squeue::Entry) {
        self.queued.set(true);
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: the entry's pointers are valid until its CQE: the
            // callers of `submit` guarantee it, the epoll fd and a cancel
            // request point at nothing.
            if unsafe { ring.submission().push(e) }.is_ok() {
                return;
            }
            // Full: hand the queue to the kernel now. `EBUSY` (completions
            // backed up) clears once reaped; the next poll does that.
            if let Err(err) = ring.submit()
                && err.raw_os_error() != Some(libc::EBUSY)
                && err.kind() != io::ErrorKind::Interrupted
            {
                panic!("moss: io_uring_enter failed: {err}");
            }
        }
    }

    /// Submits what is queued and waits up to `timeout` (`None`: until a
    /// completion) in one `io_uring_enter`, then takes every CQE. Returns
    /// whether the epoll fd became readable (the caller harvests it).
    pub(super) fn poll(&self, timeout: Option<Duration>, mut wake: impl FnMut(Token)) -> bool {
        if !self.epoll_armed.get() {
            self.epoll_armed.set(true);
            let e = opcode::PollAdd::new(types::Fd(self.epfd), libc::POLLIN as u32)
                .build()
                .user_data(EPOLL_UD);
            self.push(&e);
        }
        {
            let mut ring = self.ring.borrow_mut();
            self.queued.set(false);
            let r = match timeout {
                Some(Duration::ZERO) => {
                    // Completions are posted without entering, unless
                    // their task work waits for an enter (the kernel
                    // raises the TASKRUN flag, with COOP_TASKRUN or
                    // DEFER_TASKRUN).
                    let idle = {
                        let sq = ring.submission();
                        sq.is_empty() && !sq.taskrun()
                    };
                    if idle { Ok(0) } else { ring.submit() }
                }
                None => ring.submit_and_wait(1),
                Some(d) => {
                    let ts = types::Timespec::from(d);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    ring.submitter().submit_with_args(1, &args)
                }
            };
            if let Err(e) = r {
                match e.raw_os_error() {
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                    _ => panic!("moss: io_uring_enter failed: {e}"),
                }
            }
            let mut reaped = self.reaped.borrow_mut();
            for cqe in ring.completion() {
                reaped.push((cqe.user_data(), cqe.result()));
            }
        }
        let mut epoll = false;
        let reaped = std::mem::take(&mut *self.reaped.borrow_mut());
        for &(ud, res) in &reaped {
            match ud {
                EPOLL_UD => {
                    self.epoll_armed.set(false);
                    epoll = true;
                }
                CANCEL_UD => {}
                key => {
                    let mut ops = self.ops.borrow_mut();
                    if let Some(op) = ops.get_mut(key as usize)
                        && op.res.is_none()
                    {
                        op.res = Some(res);
                        let t = op.token;
                        drop(ops);
                        wake(t);
                    }
                }
            }
        }
        let mut buf = self.reaped.borrow_mut();
        if buf.capacity() < reaped.capacity() {
            *buf = reaped;
            buf.clear();
        }
        epoll
    }
}

/// Whether this thread's hub runs on io_uring.
#[inline]
pub fn enabled() -> bool {
    Hub::current().reactor.ring.is_some()
}

/// Submits `entry` to this thread's ring and parks the calling context
/// until its completion; returns the CQE's result (`res`, a negative errno
/// on failure), or why it returned without one (then the operation was
/// cancelled and did nothing). Never returns nor unwinds before the kernel
/// is done with the operation (see the module header).
///
/// `deadline` passing ends it with [`WaitError::TimedOut`]; a pending or
/// new `kill`/`timeout` of the caller with [`WaitError::Cancelled`] (the
/// caller delivers it). An operation that completed before its
/// cancellation took effect returns its result; the cancellation stays
/// pending for the next blocking point.
///
/// # Safety
/// Every buffer, address and length `entry` points at must stay valid (and
/// not be accessed otherwise) until this function returns; its user_data
/// is overwritten. The hub must run on io_uring ([`enabled`]).
///
/// # Panics
/// If the hub does not run on io_uring.
pub unsafe fn submit(entry: squeue::Entry, deadline: Option<Instant>) -> Result<i32, WaitError> {
    let hub = Hub::current();
    let ring = hub
        .reactor
        .ring
        .as_ref()
        .expect("moss: io_uring operation on an epoll hub");
    let h = hub.current_header();
    if crate::greenlet::drives_greenlets(h) {
        // Before anything is submitted: the panic unwinds a stack the
        // kernel has no pointer into.
        crate::greenlet::cannot_block();
    }
    let key = ring.ops.borrow_mut().insert(Op {
        token: h.token(),
        res: None,
    });
    ring.push(&entry.user_data(key as u64));
    let waiting = &hub.reactor.waiters;
    waiting.set(waiting.get() + 1);
    let seen = h.state.seen();
    let w = hub.park(deadline, "I/O (io_uring)", Mode::Fallible);
    let res = ring.ops.borrow()[key].res;
    let res = match res {
        Some(r) => Ok(r),
        None => {
            // Woken without the CQE: cancel, and wait for the CQE anyway
            // (the kernel may use the buffer until then).
            let c = opcode::AsyncCancel::new(key as u64)
                .build()
                .user_data(CANCEL_UD);
            ring.push(&c);
            loop {
                ring.ops.borrow_mut()[key].token = h.token();
                hub.park(None, "I/O (io_uring cancel)", Mode::Shielded);
                if let Some(r) = ring.ops.borrow()[key].res {
                    break match (r, w) {
                        (r, _) if r != -libc::ECANCELED => {
                            // Completed first: the caller gets the result
                            // (bytes received or sent), as if the
                            // cancellation had come after it; it stays
                            // pending for the next blocking point, and a
                            // `timeout` that ends before one returns the
                            // result, not `Elapsed`.
                            h.state.unsee(seen);
                            Ok(r)
                        }
                        (_, Wakeup::TimedOut) => Err(WaitError::TimedOut),
                        _ => Err(WaitError::Cancelled),
                    };
                }
            }
        }
    };
    waiting.set(waiting.get() - 1);
    ring.ops.borrow_mut().remove(key);
    res
}

/// [`submit`] with the result as `io::Result`: a CQE's negative result is
/// its errno; a deadline that passed is `ErrorKind::TimedOut`; a
/// cancellation unwinds the caller if it may (see [`Registration::wait`]),
/// else fails with `ErrorKind::Other`.
///
/// # Safety
/// As for [`submit`].
///
/// [`Registration::wait`]: super::Registration::wait
pub unsafe fn complete(entry: squeue::Entry, deadline: Option<Instant>) -> io::Result<usize> {
    // SAFETY: the caller's guarantee, passed on.
    match unsafe { submit(entry, deadline) } {
        Ok(r) if r >= 0 => Ok(r as usize),
        Ok(r) => Err(io::Error::from_raw_os_error(-r)),
        Err(WaitError::TimedOut) => Err(io::Error::from(io::ErrorKind::TimedOut)),
        Err(WaitError::Cancelled) => {
            crate::cancel::deliver_or_fail(hub_now());
            Err(io::Error::other(WaitError::Cancelled))
        }
        Err(WaitError::Closed) => Err(io::Error::from(io::ErrorKind::NotConnected)),
    }
}

fn hub_now() -> &'static Hub {
    Hub::current()
}

/// Whether this thread's hub runs on io_uring and `moss::net` submits
/// sends to its ring (the default there), rather than `send(2)`
/// (`MOSS_URING_SETUP=sendsys`, for measurement: a ring send saves the
/// syscall but parks the sender until the hub's next poll, a second
/// switch per echoed message).
#[inline]
pub fn ring_sends() -> bool {
    Hub::current()
        .reactor
        .ring
        .as_ref()
        .is_some_and(|r| r.sends)
}

/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19; older kernels ignore it):
/// the receive arms its poll at once instead of first trying the socket.
const RECVSEND_POLL_FIRST: u16 = 1;

/// The `ioprio` field `moss::net`'s receive SQEs carry on this thread's
/// ring: `IORING_RECVSEND_POLL_FIRST` with `MOSS_URING_SETUP=pollfirst`,
/// else 0. By default the kernel tries a receive when it is submitted and
/// arms a poll only if that finds no data (a second attempt follows the
/// poll's wake-up); with the flag it arms the poll at once, which saves
/// the failed attempt when the data usually arrives later, and costs a
/// poll when it was already there. A measurement knob (see the README).
#[inline]
pub fn recv_ioprio() -> u16 {
    Hub::current()
        .reactor
        .ring
        .as_ref()
        .map_or(0, |r| r.recv_ioprio)
}

/// Operations in flight on this thread's ring (0 on an epoll hub): for
/// tests that prove none is left behind.
pub fn in_flight() -> usize {
    match &Hub::current().reactor.ring {
        Some(r) => r.ops.borrow().len(),
        None => 0,
    }
}

pub use io_uring::{opcode as op, squeue::Entry, types::Fd};
