//! Shared anonymous memory: pages a parent and its forked children share.
//!
//! Contract: [`SharedMem`] is a zeroed, page-aligned `MAP_SHARED` mapping
//! that lives until dropped; the types placed in it must be valid when
//! zeroed and safe to share between processes (atomics).

use std::io;

/// A `MAP_SHARED | MAP_ANONYMOUS` mapping: the same physical pages in this
/// process and in every child forked after it was created.
///
/// # Invariants
/// `ptr` is the start of a live mapping of `len` bytes, page aligned and
/// zero-filled at creation, unmapped only by `Drop`.
pub(crate) struct SharedMem {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; the types placed in it are atomics,
// which are safe to share between threads (and processes).
unsafe impl Send for SharedMem {}
// SAFETY: as above.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Maps `len` zeroed bytes (`len > 0`).
    pub(crate) fn new(len: usize) -> io::Result<SharedMem> {
        // SAFETY: an anonymous shared mapping at an address the kernel picks
        // has no preconditions; failure is MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMem { ptr: p.cast(), len })
    }

    /// The start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: per the invariants, this is our live mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
