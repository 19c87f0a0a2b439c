//! Reading and writing the caller's memory without trusting its pointer.
//!
//! A few hooks must look at an argument themselves before the kernel does
//! (a sleep's timespec, `select`'s sets and timeout, `FIONBIO`'s flag, a
//! futex wait's timeout), or write a result back (the time left). libc
//! hands such pointers to the kernel, which fails an unmapped or read-only
//! one with `EFAULT`; a plain dereference in the hook would crash the
//! process instead. So these copies go through `process_vm_readv` and
//! `process_vm_writev` on this very process (always permitted for one's
//! own process), which fail with `EFAULT` too. Where a seccomp filter
//! refuses those calls (`ENOSYS`, `EPERM`), the plain access is used: the
//! behaviour before this existed. They run only on a hook's slow path,
//! before it parks, where one more syscall does not matter.

use std::mem::{MaybeUninit, size_of};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use moss_runtime::reactor::fork_generation;

/// The caller's pointer is not valid for this access (`EFAULT`).
#[derive(Debug)]
pub(crate) struct Fault;

/// Copies `*p` out of the caller's memory.
pub(crate) fn read<T: Copy>(p: *const T) -> Result<T, Fault> {
    let mut v = MaybeUninit::<T>::uninit();
    let local = libc::iovec {
        iov_base: v.as_mut_ptr().cast(),
        iov_len: size_of::<T>(),
    };
    let remote = libc::iovec {
        iov_base: p.cast_mut().cast(),
        iov_len: size_of::<T>(),
    };
    // SAFETY: `local` is our own writable buffer of the given size; the
    // kernel checks `remote` and reports EFAULT for an invalid address.
    let n = unsafe { libc::process_vm_readv(own_pid(), &local, 1, &remote, 1, 0) };
    if n == size_of::<T>() as isize {
        // SAFETY: the kernel filled all of it.
        return Ok(unsafe { v.assume_init() });
    }
    if n < 0 && refused() {
        // SAFETY: the caller's contract with libc: `p` points at a `T`.
        return Ok(unsafe { p.read_unaligned() });
    }
    Err(Fault)
}

/// Copies `v` into the caller's memory at `p`.
pub(crate) fn write<T: Copy>(p: *mut T, v: T) -> Result<(), Fault> {
    let local = libc::iovec {
        iov_base: (&raw const v).cast_mut().cast(),
        iov_len: size_of::<T>(),
    };
    let remote = libc::iovec {
        iov_base: p.cast(),
        iov_len: size_of::<T>(),
    };
    // SAFETY: `local` is our own readable value of the given size; the
    // kernel checks `remote` and reports EFAULT for an invalid address.
    let n = unsafe { libc::process_vm_writev(own_pid(), &local, 1, &remote, 1, 0) };
    if n == size_of::<T>() as isize {
        return Ok(());
    }
    if n < 0 && refused() {
        // SAFETY: the caller's contract with libc: `p` points at a writable `T`.
        unsafe { p.write_unaligned(v) };
        return Ok(());
    }
    Err(Fault)
}

/// The last call failed because the system refuses it, not the address.
fn refused() -> bool {
    matches!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM)
    )
}

/// This process's pid: `getpid` once per process. A forked child, whose
/// fork generation differs from the cached one, asks again (a stale pid
/// would copy the parent's memory).
fn own_pid() -> libc::pid_t {
    // (generation + 1) of the cached pid, 0 for none.
    static CACHED_GEN: AtomicU64 = AtomicU64::new(0);
    static CACHED: AtomicI32 = AtomicI32::new(0);
    let generation = fork_generation() + 1;
    if CACHED_GEN.load(Ordering::Acquire) == generation {
        return CACHED.load(Ordering::Relaxed);
    }
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    CACHED.store(pid, Ordering::Relaxed);
    CACHED_GEN.store(generation, Ordering::Release);
    pid
}
