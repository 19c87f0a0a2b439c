//! Polling with growing naps, for waits that have nothing to park on.
//!
//! A blocking moss call normally parks on something that wakes it: an fd
//! registered with the hub, or an unparker a primitive keeps. A few waits
//! have nothing of the kind: a child process on a kernel without pidfds,
//! and any wait that needs a fresh fd (a pidfd, a duplicate, a temporary
//! epoll instance) when the process is at its `RLIMIT_NOFILE` (`EMFILE`)
//! or the hub refuses the fd. Blocking the thread there would freeze every
//! other coroutine of the hub, so such a wait polls its condition instead
//! and naps on a hub timer in between, the first nap 1 ms, each next one
//! twice as long, up to 50 ms:
//!
//! ```text
//! check ─ready─▶ done
//!   │not yet
//!   ▼
//! deadline passed? ─yes─▶ timed out (after that last check)
//!   │no
//!   ▼
//! nap min(current nap, time to the deadline); nap = min(2 × nap, 50 ms) ─▶ check
//! ```
//!
//! The price: the condition is noticed up to one nap late (50 ms at most,
//! once the wait is long), and a long wait costs one timer and one check
//! every 50 ms. On a thread without a hub (nothing else could run there)
//! the naps are plain thread sleeps, so no hub (which needs an fd of its
//! own) is created for them.

use std::io;
use std::time::{Duration, Instant};

use crate::hub::Hub;
use crate::park::{self, Wakeup};
use crate::reactor::WaitError;

/// The nap schedule of one polling wait: 1 ms, doubling up to 50 ms (see
/// the [module docs](self)).
///
/// ```
/// use std::time::{Duration, Instant};
/// use moss_runtime::backoff::Backoff;
///
/// let start = Instant::now();
/// let mut naps = Backoff::new();
/// while start.elapsed() < Duration::from_millis(20) {
///     naps.sleep(None)?; // other coroutines of this thread run meanwhile
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    nap: Duration,
}

impl Backoff {
    /// The first nap.
    pub const FIRST: Duration = Duration::from_millis(1);
    /// The longest nap.
    pub const MAX: Duration = Duration::from_millis(50);

    /// A schedule whose next nap is [`FIRST`](Self::FIRST).
    pub const fn new() -> Backoff {
        Backoff { nap: Self::FIRST }
    }

    /// Whether no nap was taken yet.
    pub fn is_fresh(&self) -> bool {
        self.nap == Self::FIRST
    }

    /// When the next nap ends: now plus the current nap, no later than
    /// `deadline`. The nap after it is twice as long (up to
    /// [`MAX`](Self::MAX)). For callers that park in their own way.
    pub fn next_wake(&mut self, deadline: Option<Instant>) -> Instant {
        let now = Instant::now();
        let end = now.checked_add(self.nap).unwrap_or(now);
        self.nap = (self.nap * 2).min(Self::MAX);
        deadline.map_or(end, |d| d.min(end))
    }

    /// Naps once: parks the calling context (a coroutine suspends, a root
    /// runs its hub) until the nap ends, at most until `deadline`. Never
    /// unwinds: [`Wakeup::Cancelled`] (at once) if a cancellation is
    /// pending, otherwise the caller re-checks whatever it returns.
    pub fn nap(&mut self, deadline: Option<Instant>, what: &'static str) -> Wakeup {
        let end = self.next_wake(deadline);
        if !park::hub_exists() {
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            return Wakeup::TimedOut;
        }
        park::park(Some(end), what)
    }

    /// [`nap`](Self::nap) as a blocking call that can fail, like moss I/O:
    /// a `kill` or `timeout` of the calling coroutine unwinds it, and while
    /// it is unwinding already (a destructor that waits), where a second
    /// unwind is not allowed, the nap fails with that cancellation as an
    /// error instead.
    pub fn sleep(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        match self.nap(deadline, "sleep") {
            Wakeup::Cancelled => {
                crate::cancel::deliver_or_fail(Hub::current());
                Err(io::Error::other(WaitError::Cancelled))
            }
            _ => Ok(()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// How [`poll_until`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled<T> {
    /// `check` returned `Some`.
    Ready(T),
    /// The deadline passed (and one last check found nothing).
    TimedOut,
    /// A cancellation (`kill`, `timeout`) is pending; it was not delivered.
    Cancelled,
}

/// Calls `check` until it returns `Some`, napping on the [`Backoff`]
/// schedule in between, until `deadline`. Never unwinds (for callers that
/// must clean up first or cannot unwind, such as C hooks).
///
/// ```
/// use std::time::{Duration, Instant};
/// use moss_runtime::backoff::{Polled, poll_until};
///
/// let at = Instant::now() + Duration::from_millis(5);
/// let r = poll_until(None, "example", || (Instant::now() >= at).then_some(7));
/// assert_eq!(r, Polled::Ready(7));
/// let r = poll_until(Some(at), "example", || None::<()>);
/// assert_eq!(r, Polled::TimedOut);
/// ```
pub fn poll_until<T>(
    deadline: Option<Instant>,
    what: &'static str,
    mut check: impl FnMut() -> Option<T>,
) -> Polled<T> {
    let mut naps = Backoff::new();
    loop {
        if let Some(v) = check() {
            return Polled::Ready(v);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Polled::TimedOut;
        }
        if naps.nap(deadline, what) == Wakeup::Cancelled {
            return Polled::Cancelled;
        }
    }
}
