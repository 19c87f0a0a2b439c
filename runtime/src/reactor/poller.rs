//! The reactor proper: one hub's epoll instance and the readiness state of
//! its fds (see the module above for the protocol), and on the io_uring
//! backend the ring that nests that epoll instance (`uring.rs`). Of the
//! scheduler it knows only how to wake a context by its token: the hub
//! polls it, and it wakes the contexts its events concern.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use slab::Slab;

use crate::hub::Hub;
use crate::task::{Token, Wakeup};

/// The token of the hub's cross-thread waker in the epoll set.
const WAKER_TOKEN: mio::Token = mio::Token(usize::MAX);

/// One hub's epoll instance and the readiness state of its fds.
pub(crate) struct Reactor {
    poll: RefCell<mio::Poll>,
    events: RefCell<mio::Events>,
    pub(super) slots: RefCell<Slab<IoSlot>>,
    /// Contexts parked on I/O readiness or on a ring operation (they can be
    /// woken by the kernel).
    pub(super) waiters: Cell<usize>,
    /// Slots removed so far (wrapping): a readiness wait woken while it
    /// did not change finds its slot without looking (see `wait_slot`).
    pub(super) removals: Cell<u64>,
    /// The fork generation the epoll instance was made in: a forked child's
    /// copy shares the instance with the parent and never touches it.
    generation: u64,
    /// The io_uring backend, when chosen and available; `None`: epoll.
    pub(crate) ring: Option<super::uring::Ring>,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = mio::Poll::new()?;
        let ring = match super::backend::chosen() {
            super::Backend::Epoll => None,
            super::Backend::Uring => {
                use std::os::fd::AsRawFd;
                match super::uring::Ring::new(poll.as_raw_fd()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        super::backend::fell_back(&e);
                        None
                    }
                }
            }
        };
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(1024)),
            slots: RefCell::new(Slab::new()),
            waiters: Cell::new(0),
            removals: Cell::new(0),
            generation: crate::sys::atfork::generation(),
            ring,
        })
    }

    /// An eventfd in this epoll set that makes `poll` return.
    pub(crate) fn new_waker(&self) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.borrow().registry(), WAKER_TOKEN)
    }

    /// Whether any fd is registered or a ring operation is in flight
    /// (otherwise a zero-timeout poll is pointless).
    pub(crate) fn has_registrations(&self) -> bool {
        !self.slots.borrow().is_empty() || self.ring.as_ref().is_some_and(|r| r.busy())
    }

    /// Whether a context is parked on I/O (the kernel may wake the hub).
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.get() > 0
    }

    /// Whether this reactor's epoll instance is the parent's, inherited by
    /// a forked child (see the hub's `fork.rs`).
    fn inherited(&self) -> bool {
        self.generation != crate::sys::atfork::generation()
    }

    /// Waits up to `timeout` (`None`: until an event) in `epoll_wait` and
    /// wakes every waiter of `hub` an event concerns. In a forked child,
    /// on the parent's instance, ends the child instead (it would take the
    /// parent's events).
    ///
    /// # Panics
    /// If `epoll_wait` fails with anything but `EINTR` (a broken epoll fd:
    /// the hub cannot work any more).
    pub(crate) fn poll(&self, hub: &Hub, timeout: Option<Duration>) {
        if self.inherited() {
            crate::hub::left_in_child(b"poll its epoll instance");
        }
        if let Some(ring) = &self.ring {
            // One io_uring_enter; the epoll set only when its fd polled
            // readable (see `uring.rs`).
            if ring.poll(timeout, |t| {
                hub.wake(t, Wakeup::Notified);
            }) {
                self.poll_epoll(hub, Some(Duration::ZERO));
            }
            return;
        }
        self.poll_epoll(hub, timeout)
    }

    /// `poll` on the epoll set itself.
    fn poll_epoll(&self, hub: &Hub, timeout: Option<Duration>) {
        let mut events = self.events.borrow_mut();
        if let Err(e) = self.poll.borrow_mut().poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            panic!("moss: epoll_wait failed: {e}");
        }
        // The waiters are woken in event order with the slots borrowed:
        // a wake only queues them (it runs no code of theirs and touches
        // no slot). It is inlined at both call sites (one call per event
        // saved).
        let mut slots = self.slots.borrow_mut();
        for ev in events.iter() {
            // (The waker's token is no slot's key.)
            let Some(slot) = slots.get_mut(ev.token().0) else {
                continue;
            };
            let err = ev.is_error();
            let read_hup = ev.is_read_closed();
            slot.read_hup = read_hup;
            if ev.is_readable() || read_hup || err {
                slot.readers.on_edge(&mut slot.read_ready, hub);
            }
            if ev.is_writable() || ev.is_write_closed() || err {
                slot.writers.on_edge(&mut slot.write_ready, hub);
            }
        }
    }

    /// Registers `fd` in a new slot tagged `generation`; fails in a forked
    /// child on the parent's epoll instance, whose interest list is the
    /// parent's.
    pub(super) fn register(&self, fd: RawFd, generation: u64) -> io::Result<usize> {
        if self.inherited() {
            return Err(io::Error::other(
                "moss: this hub belongs to the parent of this forked process",
            ));
        }
        let key = self.slots.borrow_mut().insert(IoSlot {
            fd,
            generation,
            readers: Waiters::default(),
            writers: Waiters::default(),
            read_ready: false,
            write_ready: false,
            read_hup: false,
            exclusive: false,
        });
        let interests = mio::Interest::READABLE | mio::Interest::WRITABLE;
        let registry = self.poll.borrow();
        let registry = registry.registry();
        let mut r = registry.register(&mut mio::unix::SourceFd(&fd), mio::Token(key), interests);
        if r.as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST))
            && !self.holds(fd, key)
        {
            // A stale entry: epoll keys entries by (open file, fd number)
            // and drops one only when the open file is released, so an fd
            // closed without `EPOLL_CTL_DEL` while its file stayed open
            // elsewhere (a duplicate, a forked child's copy) leaves its
            // entry behind, and the number, once reused for that file,
            // collides with it. No live slot of this reactor has the fd,
            // so the entry is nobody's: it becomes this slot's (`MOD`).
            r = registry.reregister(&mut mio::unix::SourceFd(&fd), mio::Token(key), interests);
        }
        match r {
            Ok(()) => Ok(key),
            Err(e) => {
                self.slots.borrow_mut().remove(key);
                Err(e)
            }
        }
    }

    /// Whether a live slot other than `except` is registered for `fd`.
    fn holds(&self, fd: RawFd, except: usize) -> bool {
        self.slots
            .borrow()
            .iter()
            .any(|(k, s)| k != except && s.fd == fd)
    }

    /// Removes the slot `key` if it still belongs to `generation`, and
    /// deregisters its fd; returns the waiters to wake.
    pub(super) fn deregister(&self, key: usize, generation: u64) -> Option<Waiters> {
        let slot = {
            let mut slots = self.slots.borrow_mut();
            match slots.get(key) {
                Some(s) if s.generation == generation => slots.remove(key),
                _ => return None,
            }
        };
        self.removals.set(self.removals.get().wrapping_add(1));
        // The fd may be closed already (a racing close): nothing to undo.
        // In a forked child, the instance's interest list is the parent's.
        if !self.inherited() {
            let _ = self
                .poll
                .borrow()
                .registry()
                .deregister(&mut mio::unix::SourceFd(&slot.fd));
        }
        let mut all = slot.readers;
        for t in slot.writers.into_iter() {
            all.push(t);
        }
        Some(all)
    }
}

/// Per-fd readiness state.
pub(super) struct IoSlot {
    fd: RawFd,
    /// Tells a reused slab key from the registration that made it.
    pub(super) generation: u64,
    pub(super) readers: Waiters,
    pub(super) writers: Waiters,
    pub(super) read_ready: bool,
    pub(super) write_ready: bool,
    /// The latest event reported the read side closed (peer hang-up, reset).
    /// A level, not an edge: `wait(Readable)` returns at once while it is
    /// set, so a reader that skips a syscall on a hint (a short read drained
    /// the queue) still sees an EOF that arrived together with its data.
    pub(super) read_hup: bool,
    /// Its owner allows waits through its [`RegId`](super::RegId) alone
    /// (see [`Registration::set_exclusive`](super::Registration::set_exclusive)).
    pub(super) exclusive: bool,
}

/// The contexts parked on one direction of an fd. Almost always zero or
/// one, which costs no allocation.
#[derive(Default)]
pub(super) struct Waiters {
    first: Option<Token>,
    rest: Vec<Token>,
}

impl Waiters {
    /// Records an edge in their direction: wakes them all, taking them
    /// off the list; with no waiter, sets the direction's ready bit.
    #[inline(always)]
    fn on_edge(&mut self, ready: &mut bool, hub: &Hub) {
        // Tested before it is taken: most edges find no waiter (every
        // event of a socket reports it writable), and the token is not
        // even loaded then.
        if self.first.is_none() {
            *ready = true;
            return;
        }
        if let Some(t) = self.first.take() {
            hub.wake_inline(t, Wakeup::Notified);
            if !self.rest.is_empty() {
                self.wake_rest(hub);
            }
        }
    }

    #[cold]
    fn wake_rest(&mut self, hub: &Hub) {
        for t in std::mem::take(&mut self.rest) {
            hub.wake(t, Wakeup::Notified);
        }
    }

    #[inline(always)]
    pub(super) fn push(&mut self, t: Token) {
        if self.first.is_none() {
            self.first = Some(t);
        } else {
            self.rest.push(t);
        }
    }

    /// No context waits (`first` is only empty with `rest`).
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Removes the entry of `t`'s context if present (a timed out or
    /// cancelled waiter), whatever park it was made for: a context is in
    /// one park at a time, and the entry of a park leaves the list when the
    /// park ends (here, or taken by an edge), so the list holds no other.
    /// Returns whether it was there.
    #[inline]
    pub(super) fn remove(&mut self, t: Token) -> bool {
        let ours = |x: &Token| x.key == t.key && x.id == t.id;
        if self.first.as_ref().is_some_and(ours) {
            self.first = if self.rest.is_empty() {
                None
            } else {
                Some(self.rest.remove(0))
            };
            true
        } else {
            let n = self.rest.len();
            self.rest.retain(|x| !ours(x));
            self.rest.len() != n
        }
    }

    pub(super) fn into_iter(self) -> impl Iterator<Item = Token> {
        self.first.into_iter().chain(self.rest)
    }
}
