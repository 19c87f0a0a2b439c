//! [`Registration`]: an fd registered with the calling thread's reactor, and
//! waiting for its readiness.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::hub::{Hub, Mode};
use crate::task::Wakeup;

/// Which readiness to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Data (or EOF, or an error) can be read; a listener can accept.
    Readable,
    /// Data can be written (or the peer is gone).
    Writable,
}

/// Why [`Registration::wait_raw`] returned without readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed.
    TimedOut,
    /// A `kill` or `timeout` is pending for the waiting coroutine; it is
    /// delivered at the next moss blocking point (see [`crate::park`]).
    Cancelled,
    /// The registration was dropped (the fd is being closed).
    Closed,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::TimedOut => "timed out waiting for readiness",
            WaitError::Cancelled => "the waiting coroutine was cancelled",
            WaitError::Closed => "the file descriptor was closed while waiting",
        })
    }
}

impl std::error::Error for WaitError {}

static NEXT_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An fd registered with the current thread's hub (edge-triggered, both
/// directions). Dropping it deregisters the fd and wakes its waiters; it does
/// not close the fd. Tied to the thread that created it.
///
/// ```
/// use std::io::Read;
/// use std::os::fd::AsRawFd;
/// use moss_runtime::reactor::{Interest, Registration};
///
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// a.set_nonblocking(true).unwrap();
/// let reg = Registration::new(a.as_raw_fd()).unwrap();
/// let writer = moss_runtime::spawn(move || {
///     moss_runtime::sleep(std::time::Duration::from_millis(10));
///     std::io::Write::write_all(&mut &b, b"hi").unwrap();
///     b
/// });
/// let mut buf = [0u8; 2];
/// loop {
///     match a.read(&mut buf) {
///         Ok(n) => { assert_eq!(&buf[..n], b"hi"); break }
///         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
///             reg.wait(Interest::Readable, None).unwrap()
///         }
///         Err(e) => panic!("{e}"),
///     }
/// }
/// writer.join().unwrap();
/// ```
pub struct Registration {
    key: usize,
    generation: u64,
    fd: RawFd,
    hub_id: u64,
    _not_send: PhantomData<*const ()>,
}

impl Registration {
    /// Registers `fd` (which the caller has made non-blocking) with this
    /// thread's hub.
    pub fn new(fd: RawFd) -> io::Result<Registration> {
        let hub = Hub::current();
        let generation = NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = hub.reactor.register(fd, generation)?;
        Ok(Registration {
            key,
            generation,
            fd,
            hub_id: hub.remote.hub_id,
            _not_send: PhantomData,
        })
    }

    /// The registered fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The id of the hub this registration belongs to (see [`hub_id`](super::hub_id)).
    pub fn hub_id(&self) -> u64 {
        self.hub_id
    }

    /// Waits until the fd is ready for `interest`, or `deadline` passes
    /// (`ErrorKind::TimedOut`). A pending `kill`/`timeout` of the calling
    /// coroutine unwinds it from here; while the coroutine is unwinding
    /// already (a destructor doing I/O), the cancellation instead ends the
    /// wait early with an error (`ErrorKind::Other`, [`WaitError::Cancelled`]).
    #[inline(always)]
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        match self.wait_in(interest, deadline, Mode::Fallible) {
            Ok(()) => Ok(()),
            Err(WaitError::TimedOut) => Err(io::Error::from(io::ErrorKind::TimedOut)),
            Err(WaitError::Closed) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                WaitError::Closed,
            )),
            Err(WaitError::Cancelled) => {
                crate::cancel::deliver_or_fail(Hub::current());
                Err(io::Error::other(WaitError::Cancelled))
            }
        }
    }

    /// Like [`wait`](Self::wait) but never unwinds: for code that cannot
    /// unwind (C ABI hooks) and fails its call instead. On `Cancelled` the
    /// cancellation stays pending. It is reported also while the caller is
    /// unwinding already (a destructor doing I/O), when it must not be
    /// delivered: see [`park::deliver_cancel`](crate::park::deliver_cancel).
    #[inline]
    pub fn wait_raw(&self, interest: Interest, deadline: Option<Instant>) -> Result<(), WaitError> {
        self.wait_in(interest, deadline, Mode::Fallible)
    }

    /// [`wait_raw`](Self::wait_raw) with `mode` saying how a cancellation
    /// counts (for a caller whose own deadline, not `deadline`, decides
    /// whether it can fail: a wait cut into slices).
    #[inline]
    pub(crate) fn wait_mode(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mode: Mode,
    ) -> Result<(), WaitError> {
        self.wait_in(interest, deadline, mode)
    }

    /// The wait, with `mode` saying how a cancellation counts.
    ///
    /// Inlined into I/O types on purpose: every return between the switch
    /// and the retried syscall mispredicts after a stack switch (see the hub's
    /// `yield_now`).
    #[inline(always)]
    fn wait_in(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mode: Mode,
    ) -> Result<(), WaitError> {
        let hub = Hub::current();
        debug_assert_eq!(
            hub.remote.hub_id, self.hub_id,
            "fd used on another thread's hub"
        );
        let h = hub.current_header();
        // Copied: after the park, `self` is not touched again, so a waiter
        // whose registration is dropped meanwhile (by a `close` hook of
        // another coroutine) stays sound and reports `Closed`.
        let (key, generation) = (self.key, self.generation);
        {
            let mut slots = hub.reactor.slots.borrow_mut();
            let slot = match slots.get_mut(key) {
                Some(s) if s.generation == generation => s,
                _ => return Err(WaitError::Closed),
            };
            let hup = interest == Interest::Readable && slot.read_hup;
            let (waiters, flag) = match interest {
                Interest::Readable => (&mut slot.readers, &mut slot.read_ready),
                Interest::Writable => (&mut slot.writers, &mut slot.write_ready),
            };
            if std::mem::take(flag) || hup {
                return Ok(());
            }
            // (A pending cancellation ends the park below at once.)
            waiters.push(h.token());
        }
        let token = h.token();
        let waiting = &hub.reactor.waiters;
        waiting.set(waiting.get() + 1);
        let w = hub.park(deadline, "I/O readiness", mode);
        waiting.set(waiting.get() - 1);
        let mut slots = hub.reactor.slots.borrow_mut();
        let slot = match slots.get_mut(key) {
            Some(s) if s.generation == generation => s,
            _ => return Err(WaitError::Closed),
        };
        if w != Wakeup::Notified {
            // A deadline or a cancellation ended the park: the waiter is
            // still queued. (A readiness edge takes every waiter of its
            // direction off the list, and a dropped registration takes
            // its slot along.)
            let waiters = match interest {
                Interest::Readable => &mut slot.readers,
                Interest::Writable => &mut slot.writers,
            };
            waiters.remove(token);
        }
        match w {
            Wakeup::Notified => Ok(()),
            Wakeup::TimedOut => Err(WaitError::TimedOut),
            Wakeup::Cancelled => Err(WaitError::Cancelled),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(hub) = Hub::try_current() else {
            return;
        };
        if hub.remote.hub_id != self.hub_id {
            return;
        }
        if let Some(waiters) = hub.reactor.deregister(self.key, self.generation) {
            for t in waiters.into_iter() {
                hub.wake(t, Wakeup::Notified);
            }
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("fd", &self.fd)
            .field("hub", &self.hub_id)
            .finish()
    }
}
