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

/// Types that may live in a [`Shared`] mapping.
///
/// # Safety
/// The all-zero bit pattern is a valid value, and every field is an atomic
/// (or made of atomics), so that processes and threads may share it through
/// `&T` at once.
pub(crate) unsafe trait SharedState: Sync {}

/// One zeroed `T` alone in a [`SharedMem`] mapping of its own: shared with
/// every child forked after it was created.
pub(crate) struct Shared<T> {
    mem: SharedMem,
    _state: std::marker::PhantomData<T>,
}

impl<T: SharedState> Shared<T> {
    /// Maps a zeroed `T` (at least one page).
    pub(crate) fn new() -> io::Result<Shared<T>> {
        const {
            assert!(
                std::mem::align_of::<T>() <= 4096,
                "mappings are page aligned"
            )
        };
        Ok(Shared {
            mem: SharedMem::new(std::mem::size_of::<T>().max(1))?,
            _state: std::marker::PhantomData,
        })
    }

    /// The shared value.
    pub(crate) fn get(&self) -> &T {
        // The mapping is page aligned (enough for `T`, checked at compile
        // time in `new`) and at least `size_of::<T>()` long.
        // SAFETY: zeroed at creation (a valid `T`, per `SharedState`), it lives
        // as long as `self` and is only accessed through `&T` (atomic fields).
        unsafe { &*self.mem.as_ptr().cast::<T>() }
    }
}
