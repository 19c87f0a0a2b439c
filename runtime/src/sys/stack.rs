//! Stack memory for coroutines.
//!
//! Stacks are carved out of larger anonymous mappings ("chunks") so that a
//! million coroutines do not need a million mappings:
//!
//! ```text
//!  chunk base                                                    chunk end
//!  | guard | usable stack 0 | guard | usable stack 1 | ... | guard | stack n |
//!  ^limit0 ^                ^limit1                              base n ^
//!          `- grows down from base0 (= limit1)
//! ```
//!
//! Each slot is `guard + size` bytes; the guard is the lowest page(s) of the
//! slot. The mapping is `MAP_NORESERVE`, so nothing is committed until a page
//! is first touched.
//!
//! Guard pages are installed with `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+),
//! which marks page table entries without splitting the mapping: the whole
//! chunk stays one VMA and `vm.max_map_count` (65530 by default) does not cap
//! the number of coroutines. On older kernels the call fails with `EINVAL` and
//! we fall back to `mprotect(PROT_NONE)`, which splits the VMA in two per
//! stack (so roughly 32k stacks fit under the default map count).
//!
//! Chunks are never unmapped: free stacks go back to a pool (per hub, and a
//! process-wide pool when a hub's thread exits) and their pages are released
//! with `MADV_DONTNEED` above a high-water mark.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use corosensei::stack::StackPointer;

use super::cvt::cvt;

/// `MADV_GUARD_INSTALL` from Linux 6.13 (not yet in every libc crate).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Set once a kernel rejected `MADV_GUARD_INSTALL`; from then on we `mprotect`.
static NO_GUARD_INSTALL: AtomicBool = AtomicBool::new(false);

/// The system page size.
pub(crate) fn page_size() -> usize {
    // Racing first calls compute the same value; no lock a fork could copy
    // held (see `atfork::ForkSafeOnce`).
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let n = PAGE.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let n = if n > 0 { n as usize } else { 4096 };
    PAGE.store(n, Ordering::Relaxed);
    n
}

/// One coroutine stack: usable memory `[limit + guard, base)` above a guard
/// region `[limit, limit + guard)`, the guard one page (`page_size()`: not
/// stored, the control block that holds a bound stack is kept small).
///
/// # Invariants
/// `limit` and `base` are page aligned, `base - limit == guard + size`, the
/// range lies inside a chunk mapping that is never unmapped, and the guard
/// region faults on access. A `Stack` value is owned by exactly one pool entry
/// or one coroutine at a time (it is not `Clone`).
#[derive(Debug)]
pub(crate) struct Stack {
    /// Kept as corosensei wants it (non-zero): every resume reads it.
    base: StackPointer,
    limit: usize,
}

impl Stack {
    /// Usable bytes (without the guard).
    pub(crate) fn size(&self) -> usize {
        self.base.get() - self.limit - page_size()
    }

    /// The usable region `[lo, hi)` (above the guard).
    pub(crate) fn usable(&self) -> (usize, usize) {
        (self.limit + page_size(), self.base.get())
    }

    /// The guard region `[lo, hi)`.
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.limit, self.limit + page_size())
    }

    /// Releases the physical pages of the usable part; the next touch maps
    /// fresh zero pages. The address range stays reserved.
    pub(crate) fn release_pages(&self) {
        let lo = self.limit + page_size();
        // SAFETY: `[lo, base)` is a page-aligned range inside a live private
        // anonymous mapping owned by this stack, and no coroutine runs on it
        // (it is in the pool), so discarding its contents is harmless.
        unsafe {
            libc::madvise(
                lo as *mut libc::c_void,
                self.base.get() - lo,
                libc::MADV_DONTNEED,
            );
        }
    }
}

// SAFETY: `base` and `limit` come from `allocate_chunk`, which page-aligns them
// (so they are 16-byte aligned), and the range between them is a live mapping
// whose lowest page (the guard) faults, as corosensei's contract requires.
unsafe impl corosensei::stack::Stack for Stack {
    fn base(&self) -> StackPointer {
        self.base
    }

    fn limit(&self) -> StackPointer {
        StackPointer::new(self.limit).expect("stack limit is non-zero")
    }
}

/// The stack pointer of the calling code: where the running context's stack
/// is now (to check that code runs on a given coroutine's stack).
///
/// Read from the register, not taken as the address of a local: with
/// AddressSanitizer's use-after-return detection (on by default) a local
/// whose address is taken lives in a heap-allocated "fake stack" frame, far
/// from the stack the code runs on.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: copies the stack pointer register into a general register;
    // touches no memory, no flags, no stack.
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, on aarch64.
    unsafe {
        std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // Elsewhere: a local's address, exact except under AddressSanitizer.
        let probe = 0u8;
        sp = std::hint::black_box(std::ptr::from_ref(&probe)) as usize;
    }
    sp
}

/// Maps `count` stacks of `size` usable bytes each (`size` a multiple of the
/// page size), each with one guard page below it.
pub(crate) fn allocate_chunk(size: usize, count: usize) -> io::Result<Vec<Stack>> {
    let page = page_size();
    debug_assert!(size.is_multiple_of(page) && size > 0 && count > 0);
    let guard = page;
    let slot = size + guard;
    let len = slot
        .checked_mul(count)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "stack chunk too large"))?;
    // SAFETY: an anonymous private mapping at a kernel-chosen address aliases
    // nothing; we check for MAP_FAILED below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = addr as usize;
    let mut stacks = Vec::with_capacity(count);
    for i in 0..count {
        let limit = base + i * slot;
        if let Err(e) = install_guard(limit, guard) {
            // SAFETY: we mapped `[base, base + len)` above and handed out
            // nothing yet, so unmapping it cannot invalidate any reference.
            unsafe { libc::munmap(addr, len) };
            return Err(e);
        }
        stacks.push(Stack {
            base: StackPointer::new(limit + slot).expect("a mapping is not at address 0"),
            limit,
        });
    }
    Ok(stacks)
}

fn install_guard(addr: usize, len: usize) -> io::Result<()> {
    if !NO_GUARD_INSTALL.load(Ordering::Relaxed) {
        // SAFETY: `[addr, addr + len)` is page aligned and inside the mapping
        // we just created; installing guard markers only affects that range.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_GUARD_INSTALL) };
        match cvt(r) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => return Err(e),
            Err(_) => {}
        }
        // Older kernel: remember and fall back for good.
        NO_GUARD_INSTALL.store(true, Ordering::Relaxed);
    }
    // SAFETY: as above; PROT_NONE on our own fresh range.
    cvt(unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_layout_and_guard() {
        let page = page_size();
        let stacks = allocate_chunk(16 * page, 4).unwrap();
        assert_eq!(stacks.len(), 4);
        for w in stacks.windows(2) {
            assert_eq!(w[0].base.get(), w[1].limit);
        }
        for s in &stacks {
            assert_eq!(s.size(), 16 * page);
            // The usable part is writable.
            let p = (s.limit + page) as *mut u8;
            // SAFETY: inside the usable part of a live stack we own.
            unsafe { p.write_volatile(7) };
            s.release_pages();
            // SAFETY: same address; after MADV_DONTNEED it reads as zero.
            assert_eq!(unsafe { p.read_volatile() }, 0);
        }
    }

    /// Code running on a coroutine's stack sees a stack pointer inside that
    /// stack's usable part (also under AddressSanitizer, where a local's
    /// address would lie in a heap "fake stack" frame).
    #[test]
    fn stack_pointer_is_inside_the_running_stack() {
        let stack = allocate_chunk(16 * page_size(), 1).unwrap().pop().unwrap();
        let (lo, hi) = stack.usable();
        let mut coro = corosensei::Coroutine::<(), (), usize, Stack>::with_stack(stack, |_, ()| {
            stack_pointer()
        });
        let sp = match coro.resume(()) {
            corosensei::CoroutineResult::Return(sp) => sp,
            corosensei::CoroutineResult::Yield(()) => unreachable!("the body does not yield"),
        };
        assert!(lo <= sp && sp < hi, "{sp:#x} outside [{lo:#x}, {hi:#x})");
        let outside = stack_pointer();
        assert!(!(lo..hi).contains(&outside), "{outside:#x}");
    }
}
