//! Child processes for coroutines: [`std::process`] with waits and pipes
//! that yield (gevent's `gevent.subprocess`).
//!
//! [`Command`] has std's builder methods; [`Child`] has std's fields and
//! methods plus [`wait_timeout`](Child::wait_timeout) and
//! [`communicate`](Child::communicate) (Python's `Popen.communicate`).
//! Every wait and every pipe read or write parks only the calling
//! coroutine; on a thread's root it runs the hub meanwhile.
//!
//! ```
//! use std::io::{Read, Write};
//! use moss::subprocess::{Command, Stdio};
//!
//! let mut child = Command::new("tr")
//!     .arg("a-z")
//!     .arg("A-Z")
//!     .stdin(Stdio::piped())
//!     .stdout(Stdio::piped())
//!     .spawn()
//!     .unwrap();
//! let out = child.communicate(b"hello").unwrap();
//! assert!(out.status.success());
//! assert_eq!(out.stdout, b"HELLO");
//! ```
//!
//! # How it waits
//!
//! * Processes are started by std (`posix_spawn` or `fork` + `exec`), so
//!   errors are std's: a missing program is [`io::ErrorKind::NotFound`].
//! * Waiting for the exit: at spawn the child gets a pidfd (Linux 5.3+), an
//!   fd that polls readable once the child has exited; a wait parks on it
//!   through the hub, then reaps the child with a non-blocking `waitpid`.
//!   Without pidfds (an old kernel, or no fd left at spawn), or when the
//!   pidfd cannot be watched (no fd left for the hub's duplicate), it
//!   polls with a growing sleep (1 to 50 ms) while the hub keeps running.
//! * Pipes: the parent's ends are switched to non-blocking mode (the
//!   child's ends are other file descriptions and stay blocking) and wait
//!   for readiness through the hub, as `moss::net` sockets do.
//! * [`Child::wait_with_output`], [`Child::communicate`] and
//!   [`Command::output`] read stdout and stderr (and write stdin) in
//!   concurrent coroutines, so a child that fills one pipe while the parent
//!   reads or writes another never deadlocks.
//!
//! # Cancellation and zombies
//!
//! A `kill` or `timeout` unwinds a coroutine from any wait here. A [`Child`]
//! dropped before its process was reaped (by a killed coroutine, or simply
//! dropped, as std allows) is handed to a background reaper thread that
//! waits for the exit and reaps it, so no zombie is left behind; the process
//! itself keeps running, as with std. Helper coroutines that read or write
//! pipes for a cancelled caller are killed with it.
//!
//! # Under `patch_all`
//!
//! Unmodified code using [`std::process`] cooperates too: its pipes are
//! read through the hooked `read`/`poll`, and `waitpid`/`wait4` for one
//! child (what `Child::wait` and `wait_with_output` call) park on a pidfd.
//! See [`crate::monkey`].

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;

mod child;
mod reaper;

pub use child::{Child, ChildStderr, ChildStdin, ChildStdout};
pub use std::process::{ExitStatus, Output, Stdio};

/// A process builder: [`std::process::Command`] whose children wait and
/// pipe through the hub.
///
/// ```
/// let out = moss::subprocess::Command::new("sh")
///     .args(["-c", "echo out; echo err >&2; exit 3"])
///     .output()
///     .unwrap();
/// assert_eq!(out.status.code(), Some(3));
/// assert_eq!(out.stdout, b"out\n");
/// assert_eq!(out.stderr, b"err\n");
/// ```
pub struct Command {
    inner: std::process::Command,
    /// Whether stdin/stdout/stderr were configured through this type.
    set: [bool; 3],
    /// Whether the std command's stdin/stdout/stderr is the `inherit` that
    /// `output` put back after overriding an unset stream (std cannot unset
    /// a stream again): it still counts as unset.
    restored: [bool; 3],
}

impl Command {
    /// A command running `program` (looked up in `PATH` if it has no `/`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env(key, val);
        self
    }

    /// Sets several environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.inner.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env_remove(key);
        self
    }

    /// Clears the child's environment.
    pub fn env_clear(&mut self) -> &mut Command {
        self.inner.env_clear();
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.inner.current_dir(dir);
        self
    }

    /// The child's stdin (default: inherited; null for [`output`](Self::output)).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdin(cfg);
        self.set[0] = true;
        self.restored[0] = false;
        self
    }

    /// The child's stdout (default: inherited; piped for [`output`](Self::output)).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdout(cfg);
        self.set[1] = true;
        self.restored[1] = false;
        self
    }

    /// The child's stderr (default: inherited; piped for [`output`](Self::output)).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stderr(cfg);
        self.set[2] = true;
        self.restored[2] = false;
        self
    }

    /// Starts the process. A missing program fails with
    /// [`io::ErrorKind::NotFound`], as with std.
    pub fn spawn(&mut self) -> io::Result<Child> {
        Child::from_std(self.inner.spawn()?)
    }

    /// Runs the process to completion and collects its output, as std's
    /// `output`: stdout and stderr are piped and stdin is null unless set
    /// (here or on the std command: through [`as_std_mut`](Self::as_std_mut)
    /// or before [`From`]). Both pipes are read concurrently while the
    /// caller's hub keeps running.
    pub fn output(&mut self) -> io::Result<Output> {
        let on_std = std_stdio(&self.inner);
        let unset: [bool; 3] = std::array::from_fn(|i| {
            !self.set[i]
                && match on_std.map(|s| s[i]) {
                    Some(None) | None => true,
                    Some(Some(inherit)) => inherit && self.restored[i],
                }
        });
        let [i, o, e] = unset;
        if i {
            self.inner.stdin(Stdio::null());
        }
        if o {
            self.inner.stdout(Stdio::piped());
        }
        if e {
            self.inner.stderr(Stdio::piped());
        }
        let spawned = self.inner.spawn();
        // Back to the defaults of `spawn` for the next use of this command.
        if i {
            self.inner.stdin(Stdio::inherit());
        }
        if o {
            self.inner.stdout(Stdio::inherit());
        }
        if e {
            self.inner.stderr(Stdio::inherit());
        }
        for (r, u) in self.restored.iter_mut().zip(unset) {
            *r |= u;
        }
        Child::from_std(spawned?)?.wait_with_output()
    }

    /// Runs the process to completion (stdio inherited unless set) and
    /// returns its exit status.
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// The std command inside, for settings this type does not mirror
    /// (`std::os::unix::process::CommandExt`: `uid`, `process_group`, ...).
    /// Stdio set here counts as set for [`output`](Self::output), except
    /// `inherit` on a stream that an earlier `output` of this command
    /// piped by default (std cannot unset a stream, so `output` leaves
    /// `inherit` there, and keeps treating it as unset).
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.inner
    }
}

/// Wraps a std command, keeping all its settings (a stdio stream set on it
/// counts as set for [`Command::output`], as with std).
impl From<std::process::Command> for Command {
    fn from(inner: std::process::Command) -> Command {
        Command {
            inner,
            set: [false; 3],
            restored: [false; 3],
        }
    }
}

/// What the std command has for stdin, stdout and stderr: `None` unset,
/// `Some(true)` inherit, `Some(false)` anything else; `None` as a whole if
/// that cannot be told.
///
/// std has no getter for them, but its alternate `Debug` output lists every
/// stream that is set (`stdout: Some(` then the setting on the next line)
/// and omits the unset ones. Only the struct's own fields start with
/// exactly four spaces of indentation: the program, the arguments and the
/// environment print as quoted strings with escaped newlines, nested
/// deeper, so their text cannot pass for a field. Output of another shape
/// (a future std) is not guessed at: then only the settings made through
/// [`Command`]'s own methods count.
fn std_stdio(cmd: &std::process::Command) -> Option<[Option<bool>; 3]> {
    const FIELDS: [&str; 3] = ["stdin: Some(", "stdout: Some(", "stderr: Some("];
    let text = format!("{cmd:#?}");
    let mut lines = text.lines();
    if lines.next()? != "Command {" {
        return None;
    }
    let mut found = [None; 3];
    let mut program = false;
    while let Some(line) = lines.next() {
        let Some(field) = line.strip_prefix("    ").filter(|f| !f.starts_with(' ')) else {
            continue;
        };
        program |= field.starts_with("program: ");
        if let Some(i) = FIELDS.iter().position(|f| field == *f) {
            found[i] = Some(lines.next()?.trim() == "Inherit,");
        }
    }
    program.then_some(found)
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
