//! `moss::dump`: a diagnostic listing of a hub's coroutines.
//!
//! How long a context has been waiting is measured on a coarse per-hub
//! [`Clock`]: the hub loop reads the real clock once per turn (after each
//! poll of I/O and timers, that is at least every `BATCH` resumes), and a
//! park copies that reading. A park therefore costs no clock read, and a
//! wait's age is exact to within one turn of the loop (a turn that runs
//! CPU-bound code for a long time makes the waits that began in it look
//! older by up to that long).

use std::cell::Cell;
use std::fmt::Write;
use std::time::{Duration, Instant};

use super::Hub;
use crate::task::{Header, State};

/// Milliseconds since the hub was created, read once per turn of the loop.
/// A `u32` wraps after 49 days; ages are computed with wrapping arithmetic,
/// so only a single wait longer than that is misreported.
pub(crate) struct Clock {
    epoch: Instant,
    now_ms: Cell<u32>,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            now_ms: Cell::new(0),
        }
    }

    fn ms_at(&self, t: Instant) -> u32 {
        // Truncation is the wrap documented above.
        t.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// Reads the real clock: once per turn of the hub loop.
    pub(crate) fn tick(&self) {
        self.now_ms.set(self.ms_at(Instant::now()));
    }

    /// The last reading, for a park that begins now.
    #[inline(always)]
    pub(crate) fn stamp(&self) -> u32 {
        self.now_ms.get()
    }

    /// How long ago `stamp` was taken, as of `now`.
    fn age(&self, stamp: u32, now: Instant) -> Duration {
        Duration::from_millis(u64::from(self.ms_at(now).wrapping_sub(stamp)))
    }
}

impl Hub {
    /// One line per context (the root first): id, name, state (what it
    /// waits on, for how long, and the time left of a timed wait), and where
    /// it was spawned.
    pub(crate) fn dump(&self) -> String {
        let now = Instant::now();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "hub {}: {} coroutines",
            self.remote.hub_id,
            self.live_tasks()
        );
        self.describe(&self.root.0, now, &mut out);
        for (_, t) in self.tasks.borrow().iter() {
            self.describe(t.header(), now, &mut out);
        }
        out
    }

    fn describe(&self, h: &Header, now: Instant, out: &mut String) {
        let state = match h.state.get() {
            State::New if h.timer.get().is_some() => "not started (spawn_later)".to_owned(),
            State::New => "not started".to_owned(),
            State::Ready => "ready".to_owned(),
            State::Running => "running".to_owned(),
            State::Done => "done".to_owned(),
            State::Parked => {
                let waited = self.clock.age(h.parked_at.get(), now).as_secs_f64();
                match h.timer.get().map(|k| k.0) {
                    Some(d) => format!(
                        "waiting on {} for {waited:.3}s ({:.3}s left)",
                        h.waiting_on.get(),
                        d.saturating_duration_since(now).as_secs_f64()
                    ),
                    None => format!("waiting on {} for {waited:.3}s", h.waiting_on.get()),
                }
            }
        };
        // The root was not spawned: its site would be inside the hub.
        let origin = if h.is_root() {
            "the thread's root".to_owned()
        } else {
            format!("spawned at {}", h.spawn_site)
        };
        let _ = writeln!(
            out,
            "#{} {:<12} {:<40} {origin}",
            h.id,
            h.name.as_deref().unwrap_or("-"),
            state,
        );
    }
}
