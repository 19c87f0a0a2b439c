//! The hub's timers: an ordered map from `(deadline, sequence)` to an action.
//!
//! A B-tree gives O(log n) insert, O(log n) cancel and O(1) access to the
//! earliest deadline, with no garbage left behind by cancelled timers (a read
//! with a 30 s timeout that completes in 1 ms removes its entry at once, so a
//! busy server does not accumulate millions of dead entries). One million
//! pending timers cost about 40 MB.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::task::Token;

/// What happens when a timer fires.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action {
    /// End a timed park of `token` with `Wakeup::TimedOut`.
    Wake(Token),
    /// Deliver the cancellation of the `timeout` scope `scope` to `token`.
    Timeout(Token, u64),
    /// Start a coroutine created by `spawn_later`.
    Start(Token),
}

/// Identifies a pending timer so it can be cancelled.
pub(crate) type TimerKey = (Instant, u64);

#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<TimerKey, Action>,
    seq: u64,
}

impl Timers {
    pub(crate) fn insert(&mut self, deadline: Instant, action: Action) -> TimerKey {
        self.seq += 1;
        let key = (deadline, self.seq);
        self.map.insert(key, action);
        key
    }

    pub(crate) fn cancel(&mut self, key: TimerKey) {
        self.map.remove(&key);
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Action> {
        let entry = self.map.first_entry()?;
        if entry.key().0 <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
