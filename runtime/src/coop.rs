//! Fairness: a budget of operations that did not park (tokio's coop budget).
//!
//! A coroutine that keeps finding its I/O ready, its queue non-empty or
//! its lock free never parks, so without help it would keep its hub: the
//! other coroutines, the timers and the I/O of that thread would wait for
//! it. So every blocking moss call that completes *without parking*
//! ([`proceed`]: a socket read or write that went through at once, an
//! accept, a readiness wait that found the fd ready, a `Queue::get` that
//! found an item, an uncontended `Mutex::lock`, ...) spends one unit of the
//! hub's budget:
//!
//! ```text
//!   switch into a context ──▶ budget = BUDGET
//!   proceed()            ──▶ budget > 0 ? budget -= 1
//!                            : budget = BUDGET, and if another context
//!                              is ready or the hub has not polled for
//!                              POLL_EVERY (250 µs): yield to the back of
//!                              the run queue; when the poll is due, the
//!                              hub polls I/O and fires timers before it
//!                              resumes anyone
//! ```
//!
//! A park or yield ends the run, so the next switch-in starts a full
//! budget: only *consecutive* operations that did not park count. The
//! forced yield happens at the start of a call, before it has any effect
//! (no data read and lost, no item taken), so it is a cancellation point
//! like any blocking point: a `kill` that arrived while the flooding
//! coroutine waited for its turn unwinds it there. It is skipped where no
//! switch is possible (in the hub loop itself, in a greenlet driven by a
//! coroutine) and on a root whose hub has no coroutine to be fair to.
//! Non-blocking calls (`try_lock`, `get_nowait`, `try_recv`, a socket in
//! non-blocking mode) never yield.
//!
//! [`BUDGET`] was chosen by measurement: see its docs.

use crate::hub::Hub;

/// Operations without a park before a forced yield.
///
/// Chosen by measurement (`cargo bench --bench coop` run under callgrind
/// for instruction counts, x86_64): an echo connection parks once per
/// message on each side, so the budget never runs out there and what
/// remains is the decrement: about 44 instructions more per 64-byte round
/// trip between two coroutines of one hub (2,429 against 2,385 without the
/// budget, before the four syscalls, which cost microseconds), 11 more per
/// uncontended `Mutex::lock`, 16 per `Queue::put` or `get`. A spent budget
/// checks the clock (and switches if another coroutine is ready):
/// amortised over the budget that is 14 instructions per queue operation
/// at 16, 2 at 128, under 1 at 512. A reader that always finds data (at
/// ~0.5–2 µs per read) lets the hub poll every 250 µs, so its hub's timers
/// and other connections wait about that plus a budget's worth of reads.
pub const BUDGET: u32 = 128;

/// How often a spent budget makes the hub poll I/O and fire timers (an
/// `epoll_wait` syscall: doing it at every spent budget would add one per
/// ~10 µs of cheap operations); other ready coroutines get their turn at
/// every spent budget.
pub(crate) const POLL_EVERY: std::time::Duration = std::time::Duration::from_micros(250);

/// Spends one unit of the running context's budget at the start of a
/// blocking call (before it has any effect); once [`BUDGET`] calls in a row
/// did not park, the caller yields first (see the module docs), and a
/// `kill` or `timeout` that arrived meanwhile unwinds it from here, as from
/// any blocking point. For I/O types and primitives built outside moss.
/// Cheap (a thread-local load and a decrement); does nothing on a thread
/// without a hub.
#[inline]
pub fn proceed() {
    if let Some(hub) = Hub::try_current()
        && hub.spend_budget()
    {
        crate::cancel::check(hub, hub.current_header());
    }
}

/// What [`proceed_raw`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proceed {
    /// Spent a unit; no switch.
    Go,
    /// The budget was gone: the caller yielded (other coroutines ran, so
    /// thread-local state such as `errno` may have changed).
    Yielded,
    /// The caller yielded and a cancellation is pending: fail the call as
    /// when a park reports `Cancelled` (it stays pending, marked seen, for
    /// the next moss blocking point).
    Cancelled,
}

/// [`proceed`] for code that cannot unwind (C ABI hooks).
#[inline]
pub fn proceed_raw() -> Proceed {
    let Some(hub) = Hub::try_current() else {
        return Proceed::Go;
    };
    if !hub.spend_budget() {
        return Proceed::Go;
    }
    let h = hub.current_header();
    if h.state.cancel_pending() {
        h.state.mark_seen();
        return Proceed::Cancelled;
    }
    Proceed::Yielded
}
