//! A running child process and its pipes.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use moss_runtime::backoff::Backoff;
use moss_runtime::reactor::{self, Interest};

use super::reaper;
use crate::net::fd::Evented;
use crate::net::sys;

/// A child process started by [`Command`](super::Command):
/// [`std::process::Child`] whose waits and pipes yield to the hub.
///
/// Dropping a `Child` does not kill the process (as with std), but a
/// process that has not been reaped yet is reaped in the background when it
/// exits, so no zombie stays behind.
pub struct Child {
    /// The child's stdin, if it was piped.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if it was piped.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if it was piped.
    pub stderr: Option<ChildStderr>,
    /// `None` only once handed to the reaper in `drop`.
    inner: Option<std::process::Child>,
    /// Polls readable once the process has exited (`None`: no pidfds).
    pidfd: Option<OwnedFd>,
}

impl Child {
    /// Adopts a child started by std: its pipes become cooperative.
    pub(crate) fn from_std(mut c: std::process::Child) -> io::Result<Child> {
        // Open the pidfd first: the process cannot have been reaped yet (we
        // own the only handle), so its pid is still ours.
        let pidfd = reactor::pidfd_open(c.id() as libc::pid_t).ok();
        let stdin = c.stdin.take().map(Evented::new).transpose();
        let stdout = c.stdout.take().map(Evented::new).transpose();
        let stderr = c.stderr.take().map(Evented::new).transpose();
        let mut child = Child {
            stdin: None,
            stdout: None,
            stderr: None,
            inner: Some(c),
            pidfd,
        };
        // On an error, `child` goes to the reaper like any dropped child.
        child.stdin = stdin?.map(|inner| ChildStdin { inner });
        child.stdout = stdout?.map(|inner| ChildStdout { inner });
        child.stderr = stderr?.map(|inner| ChildStderr { inner });
        Ok(child)
    }

    fn std(&mut self) -> &mut std::process::Child {
        self.inner.as_mut().expect("present until drop")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.as_ref().expect("present until drop").id()
    }

    /// Sends `SIGKILL` (std's `kill`: `Ok` if the child was already reaped).
    pub fn kill(&mut self) -> io::Result<()> {
        self.std().kill()
    }

    /// The exit status if the process has exited (reaping it), without
    /// waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.std().try_wait()
    }

    /// Closes stdin (as std does, so a child reading it sees EOF) and waits
    /// for the process to exit. A coroutine parks meanwhile; a `kill` or
    /// `timeout` unwinds it (the process is then reaped in the background
    /// once dropped).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        match self.wait_until(None)? {
            Some(s) => Ok(s),
            None => unreachable!("a wait without deadline cannot time out"),
        }
    }

    /// Waits at most `d` for the process to exit: `Ok(None)` if it still
    /// runs then. Unlike [`wait`](Self::wait), stdin stays open.
    pub fn wait_timeout(&mut self, d: Duration) -> io::Result<Option<ExitStatus>> {
        self.wait_until(Instant::now().checked_add(d))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        let mut pidfd = self.pidfd.as_ref().map(AsRawFd::as_raw_fd);
        let mut naps = Backoff::new();
        loop {
            if let Some(s) = self.std().try_wait()? {
                return Ok(Some(s));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            match pidfd {
                Some(fd) => {
                    if !reactor::wait_fd(fd, Interest::Readable, deadline)? {
                        return self.std().try_wait();
                    }
                    // Readable means exited; should `try_wait` still see it
                    // running, poll from now on rather than spin.
                    pidfd = None;
                }
                None => naps.sleep(deadline)?,
            }
        }
    }

    /// Closes stdin, reads stdout and stderr to their ends (concurrently, so
    /// neither pipe can fill up and stall the child) and waits for the exit.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        self.finish(None)
    }

    /// Python's `Popen.communicate(input)`: writes `input` to stdin while
    /// reading stdout and stderr, closes stdin, and waits for the exit. A
    /// child that exits or closes stdin before reading all of `input` is not
    /// an error (`BrokenPipe` on stdin is ignored, as Python does). Non-empty
    /// `input` without a piped stdin is `InvalidInput`.
    pub fn communicate(mut self, input: &[u8]) -> io::Result<Output> {
        let stdin = self.stdin.take();
        if stdin.is_none() && !input.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "communicate: input given but the child's stdin is not piped",
            ));
        }
        self.finish(stdin.map(|s| (s, input)))
    }

    fn finish(mut self, stdin: Option<(ChildStdin, &[u8])>) -> io::Result<Output> {
        let err = self
            .stderr
            .take()
            .map(|e| Helper::spawn(move || read_all(e)));
        let out = self.stdout.take();
        let (stdout, stderr) = match stdin {
            Some((mut s, input)) => {
                let out = out.map(|o| Helper::spawn(move || read_all(o)));
                match s.write_all(input) {
                    Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
                    _ => drop(s),
                }
                (join(out)?, join(err)?)
            }
            None => {
                let stdout = out.map(read_all).transpose()?.unwrap_or_default();
                (stdout, join(err)?)
            }
        };
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

/// A pipe coroutine of `finish`, killed if its caller leaves early (an
/// error, or the caller's own cancellation).
struct Helper(Option<moss_runtime::JoinHandle<io::Result<Vec<u8>>>>);

impl Helper {
    fn spawn(f: impl FnOnce() -> io::Result<Vec<u8>> + 'static) -> Helper {
        Helper(Some(moss_runtime::spawn(f)))
    }
}

fn join(h: Option<Helper>) -> io::Result<Vec<u8>> {
    let Some(mut h) = h else {
        return Ok(Vec::new());
    };
    match h.0.take().expect("joined once").join() {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.kill();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut c) = self.inner.take()
            && matches!(c.try_wait(), Ok(None))
        {
            reaper::adopt(c, self.pidfd.take());
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.inner.as_ref().map(std::process::Child::id))
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

macro_rules! pipe_type {
    ($(#[$doc:meta])* $name:ident, $std:ident) => {
        $(#[$doc])*
        pub struct $name {
            inner: Evented<std::process::$std>,
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.get().as_raw_fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.get().as_fd()
            }
        }

        /// Back in blocking mode, e.g. to pass it to another process.
        impl From<$name> for std::process::$std {
            fn from(p: $name) -> std::process::$std {
                p.inner.into_inner()
            }
        }

        /// In blocking mode, as the stdio of another process (a pipeline).
        impl From<$name> for Stdio {
            fn from(p: $name) -> Stdio {
                Stdio::from(p.inner.into_inner())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.as_raw_fd())
                    .finish()
            }
        }
    };
}

pipe_type!(
    /// The parent's end of a child's stdin ([`std::process::ChildStdin`]
    /// for coroutines): writes park while the pipe is full.
    ChildStdin,
    ChildStdin
);
pipe_type!(
    /// The parent's end of a child's stdout: reads park while it is empty.
    ChildStdout,
    ChildStdout
);
pipe_type!(
    /// The parent's end of a child's stderr: reads park while it is empty.
    ChildStderr,
    ChildStderr
);

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_op(|p| sys::write(p.as_raw_fd(), buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for ChildStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len();
        self.inner
            .read_op(Some(n), |p| sys::read(p.as_raw_fd(), buf), |&k| k)
    }
}

impl Read for ChildStderr {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len();
        self.inner
            .read_op(Some(n), |p| sys::read(p.as_raw_fd(), buf), |&k| k)
    }
}
