//! Platform mechanisms, one file each, behind small contracts.
//!
//! The portable code (scheduler, pools, processes) never issues a raw
//! syscall itself; it calls into these modules. Each file's header states
//! its contract in full; in short:
//!
//! * [`cvt`] — the one conversion of a raw return value (`-1` and `errno`)
//!   into `io::Result`, and the one `EINTR` retry ([`cvt::cvt_r`]). Every
//!   other file here, and moss-io's socket layer, goes through it. Public
//!   (hidden) for moss-io only, like `fd::set_nonblocking` and `fd::own`.
//! * `stack` — reserve stack memory with `mmap`, install guard pages
//!   (`MADV_GUARD_INSTALL`, falling back to `mprotect`), release pages with
//!   `MADV_DONTNEED`. Contract: a `Stack` is a 16-byte aligned range
//!   `[limit, base)` whose lowest `guard` bytes fault on access.
//! * `atfork` — fork generations: how an object that owns threads tells
//!   that it was inherited by a forked child and must be rebuilt; one-time
//!   initialisations a fork cannot leave stuck (`ForkSafeOnceLock`: public,
//!   hidden, for moss-io).
//! * `signal` — the SIGSEGV/SIGBUS handler that turns a fault in the running
//!   coroutine's guard page into a one-line report and an abort, chaining
//!   every other fault to the handler that was installed before.
//! * `process` — `fork` (an `unsafe fn`: the child's rules are its safety
//!   contract), `_exit`, `waitpid`, `pidfd_open`, `kill`. Contract: waits
//!   retry `EINTR`; a reaped pid is never signalled by the callers; `fork`
//!   waits until no thread runs inside `without_fork` (public, hidden, for
//!   moss-io's resolver).
//! * `fd` — pipes, socket pairs, `O_NONBLOCK`, pipe sizes, `dup`, `read`,
//!   `write`, and `close_raw` (an `unsafe fn`: closing a number some owner
//!   still uses breaks I/O safety), `above_stdio` (keeps the fds a library
//!   creates off the numbers 0-2). Contract: new fds are `O_CLOEXEC`,
//!   numbered 3 or above, and come back as `OwnedFd`; `read`/`write` retry `EINTR` and report
//!   `WouldBlock` on non-blocking fds, for the caller to wait through the hub.
//! * `poll` — `poll(2)` for threads without coroutines (a process pool's
//!   manager) and for fallbacks; retries `EINTR` with the time left.
//! * `shm` — `MAP_SHARED` anonymous memory shared with forked children.
//!
//! Linux only, like the rest of moss (epoll, pidfds, `accept4`,
//! `MADV_GUARD_INSTALL`).

pub(crate) mod atfork;
#[doc(hidden)]
pub use atfork::ForkSafeOnceLock;
pub mod cvt;
pub mod fd;
pub(crate) mod poll;
pub(crate) mod process;
#[doc(hidden)]
pub use process::{in_without_fork, without_fork};
pub(crate) mod shm;
pub(crate) mod signal;
pub(crate) mod stack;
