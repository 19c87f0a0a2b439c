//! gevent's `Greenlet` result API on [`JoinHandle`]: `link` (and
//! `link_value`, `link_exception`), `successful()`,
//! `kill(block=False)` and `kill(timeout=...)`.
//!
//! | gevent                        | moss                      |
//! |-------------------------------|---------------------------|
//! | `g.link(callback)`            | [`JoinHandle::link`]      |
//! | `g.link_value(callback)`      | [`JoinHandle::link_value`] |
//! | `g.link_exception(callback)`  | [`JoinHandle::link_exception`] |
//! | `g.successful()`              | [`JoinHandle::is_successful`] |
//! | `g.kill(block=False)`         | [`JoinHandle::kill_nowait`] |
//! | `g.kill(timeout=t)`           | [`JoinHandle::kill_timeout`] |
//! | `gevent.joinall(..., timeout, raise_error, count)` | [`JoinAll`](crate::JoinAll) |
//!
//! Where a link callback runs is decided by the task (see the "Links"
//! section of its control block's docs): in the finishing coroutine, after
//! its body and before its joiners wake; in a coroutine of its own for a
//! coroutine that never ran; at once for a coroutine that has finished.

use std::time::{Duration, Instant};

use crate::coroutine::JoinHandle;
use crate::task::JoinError;

impl<T: 'static> JoinHandle<T> {
    /// Calls `f` with a reference to the coroutine's result when it finishes
    /// (gevent's `Greenlet.link`): `Ok(value)`, or the [`JoinError`] a
    /// [`join`](Self::join) would return. Callbacks run in the order they
    /// were linked, on this thread:
    ///
    /// * normally in the finishing coroutine itself, after its body has
    ///   returned and before its joiners wake, so a `join` after `link`
    ///   returns once the callbacks have run. A callback may block (it
    ///   parks that coroutine), and a `kill` of the coroutine meanwhile
    ///   ends the blocked callback (the result stays what the body made);
    /// * if the coroutine never ran (killed before its start), in a new
    ///   coroutine named "link", soon after the kill;
    /// * if the coroutine has already finished, at once, before `link`
    ///   returns (a `kill` or `timeout` of the caller that reaches a blocked
    ///   callback unwinds the caller, as usual).
    ///
    /// A callback that panics never takes down the hub: the panic is
    /// caught (the panic hook reports it) and the other callbacks and the
    /// result are unaffected. Dropping the handle does not unlink.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// let seen = Rc::new(Cell::new(0));
    /// let h = moss::spawn(|| 6 * 7);
    /// let s = seen.clone();
    /// h.link(move |r| s.set(*r.as_ref().unwrap()));
    /// assert_eq!(h.join().unwrap(), 42);
    /// assert_eq!(seen.get(), 42); // the link ran before join returned
    /// ```
    pub fn link(&self, f: impl FnOnce(&Result<T, JoinError>) + 'static) {
        self.slot().link(Box::new(f));
    }

    /// [`link`](Self::link) for a coroutine that returns a value (gevent's
    /// `link_value`): `f` gets the value; it is not called if the coroutine
    /// panics or is killed. Runs where and when `link`'s callbacks run.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// let got = Rc::new(Cell::new(0));
    /// let h = moss::spawn(|| 7);
    /// let g = got.clone();
    /// h.link_value(move |v| g.set(*v));
    /// h.link_exception(|_| unreachable!("it returned a value"));
    /// h.join().unwrap();
    /// assert_eq!(got.get(), 7);
    /// ```
    pub fn link_value(&self, f: impl FnOnce(&T) + 'static) {
        self.link(move |r| {
            if let Ok(v) = r {
                f(v)
            }
        });
    }

    /// [`link`](Self::link) for a coroutine that fails (gevent's
    /// `link_exception`): `f` gets the [`JoinError`] when it panics or is
    /// killed (gevent counts a `GreenletExit` kill as a value; moss reports
    /// a kill as an error, as `join` does); it is not called if the
    /// coroutine returns a value. Runs where and when `link`'s callbacks
    /// run.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// let why = Rc::new(RefCell::new(String::new()));
    /// let h = moss::spawn(|| -> u32 { panic!("no disk") });
    /// let w = why.clone();
    /// h.link_exception(move |e| *w.borrow_mut() = e.to_string());
    /// assert!(h.join().is_err());
    /// assert!(why.borrow().contains("no disk"));
    /// ```
    pub fn link_exception(&self, f: impl FnOnce(&JoinError) + 'static) {
        self.link(move |r| {
            if let Err(e) = r {
                f(e)
            }
        });
    }

    /// Whether the coroutine has finished with a value (gevent's
    /// `successful()`): false while it runs, and false if it panicked or was
    /// killed (gevent counts a `GreenletExit` kill as successful; moss
    /// reports a kill as an error, as `join` does).
    ///
    /// ```
    /// let ok = moss::spawn(|| 1);
    /// let bad = moss::spawn(|| -> u32 { panic!("boom") });
    /// assert!(!ok.is_successful()); // not started yet
    /// moss::wait();
    /// assert!(ok.is_successful() && !bad.is_successful() && bad.is_finished());
    /// ```
    pub fn is_successful(&self) -> bool {
        self.slot().is_ok() == Some(true)
    }

    /// Requests the kill and returns at once (gevent's `kill(block=False)`):
    /// the coroutine unwinds at its current or next blocking point. One
    /// that has not started is finished at once (it never runs); one that
    /// has finished is left alone. Called on the calling coroutine itself,
    /// the kill is delivered at its next blocking point.
    ///
    /// ```
    /// use std::time::Duration;
    /// let h = moss::spawn(|| moss::sleep(Duration::from_secs(3600)));
    /// moss::yield_now(); // let it start sleeping
    /// h.kill_nowait();
    /// assert!(!h.is_finished()); // it unwinds when it next runs
    /// assert!(h.join().unwrap_err().is_killed());
    /// ```
    pub fn kill_nowait(&self) {
        crate::cancel::kill_nowait(self.header());
    }

    /// Kills the coroutine and waits at most `d` for it to die; returns
    /// whether it has (gevent's `kill(timeout=d)`). A coroutine whose
    /// destructors block longer than `d` is still dying afterwards (the kill
    /// is delivered once; `join` or `kill` wait for the end). On the calling
    /// coroutine itself, unwinds it at once, like [`kill`](Self::kill).
    /// `Duration::ZERO` requests the kill and reports whether it is done.
    ///
    /// ```
    /// use std::time::Duration;
    /// let h = moss::spawn(|| moss::sleep(Duration::from_secs(3600)));
    /// moss::yield_now();
    /// assert!(h.kill_timeout(Duration::from_secs(5)));
    /// assert!(h.is_finished());
    /// ```
    pub fn kill_timeout(&self, d: Duration) -> bool {
        crate::cancel::kill_until(self.header(), Instant::now().checked_add(d))
    }
}
