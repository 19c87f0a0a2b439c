//! Unix signals for coroutines: wait for one, or run a handler coroutine on
//! each delivery (gevent's `gevent.signal_handler`).
//!
//! ```
//! use moss::signal;
//! use std::time::Duration;
//!
//! let waiter = moss::spawn(|| signal::wait(&[signal::SIGUSR2]).unwrap());
//! moss::sleep(Duration::from_millis(10)); // let it start waiting
//! // SAFETY: sending a signal to this process; moss catches it.
//! unsafe { libc::kill(libc::getpid(), signal::SIGUSR2) };
//! assert_eq!(waiter.join().unwrap(), signal::SIGUSR2);
//! ```
//!
//! # Semantics
//!
//! * [`wait`] parks the caller until one of the signals arrives and returns
//!   its number. Every waiter that is waiting when a signal arrives
//!   returns, on every thread. The first `wait` for a signal installs
//!   moss's catcher for it *for the rest of the process* (like Go's
//!   `signal.Notify`, or `sigwait` with the signal blocked): a delivery
//!   while no coroutine of a thread waits stays pending for that thread,
//!   and its next `wait` returns at once. Repeated deliveries are coalesced.
//! * [`handler`] runs `f` in a new coroutine on the calling thread's hub for
//!   each delivery (deliveries that arrive together may be coalesced into
//!   one run; none is lost). Dropping the [`SignalHandler`], or
//!   [`SignalHandler::cancel`], stops it; when the last moss user of the
//!   signal goes, the disposition that was there before is restored
//!   (unless a `wait` made the catcher permanent). Handlers on several
//!   threads all run.
//! * Bad signal numbers fail with [`io::ErrorKind::InvalidInput`]: 0,
//!   negative or above 64, `SIGKILL` and `SIGSTOP` (cannot be caught),
//!   `SIGSEGV`, `SIGBUS`, `SIGILL` and `SIGFPE` (synchronous faults: moss's
//!   stack-overflow report uses the first two, and a handler that returns
//!   from a fault re-runs the faulting instruction), and 32, 33 (reserved by
//!   the C library's threads).
//! * `f` runs when the handler's hub runs: whenever a coroutine of that
//!   thread, or its root, blocks in a moss call. A thread that installs a
//!   handler and then blocks outside moss (an unpatched `std` call) runs it
//!   only afterwards.
//! * A handler's dispatcher is a background coroutine of its thread
//!   ([`Builder::background`](moss_runtime::Builder::background)): like
//!   gevent's signal watchers, it does not keep
//!   [`moss::run`](moss_runtime::run) or [`moss::wait`](moss_runtime::wait)
//!   waiting. The runs of `f` it starts are ordinary coroutines, which
//!   they do wait for.
//!
//! # How
//!
//! moss installs its own catcher with `sigaction` (`SA_RESTART`: other
//! code's interrupted syscalls restart as before). The catcher counts the
//! delivery and writes to one eventfd per waiting hub; waiters park on that
//! eventfd through their hub and compare the counts. This self-pipe design
//! works whatever thread the kernel picks and needs no signal masks, which
//! `signalfd` would: with `signalfd`, every thread of the process (the
//! user's, the test harness's) must block the signal, or the kernel
//! delivers it to a thread that does not block it with the default action,
//! and children inherit the mask. The `signal-hook` crate follows the same
//! self-pipe design, but it keeps its handler installed when the last
//! action is removed, where moss restores the previous disposition.
//!
//! A forked child (`moss::pool::Process`) starts without the parent's
//! handlers: a signal there gets the disposition that was in force before
//! moss's catcher (so `ProcessHandle::terminate` still ends it), until the
//! child installs handlers or waits of its own.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss_runtime::reactor::{self, Interest, Registration};

mod catcher;

use catcher::NSIG;

/// `SIGHUP` (1): terminal hang-up; services often reload on it.
pub const SIGHUP: i32 = libc::SIGHUP;
/// `SIGINT` (2): Ctrl-C.
pub const SIGINT: i32 = libc::SIGINT;
/// `SIGQUIT` (3).
pub const SIGQUIT: i32 = libc::SIGQUIT;
/// `SIGUSR1` (10).
pub const SIGUSR1: i32 = libc::SIGUSR1;
/// `SIGUSR2` (12).
pub const SIGUSR2: i32 = libc::SIGUSR2;
/// `SIGPIPE` (13).
pub const SIGPIPE: i32 = libc::SIGPIPE;
/// `SIGALRM` (14).
pub const SIGALRM: i32 = libc::SIGALRM;
/// `SIGTERM` (15): the polite request to stop.
pub const SIGTERM: i32 = libc::SIGTERM;
/// `SIGCHLD` (17).
pub const SIGCHLD: i32 = libc::SIGCHLD;
/// `SIGWINCH` (28).
pub const SIGWINCH: i32 = libc::SIGWINCH;

/// Validates a signal number (see the module docs).
fn check(sig: i32) -> io::Result<usize> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {sig}: {why}"),
        ))
    };
    match sig {
        s if s <= 0 || s as usize >= NSIG => bad("not a signal number (1 to 64)"),
        libc::SIGKILL | libc::SIGSTOP => bad("SIGKILL and SIGSTOP cannot be caught"),
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE => bad(
            "a synchronous fault signal cannot be handled by moss (SIGSEGV and SIGBUS report stack overflows)",
        ),
        s if s < libc::SIGRTMIN() && s > libc::SIGSYS => bad("reserved by the C library's threads"),
        s => Ok(s as usize),
    }
}

thread_local! {
    /// This thread's registration of its bell (for the owner pid and hub
    /// it was made for).
    static REG: RefCell<Option<(i32, u64, Rc<Registration>)>> = const { RefCell::new(None) };
    /// Per signal, the count this thread's waits have seen (for the owner
    /// pid in the first field); `None` until its first `wait`.
    static SEEN: RefCell<(i32, [Option<u64>; NSIG])> = const { RefCell::new((0, [None; NSIG])) };
}

/// This thread's bell, registered with its hub.
fn registration() -> io::Result<Rc<Registration>> {
    let bell = catcher::thread_bell()?;
    let owner = catcher::owner();
    let hub = reactor::hub_id();
    REG.with(|r| {
        let mut r = r.borrow_mut();
        if let Some((o, h, reg)) = r.as_ref()
            && *o == owner
            && *h == hub
        {
            return Ok(reg.clone());
        }
        // A registration of another hub (a forked child's fresh hub) or of
        // the parent's bell: dropping it leaves that hub alone.
        r.take();
        let reg = Rc::new(Registration::new(bell.fd())?);
        *r = Some((owner, hub, reg.clone()));
        Ok(reg)
    })
}

/// Parks until one of `signals` arrives and returns its number. A signal
/// that arrived since this thread's previous `wait` for it returns at once.
/// See the [module docs](self) for the semantics; a `kill` or `timeout` of
/// the caller unwinds it as usual.
///
/// # Errors
/// `InvalidInput` for an empty list or a signal moss cannot handle.
pub fn wait(signals: &[i32]) -> io::Result<i32> {
    match wait_until(signals, None)? {
        Some(s) => Ok(s),
        None => unreachable!("a wait without deadline cannot time out"),
    }
}

/// Like [`wait`], giving up after `d` with `Ok(None)`.
pub fn wait_timeout(signals: &[i32], d: Duration) -> io::Result<Option<i32>> {
    wait_until(signals, Instant::now().checked_add(d))
}

fn wait_until(signals: &[i32], deadline: Option<Instant>) -> io::Result<Option<i32>> {
    if signals.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "signal::wait: no signal given",
        ));
    }
    let sigs = signals
        .iter()
        .map(|&s| check(s))
        .collect::<io::Result<Vec<_>>>()?;
    // The baseline is read before the catcher is installed: a delivery
    // caught in between is seen, not lost.
    let before: Vec<u64> = sigs.iter().map(|&s| catcher::count(s)).collect();
    for &s in &sigs {
        catcher::make_sticky(s)?;
    }
    let reg = registration()?;
    let owner = catcher::owner();
    let start: Vec<u64> = SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.0 != owner {
            *seen = (owner, [None; NSIG]);
        }
        sigs.iter()
            .zip(&before)
            .map(|(&s, &b)| *seen.1[s].get_or_insert(b))
            .collect()
    });
    loop {
        for (&s, &from) in sigs.iter().zip(&start) {
            let now = catcher::count(s);
            if now > from {
                SEEN.with(|seen| {
                    let mut seen = seen.borrow_mut();
                    let v = seen.1[s].get_or_insert(now);
                    *v = (*v).max(now);
                });
                return Ok(Some(s as i32));
            }
        }
        match reg.wait(Interest::Readable, deadline) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// gevent's `signal_handler`: runs `f` in a new coroutine on the calling
/// thread's hub for each delivery of `signal`, until the returned
/// [`SignalHandler`] is dropped or cancelled.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use moss::signal;
///
/// let hits = Rc::new(Cell::new(0));
/// let h = hits.clone();
/// let handler = signal::handler(signal::SIGUSR1, move || h.set(h.get() + 1)).unwrap();
/// // SAFETY: sending a signal to this process; moss catches it.
/// unsafe { libc::kill(libc::getpid(), signal::SIGUSR1) };
/// while hits.get() == 0 {
///     moss::sleep(std::time::Duration::from_millis(1));
/// }
/// drop(handler); // the previous disposition is back
/// ```
///
/// # Errors
/// `InvalidInput` for a signal moss cannot handle; the OS error if the
/// catcher or the hub's eventfd cannot be set up.
pub fn handler(signal: i32, f: impl Fn() + 'static) -> io::Result<SignalHandler> {
    let s = check(signal)?;
    let reg = registration()?;
    let start = catcher::count(s);
    catcher::add_user(s)?;
    let owner = catcher::owner();
    let f = Rc::new(f);
    let dispatcher = moss_runtime::Builder::new()
        .name(format!("signal {signal} handler"))
        .background(true)
        .spawn(move || {
            let mut seen = start;
            loop {
                let now = catcher::count(s);
                if now > seen {
                    seen = now;
                    let f = f.clone();
                    moss_runtime::spawn(move || f());
                } else if reg.wait(Interest::Readable, None).is_err() {
                    return;
                }
            }
        });
    match dispatcher {
        Ok(h) => Ok(SignalHandler {
            signal,
            owner,
            dispatcher: RefCell::new(Some(h)),
        }),
        Err(e) => {
            catcher::remove_user(s, owner);
            Err(e)
        }
    }
}

/// A live [`handler`]: dropping it (or [`cancel`](Self::cancel)) stops the
/// handler and, if it was the last moss user of the signal, restores the
/// disposition that was in force before. Tied to its thread (`!Send`).
///
/// A signal sent before the drop never meets the restored disposition,
/// even if no thread has taken it yet when the handler goes (a `kill` to
/// the process returns before the signal is delivered): moss absorbs it.
/// That matters when the old disposition is the default action, which for
/// most signals ends the process. A signal sent after the drop gets the
/// restored disposition.
pub struct SignalHandler {
    signal: i32,
    /// The process that installed it (a forked child must not uninstall
    /// the parent's catcher).
    owner: i32,
    dispatcher: RefCell<Option<moss_runtime::JoinHandle<()>>>,
}

impl SignalHandler {
    /// The signal it handles.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// Stops the handler: no new run of `f` starts (runs already started
    /// finish), and the previous disposition is restored if this was the
    /// last moss user of the signal. Idempotent.
    pub fn cancel(&self) {
        let Some(h) = self.dispatcher.borrow_mut().take() else {
            return;
        };
        if moss_runtime::park::hub_exists() {
            h.kill();
        }
        catcher::remove_user(self.signal as usize, self.owner);
    }

    /// Whether it is still active.
    pub fn is_active(&self) -> bool {
        self.dispatcher.borrow().is_some()
    }
}

impl Drop for SignalHandler {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for SignalHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandler")
            .field("signal", &self.signal)
            .field("active", &self.is_active())
            .finish()
    }
}
