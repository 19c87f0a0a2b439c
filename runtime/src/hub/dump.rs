//! `moss::dump`: a diagnostic listing of a hub's coroutines.

use std::fmt::Write;
use std::time::Instant;

use super::Hub;
use crate::task::{Header, State};

impl Hub {
    /// One line per context (the root first): id, name, state (what it
    /// waits on and for how long), and where it was spawned.
    pub(crate) fn dump(&self) -> String {
        let now = Instant::now();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "hub {}: {} coroutines",
            self.remote.hub_id,
            self.live_tasks()
        );
        describe(&self.root.0, now, &mut out);
        for (_, t) in self.tasks.borrow().iter() {
            describe(t.header(), now, &mut out);
        }
        out
    }
}

fn describe(h: &Header, now: Instant, out: &mut String) {
    let state = match h.state.get() {
        State::New if h.timer.get().is_some() => "not started (spawn_later)".to_owned(),
        State::New => "not started".to_owned(),
        State::Ready => "ready".to_owned(),
        State::Running => "running".to_owned(),
        State::Done => "done".to_owned(),
        State::Parked => match h.timer.get().map(|k| k.0) {
            Some(d) => format!(
                "waiting on {} ({:.3}s left)",
                h.waiting_on.get(),
                d.saturating_duration_since(now).as_secs_f64()
            ),
            None => format!("waiting on {}", h.waiting_on.get()),
        },
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
