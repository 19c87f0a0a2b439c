//! Waking waiters in other processes: the [`Doorbell`] every cross-process
//! primitive ([`ProcessLock`](super::ProcessLock),
//! [`ProcessSemaphore`](super::ProcessSemaphore),
//! [`ProcessEvent`](super::ProcessEvent), [`SharedValue`](super::SharedValue),
//! a [`Connection`](super::Connection)'s locks) waits on, and the one
//! waiting loop they share ([`Doorbell::wait_for`]).
//!
//! The state of a primitive is a few atomics in a page of `MAP_SHARED`
//! memory; changing it is a compare-and-swap, with no syscall when nobody
//! waits. A doorbell is a non-blocking pipe created with the primitive, so
//! that every process forked afterwards holds it: "something changed" is
//! one byte written to it, and a waiter waits for readability, through its
//! hub (a coroutine parks, a root runs its hub, a thread without a hub
//! blocks in `poll`).
//!
//! # The protocol
//!
//! ```text
//!   waiter                                    whoever makes progress possible
//!   ──────                                    ───────────────────────────────
//!   waiters += 1                              change the state (unlock, release, set)
//!   loop {                                    if waiters > 0: ring (write 1 byte)
//!       drain the bell (read all bytes)
//!       attempt (CAS on the state) → done
//!       wait until readable, or a slice ends
//!   }
//!   waiters -= 1
//! ```
//!
//! The waiter counts itself before its attempt and the changer changes the
//! state before it reads the count (both `SeqCst`), so a change that the
//! attempt missed always rings, after the attempt. The byte stays in the
//! pipe until a waiter drains it, so the ring cannot be missed by a waiter
//! that registers late either: readiness is checked when it registers.
//!
//! A waiter drains *before* its attempt, so a byte it takes is never one
//! rung after its attempt. Draining can take bytes another waiter has not
//! seen yet (its wake-up is lost), so whoever drains is responsible for
//! what those bytes announced: a waiter that then gets the lock holds it
//! (and rings when it unlocks); one that fails finds the state taken by
//! someone who will ring; one that takes a permit or sees an event set and
//! leaves more behind rings again for the others ([`Doorbell::ring`] after
//! its attempt: "pass it on").
//!
//! Every wait also ends after [`SLICE`] to attempt again: that is how a
//! lock notices that its holder died, and it bounds the damage of the one
//! thing the protocol cannot account for, a waiter process killed between
//! its drain and its attempt.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::process::poll_wait;
use crate::backoff::Backoff;
use crate::hub::{Hub, Mode};
use crate::park::{self, Wakeup};
use crate::reactor::{Interest, Registration, WaitError};
use crate::sys::fd;

/// How long a wait on another process goes without attempting again.
pub(crate) const SLICE: Duration = Duration::from_millis(200);

/// How a wait for readiness ended.
pub(crate) enum Waited {
    Ready,
    TimedOut,
    Cancelled,
}

/// A pipe that announces "the state may have changed" to every process
/// holding it (see the module docs).
pub(crate) struct Doorbell {
    r: OwnedFd,
    w: OwnedFd,
}

impl Doorbell {
    /// A new doorbell: a non-blocking pipe, inherited by forked children.
    pub(crate) fn new() -> io::Result<Doorbell> {
        let (r, w) = fd::pipe(true)?;
        Ok(Doorbell { r, w })
    }

    /// Rings: one byte. A full pipe rings already, so `EAGAIN` is fine.
    pub(crate) fn ring(&self) {
        let _ = fd::write(self.w.as_raw_fd(), &[1], false);
    }

    /// Rings if anyone waits (`waiters`, the primitive's count).
    pub(crate) fn ring_if_waited(&self, waiters: &AtomicU32) {
        if waiters.load(Ordering::SeqCst) > 0 {
            self.ring();
        }
    }

    /// Reads every byte that is there.
    fn drain(&self) {
        let mut buf = [0u8; 256];
        while matches!(fd::read(self.r.as_raw_fd(), &mut buf), Ok(n) if n == buf.len()) {}
    }

    /// Waits until `attempt` succeeds, following the protocol of the module
    /// docs; `None` if `deadline` passes first. `attempt(slice_ended)` is
    /// told whether a [`SLICE`] ended without a ring (the time to check
    /// that a lock's holder still lives). `waiters` is the primitive's count
    /// of waiters. A `kill` or `timeout` of the caller unwinds it (it has
    /// taken nothing); while the caller is unwinding already (a destructor),
    /// a timed wait ends early (`None`, as at its deadline) and an untimed
    /// one keeps waiting, the cancellation left pending.
    pub(crate) fn wait_for<R>(
        &self,
        waiters: &AtomicU32,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(bool) -> Option<R>,
    ) -> Option<R> {
        let _counted = Counted::new(waiters);
        let mode = mode_for(deadline);
        let mut slice_ended = false;
        loop {
            self.drain();
            if let Some(r) = attempt(slice_ended) {
                return Some(r);
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return None;
            }
            let slice = Instant::now() + SLICE;
            let until = deadline.map_or(slice, |d| d.min(slice));
            slice_ended = match wait_fd(self.r.as_raw_fd(), Interest::Readable, Some(until), mode) {
                Waited::Ready => false,
                Waited::TimedOut => true,
                Waited::Cancelled if park::cancel_deliverable() => park::deliver_cancel(),
                Waited::Cancelled => return None,
            };
        }
    }
}

/// One waiter counted in a primitive's `waiters` while it lives.
struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    fn new(waiters: &'a AtomicU32) -> Counted<'a> {
        waiters.fetch_add(1, Ordering::SeqCst);
        Counted(waiters)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a wait treats a cancellation, from the caller's own deadline: a call
/// without one cannot fail (see [`Mode`]).
pub(crate) fn mode_for(deadline: Option<Instant>) -> Mode {
    if deadline.is_some() {
        Mode::Fallible
    } else {
        Mode::Infallible
    }
}

/// Waits for `fd` through this thread's hub (a dup of it is registered,
/// so any number of waiters of one hub can wait on one fd), never
/// unwinding; `mode` says how a cancellation counts (`deadline` may be a
/// slice of a longer wait). A thread without a hub blocks in `poll`. When
/// no fd is left to duplicate or the hub refuses the duplicate, polls the
/// fd with growing naps on hub timers ([`crate::backoff`]) until it is
/// ready or `deadline` passes: every path ends by `deadline`.
///
/// The registration is removed (`EPOLL_CTL_DEL`) before the duplicate is
/// closed. The other order leaves the entry in the epoll set: epoll keys it
/// by (open file, fd number) and drops it only when the open file itself is
/// released, which the original fd prevents. The next wait's duplicate,
/// which gets the same number for the same file, then collides with it.
pub(crate) fn wait_fd(
    fd: RawFd,
    interest: Interest,
    deadline: Option<Instant>,
    mode: Mode,
) -> Waited {
    if !park::hub_exists() {
        return match poll_wait(fd, interest, deadline) {
            Ok(false) => Waited::TimedOut,
            _ => Waited::Ready, // ready, or an error the retried call reports
        };
    }
    let Ok(dup) = fd::dup(fd) else {
        return nap_wait(fd, interest, deadline, mode);
    };
    // Declared after `dup`, so dropped (deregistered) before it is closed,
    // also when unwinding.
    let Ok(reg) = Registration::new(dup.as_raw_fd()) else {
        return nap_wait(fd, interest, deadline, mode);
    };
    match reg.wait_mode(interest, deadline, mode) {
        Ok(()) | Err(WaitError::Closed) => Waited::Ready,
        Err(WaitError::TimedOut) => Waited::TimedOut,
        Err(WaitError::Cancelled) => Waited::Cancelled,
    }
}

/// [`wait_fd`] without an fd to register: zero-timeout `poll`s with growing
/// naps in between, until the fd is ready (or reports an error, which the
/// caller's retried call sees) or `deadline` passes.
fn nap_wait(fd: RawFd, interest: Interest, deadline: Option<Instant>, mode: Mode) -> Waited {
    let mut naps = Backoff::new();
    loop {
        if !matches!(poll_wait(fd, interest, Some(Instant::now())), Ok(false)) {
            return Waited::Ready;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Waited::TimedOut;
        }
        let nap = naps.next_wake(deadline);
        if Hub::current().park(Some(nap), "fd wait (no fd left)", mode) == Wakeup::Cancelled {
            return Waited::Cancelled;
        }
    }
}
