//! Cancellation: how `kill` and `timeout` reach a coroutine.
//!
//! A cancellation is *requested* by setting the target's pending cancel
//! (`Header::cancel`) and, if the target is parked, waking it with
//! `Wakeup::Cancelled`. It is *delivered* when the target is at a blocking
//! point (a park, a `yield_now`): the pending value is taken and the target
//! unwinds with a [`Cancelled`] payload (via `resume_unwind`, so the panic
//! hook stays silent), running its destructors.
//!
//! * Delivered once: the pending value is consumed on delivery; a second
//!   `kill` of a coroutine already killed only waits for it to die. So a
//!   destructor that blocks during the unwind blocks normally.
//! * A kill takes precedence over a pending timeout.
//! * A coroutine killed before it first ran never runs (its closure is
//!   dropped on the killer's stack).
//! * `timeout(d, f)` catches only its own scope's payload (scopes are
//!   numbered), so nested timeouts work in either order, and a kill passes
//!   through every `timeout`.
//! * Code that cannot unwind (an `extern "C"` hook) uses the raw park, sees
//!   `Wakeup::Cancelled`, fails its call, and the cancellation is delivered at
//!   the coroutine's next moss blocking point. If the coroutine ends before
//!   reaching one, a kill it observed that way still makes `join` report
//!   `is_killed()` (and a `timeout` reports `Elapsed`).

/// A pending cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    Kill,
    /// The `timeout` scope with this number expired.
    Timeout(u64),
}

/// The unwinding payload of a delivered cancellation.
///
/// User code that catches panics may see it; it should resume the unwind.
#[derive(Debug)]
pub struct Cancelled(pub(crate) Cancel);
