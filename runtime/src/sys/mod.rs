//! Platform mechanisms, one file each, behind small contracts.
//!
//! The portable scheduler never issues a raw syscall itself; it calls into
//! these modules:
//!
//! * [`stack`] — reserve stack memory with `mmap`, install guard pages
//!   (`MADV_GUARD_INSTALL`, falling back to `mprotect`), release pages with
//!   `MADV_DONTNEED`. Contract: a [`stack::Stack`] is a 16-byte aligned range
//!   `[limit, base)` whose lowest `guard` bytes fault on access.
//! * [`atfork`] — fork generations: how an object that owns threads tells
//!   that it was inherited by a forked child and must be rebuilt.
//! * [`signal`] — the SIGSEGV/SIGBUS handler that turns a fault in the running
//!   coroutine's guard page into a one-line report and an abort, chaining every
//!   other fault to the handler that was installed before.

pub(crate) mod atfork;
pub(crate) mod fork;
pub(crate) mod signal;
pub(crate) mod stack;
