//! Child processes running a closure: `multiprocessing.Process`.
//!
//! [`Process::start`] forks. The child abandons the hub it inherited (whose
//! coroutines, epoll instance and eventfd belong to the parent) and runs the
//! closure on a fresh hub: the closure (in a coroutine), then every
//! coroutine it spawned. It then leaves with `_exit`: code 0 when the
//! closure returned, [`PANIC_EXIT_CODE`] (101, like a Rust program whose main
//! panicked) when it panicked. No destructor of the parent's objects and no
//! `atexit` handler runs in the child, and std's stdout buffer is not
//! flushed at exit: another thread of the parent may have held its lock at
//! the fork, and then it stays locked in the child. `println!` output is
//! line-buffered, so only a final `print!` without a newline needs an
//! explicit flush in the body. (The parent flushes before forking, so the
//! child never repeats what the parent had buffered.)
//!
//! The arguments of the child are whatever its closure captured: they are
//! copied by `fork`, nothing is serialized. The closure need not be `Send`.
//!
//! # fork's rules
//!
//! Only the thread that called `start` exists in the child. A lock held by
//! any other thread at that moment (a `Mutex`, std's stdout lock, a lock
//! inside a library) stays locked forever in the child. Keep the child's work
//! simple and self-contained, or start processes before starting threads.
//! The body runs as a coroutine named after the process, on a fresh
//! [`CHILD_STACK_SIZE`] stack, whether `start` was called from a thread's
//! root or from a coroutine with a small stack.
//!
//! # Waiting for the exit
//!
//! A handle owns a pidfd (`pidfd_open`, Linux 5.3+), which polls readable
//! once the child has exited. [`ProcessHandle::join`] registers it with the
//! calling thread's hub and waits for readiness, then reaps the child with
//! `waitpid(WNOHANG)`: a coroutine yields, a root or plain thread blocks in
//! its hub. Without pidfds (old kernels) it polls `waitpid` with a growing
//! sleep (1 to 50 ms). The handle reaps the child exactly once, under a lock
//! that signals also take, so `terminate` never hits a recycled pid.
//!
//! A handle dropped while its child still runs hands the pid to a list that
//! the next `start` reaps without blocking (as Python does), so no zombie
//! accumulates.
//!
//! ```
//! use moss::pool::Process;
//! let p = Process::new(|| {
//!     // in the child
//!     let s: u64 = (1..=10).sum();
//!     assert_eq!(s, 55);
//! })
//! .name("adder")
//! .start()
//! .unwrap();
//! assert_eq!(p.name(), "adder");
//! assert_eq!(p.join().unwrap(), 0);
//! ```

use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::doorbell::Waited;
use crate::backoff::Backoff;
use crate::hub::{Hub, Mode};
use crate::reactor::Interest;
use crate::sys::fd;
use crate::sys::poll;
use crate::sys::process::{self, Exit, Forked};

/// Exit code of a child process whose body panicked (as a Rust program
/// whose `main` panicked).
pub const PANIC_EXIT_CODE: i32 = 101;

/// The stack of a child's body: 8 MiB, like a main thread's (only touched
/// pages cost memory), whatever stack `start` was called on.
pub const CHILD_STACK_SIZE: usize = 8 << 20;

static NEXT_NUMBER: AtomicU64 = AtomicU64::new(1);
/// Pids of children whose handles were dropped before they were reaped.
static ORPHANS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// A process body that has not been started: a closure and a name.
///
/// ```
/// let p = moss::pool::Process::new(|| panic!("boom")).start().unwrap();
/// assert_eq!(p.join().unwrap(), moss::pool::PANIC_EXIT_CODE);
/// ```
pub struct Process<F> {
    body: F,
    name: Option<String>,
}

impl<F: FnOnce() + 'static> Process<F> {
    /// A process that will run `f` (Python's `Process(target=...)`; its
    /// arguments are what it captures).
    pub fn new(f: F) -> Process<F> {
        Process {
            body: f,
            name: None,
        }
    }

    /// Names the process (default `Process-N`, numbered per parent).
    pub fn name(mut self, name: impl Into<String>) -> Process<F> {
        self.name = Some(name.into());
        self
    }

    /// Forks and runs the body in the child; returns the parent's handle.
    pub fn start(self) -> io::Result<ProcessHandle> {
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", NEXT_NUMBER.fetch_add(1, Ordering::Relaxed)));
        spawn_child(name, self.body)
    }

    /// Runs the body in the calling process, without starting a child
    /// (Python's `Process.run()`).
    pub fn run(self) {
        (self.body)()
    }
}

impl<F> fmt::Debug for Process<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A user type that is a process body: Python's subclass of
/// `multiprocessing.Process` that overrides `run`. Implement [`run`](Runnable::run) (and optionally
/// [`name`](Runnable::name)), then call [`start`](Runnable::start).
///
/// ```
/// use moss::pool::Runnable;
///
/// struct Squarer { n: u64 }
///
/// impl Runnable for Squarer {
///     fn run(self) {
///         assert_eq!(self.n * self.n, 49);
///     }
///     fn name(&self) -> String {
///         format!("squarer-{}", self.n)
///     }
/// }
///
/// let p = Squarer { n: 7 }.start().unwrap();
/// assert_eq!(p.name(), "squarer-7");
/// assert_eq!(p.join().unwrap(), 0);
/// ```
pub trait Runnable: Sized + 'static {
    /// The body; runs in the child process.
    fn run(self);

    /// The process's name.
    fn name(&self) -> String {
        format!("Process-{}", NEXT_NUMBER.fetch_add(1, Ordering::Relaxed))
    }

    /// Forks a child that calls [`run`](Runnable::run).
    fn start(self) -> io::Result<ProcessHandle> {
        let name = self.name();
        spawn_child(name, move || self.run())
    }
}

fn spawn_child(name: String, body: impl FnOnce() + 'static) -> io::Result<ProcessHandle> {
    reap_orphans();
    // What the parent buffered must not be printed by the child too.
    let _ = io::stdout().flush();
    let close_in_child = super::pool_manager::private_fds();
    // The child side below closes fds (no moss call), then `run_child`
    // forgets the parent's hub before anything else and leaves through
    // `exit_now`; the body runs on that fresh hub.
    // SAFETY: so the child follows `fork`'s contract: it takes no lock of the
    // parent's other threads except by the user's own choice (see "fork's
    // rules" above) and never returns into the parent's frames.
    match unsafe { process::fork() }? {
        Forked::Child => {
            for fd in close_in_child {
                // SAFETY: these fds belong to pools of the parent: their
                // owners (a pool's manager thread and its shared state,
                // referenced by that thread) never run or drop in the child.
                unsafe { fd::close_raw(fd) };
            }
            run_child(name, body)
        }
        Forked::Parent(pid) => {
            // Without pidfds, `join` falls back to polling waitpid.
            let pidfd = process::pidfd_open(pid).ok();
            Ok(ProcessHandle {
                pid,
                name,
                pidfd,
                exit: Mutex::new(None),
            })
        }
    }
}

/// The child side of a process: a fresh hub, the body in a coroutine with
/// a [`CHILD_STACK_SIZE`] stack (whatever stack `start` was called on),
/// then every coroutine it spawned, then `_exit`.
fn run_child(name: String, body: impl FnOnce() + 'static) -> ! {
    Hub::forget_after_fork();
    let ok = match crate::Builder::new()
        .name(name)
        .stack_size(CHILD_STACK_SIZE)
        .spawn(body)
    {
        Ok(h) => {
            // Caught: a root that would block forever panics, and this
            // stack must not unwind into the parent's code that forked it.
            let r = catch_unwind(AssertUnwindSafe(|| h.join()));
            let rest = catch_unwind(crate::wait);
            matches!(r, Ok(Ok(_))) && rest.is_ok()
        }
        // Only an invalid stack size fails, and the constant is valid.
        Err(_) => false,
    };
    process::exit_now(if ok { 0 } else { PANIC_EXIT_CODE })
}

fn reap_orphans() {
    let mut o = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    o.retain(|&pid| matches!(process::try_wait(pid), Ok(None)));
}

/// The parent's handle on a started child process. `Send + Sync`: any
/// thread or coroutine may join or signal it.
pub struct ProcessHandle {
    pid: libc::pid_t,
    name: String,
    pidfd: Option<OwnedFd>,
    /// Set once the child is reaped; after that, its pid may be reused.
    exit: Mutex<Option<Exit>>,
}

impl ProcessHandle {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the child to exit and returns its [`exit_code`](Self::exit_code).
    /// A coroutine yields meanwhile; a `kill` of the caller unwinds it.
    pub fn join(&self) -> io::Result<i32> {
        match self.wait(None)? {
            Some(c) => Ok(c),
            None => unreachable!("a wait without deadline cannot time out"),
        }
    }

    /// Like [`join`](Self::join), giving up after `d` with `Ok(None)`.
    pub fn join_timeout(&self, d: Duration) -> io::Result<Option<i32>> {
        self.wait(Instant::now().checked_add(d))
    }

    fn wait(&self, deadline: Option<Instant>) -> io::Result<Option<i32>> {
        let mut naps = Backoff::new();
        loop {
            if let Some(c) = self.poll_exit()? {
                return Ok(Some(c));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            match &self.pidfd {
                Some(fd) => {
                    if !wait_fd(fd.as_raw_fd(), Interest::Readable, deadline)? {
                        return self.poll_exit();
                    }
                }
                None => naps.sleep(deadline)?,
            }
        }
    }

    /// Reaps the child if it has exited; its exit code if known.
    fn poll_exit(&self) -> io::Result<Option<i32>> {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            *exit = process::try_wait(self.pid)?;
        }
        Ok(exit.map(exit_code))
    }

    /// Sends SIGTERM (the child's default action is to die). A child that
    /// has already been reaped is left alone.
    pub fn terminate(&self) -> io::Result<()> {
        self.send(libc::SIGTERM)
    }

    /// Sends SIGKILL (cannot be caught). A reaped child is left alone.
    pub fn kill(&self) -> io::Result<()> {
        self.send(libc::SIGKILL)
    }

    fn send(&self, sig: i32) -> io::Result<()> {
        let exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_some() {
            return Ok(());
        }
        // Not reaped, so the pid is still our child's (or its zombie's).
        process::signal(self.pid, sig)
    }

    /// Whether the child is still running (reaps it if it has exited).
    pub fn is_alive(&self) -> bool {
        matches!(self.poll_exit(), Ok(None))
    }

    /// `None` while the child runs; then its exit code, or minus the number
    /// of the signal that ended it (Python's convention: `-15` after
    /// [`terminate`](Self::terminate), `-9` after [`kill`](Self::kill)).
    pub fn exit_code(&self) -> Option<i32> {
        self.poll_exit().ok().flatten()
    }
}

fn exit_code(e: Exit) -> i32 {
    match e {
        Exit::Code(c) => c,
        Exit::Signal(s) => -s,
    }
}

impl Drop for ProcessHandle {
    fn drop(&mut self) {
        if matches!(self.poll_exit(), Ok(None)) {
            ORPHANS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.pid);
        }
    }
}

impl fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .field(
                "exit_code",
                &self
                    .exit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map(exit_code),
            )
            .finish()
    }
}

/// Waits until `fd` is ready for `interest` or `deadline` passes (`false`),
/// through the calling thread's hub: a coroutine yields, a root or plain
/// thread blocks in its hub. The fd is duplicated for the wait so that any
/// number of waiters of one hub can wait on it at once (epoll accepts each
/// fd number once). A `kill` of the calling coroutine unwinds it. If the fd
/// cannot be duplicated or registered (no fds left), the caller polls the
/// fd with growing naps on the hub's timers ([`crate::backoff`]), so the
/// hub keeps running; a thread without a hub blocks in `poll`. (The one
/// implementation is the doorbell's `wait_fd`.)
pub(crate) fn wait_fd(
    fd: RawFd,
    interest: Interest,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    match super::doorbell::wait_fd(fd, interest, deadline, Mode::Fallible) {
        Waited::Ready => Ok(true),
        Waited::TimedOut => Ok(false),
        Waited::Cancelled => {
            crate::cancel::deliver_or_fail(Hub::current());
            Err(io::Error::other(crate::reactor::WaitError::Cancelled))
        }
    }
}

/// The fallback of [`wait_fd`]: blocks the thread in `poll`.
pub(crate) fn poll_wait(
    fd: RawFd,
    interest: Interest,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let w = interest == Interest::Writable;
    let mut p = [poll::poll_raw_fd(fd, !w, w)];
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    Ok(poll::poll(&mut p, timeout)? > 0)
}
