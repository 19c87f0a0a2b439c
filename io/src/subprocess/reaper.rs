//! The background reaper: waits for children whose [`Child`](super::Child)
//! was dropped before they were reaped, and reaps them, so they do not stay
//! zombies until the parent exits.
//!
//! One thread per process ("moss-reaper"), started on the first orphan. It
//! runs a moss hub: its root receives orphans on a channel and spawns a
//! coroutine per orphan, which parks on the child's pidfd (or polls
//! `waitpid` with a growing sleep without pidfds) and reaps it.
//!
//! Fork: the thread does not exist in a forked child, so the handle records
//! the fork generation it was started in, and a child that orphans a
//! process of its own starts its own reaper. The inherited handle is leaked,
//! never used (its channel's lock may be held by the parent's reaper).

use moss_runtime::backoff::Backoff;
use moss_runtime::reactor::{self, Interest};
use moss_runtime::sync::{Receiver, Sender, channel};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, Ordering};

struct Orphan {
    child: std::process::Child,
    pidfd: Option<OwnedFd>,
}

struct Reaper {
    generation: u64,
    tx: Sender<Orphan>,
}

/// # Invariants
/// Null or a `Box<Reaper>` that is never freed.
static REAPER: AtomicPtr<Reaper> = AtomicPtr::new(std::ptr::null_mut());

/// Reaps `child` once it exits, in the background.
pub(super) fn adopt(child: std::process::Child, pidfd: Option<OwnedFd>) {
    if let Some(r) = reaper() {
        // Fails only if the reaper thread is gone; then the zombie stays,
        // as it would with std.
        let _ = r.tx.send(Orphan { child, pidfd });
    }
}

fn reaper() -> Option<&'static Reaper> {
    let generation = reactor::fork_generation();
    let p = REAPER.load(Ordering::Acquire);
    // SAFETY: per the invariants, a non-null `p` is a live, leaked reaper.
    if let Some(r) = unsafe { p.as_ref() }
        && r.generation == generation
    {
        return Some(r);
    }
    let (tx, rx) = channel();
    let fresh = Box::into_raw(Box::new(Reaper { generation, tx }));
    match REAPER.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            let started = std::thread::Builder::new()
                .name("moss-reaper".into())
                .spawn(move || serve(rx));
            // SAFETY: just published and never freed.
            started.ok().map(|_| unsafe { &*fresh })
        }
        Err(winner) => {
            // SAFETY: `fresh` was never published; we own it.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: a published reaper, never freed.
            unsafe { winner.as_ref() }
        }
    }
}

fn serve(rx: Receiver<Orphan>) {
    while let Ok(o) = rx.recv() {
        moss_runtime::spawn(move || reap(o));
    }
}

fn reap(mut o: Orphan) {
    let mut naps = Backoff::new();
    loop {
        match o.child.try_wait() {
            Ok(None) => {}
            // Reaped, or someone else reaped it (ECHILD): done either way.
            _ => return,
        }
        match o.pidfd.take() {
            // Readable means exited: should it still run after that (or
            // the wait fail), poll from then on rather than spin.
            Some(fd) => {
                let _ = reactor::wait_fd(fd.as_raw_fd(), Interest::Readable, None);
            }
            None => {
                let _ = naps.sleep(None);
            }
        }
    }
}
