//! Per-hub pool of coroutine stacks.
//!
//! Spawning must not fault in fresh pages: on this class of machine the first
//! touch of an anonymous page costs ~12 µs, a context switch ~1 ns. So:
//!
//! * a stack is bound to a coroutine only when it first runs, and returned as
//!   soon as it finishes, so `spawn` ×1e6 then `join_all` cycles through a
//!   handful of hot stacks;
//! * up to [`HOT_LIMIT`] free stacks per size keep their pages resident; stacks
//!   returned beyond that are released with `MADV_DONTNEED` and kept (cold) for
//!   reuse of their address range;
//! * new stacks are mapped in chunks that grow geometrically up to
//!   [`MAX_CHUNK`] stacks, one mapping each;
//! * when a hub's thread exits, its free stacks move (released) to a
//!   process-wide pool that other hubs draw from before mapping new memory.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use crate::sys::stack::{Stack, allocate_chunk, page_size};

/// Free stacks per size class that keep their pages resident.
pub(crate) const HOT_LIMIT: usize = 128;
/// Largest number of stacks mapped at once.
const MAX_CHUNK: usize = 256;

/// Smallest accepted usable stack size.
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// Largest accepted usable stack size.
pub const MAX_STACK_SIZE: usize = 1 << 30;
/// Default usable stack size of a coroutine: 128 KiB.
///
/// Only touched pages cost memory (a coroutine that sleeps right away keeps one
/// or two 4 KiB pages resident), so the size is mostly address space. 128 KiB
/// leaves room for what ordinary Rust code does on a stack — formatting, a
/// panic with `RUST_BACKTRACE=1` symbolising its backtrace in a debug build,
/// std's buffered I/O — where 64 KiB (corosensei's recommended minimum) is
/// tight for debug builds. Use [`Builder::stack_size`](crate::Builder::stack_size)
/// to go lower for huge numbers of tiny coroutines.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// Rounds a requested size up to whole pages, validating the bounds.
pub(crate) fn normalize_size(size: usize) -> io::Result<usize> {
    if size < MIN_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "coroutine stack size {size} is below the minimum of {} KiB",
                MIN_STACK_SIZE / 1024
            ),
        ));
    }
    if size > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "coroutine stack size {size} is above the maximum of {} MiB",
                MAX_STACK_SIZE >> 20
            ),
        ));
    }
    let page = page_size();
    Ok(size.div_ceil(page) * page)
}

#[derive(Default)]
struct SizeClass {
    hot: Vec<Stack>,
    cold: Vec<Stack>,
    next_chunk: usize,
}

/// Free stacks of a hub, by usable size. The default size has its own
/// class so the common path does no lookup.
#[derive(Default)]
pub(crate) struct StackPool {
    default: SizeClass,
    others: HashMap<usize, SizeClass>,
}

/// Released stacks of hubs whose threads exited.
static ORPHANS: Mutex<Vec<Stack>> = Mutex::new(Vec::new());

impl StackPool {
    /// A stack of exactly `size` usable bytes (`size` from [`normalize_size`]).
    fn class(&mut self, size: usize) -> &mut SizeClass {
        if size == DEFAULT_STACK_SIZE {
            &mut self.default
        } else {
            self.others.entry(size).or_default()
        }
    }

    pub(crate) fn take(&mut self, size: usize) -> io::Result<Stack> {
        let class = self.class(size);
        if let Some(s) = class.hot.pop() {
            return Ok(s);
        }
        if let Some(s) = class.cold.pop() {
            return Ok(s);
        }
        // try_lock: in a forked child this lock may have been held by a
        // thread that does not exist there; then map fresh stacks instead.
        if let Ok(mut orphans) = ORPHANS.try_lock()
            && let Some(i) = orphans.iter().position(|s| s.size() == size)
        {
            return Ok(orphans.swap_remove(i));
        }
        let count = class.next_chunk.clamp(1, MAX_CHUNK);
        class.next_chunk = (count * 2).min(MAX_CHUNK);
        let mut fresh = allocate_chunk(size, count)?;
        let s = fresh.pop().expect("chunk has at least one stack");
        // Fresh stacks have no resident pages yet: they count as cold.
        class.cold.extend(fresh);
        Ok(s)
    }

    /// Makes sure a stack of `size` can be had without mapping memory later,
    /// mapping a chunk now if needed: reports an mmap failure at spawn time.
    pub(crate) fn reserve(&mut self, size: usize) -> io::Result<()> {
        let s = self.take(size)?;
        self.give(s);
        Ok(())
    }

    /// Returns a stack whose coroutine has finished.
    pub(crate) fn give(&mut self, stack: Stack) {
        let class = self.class(stack.size());
        if class.hot.len() < HOT_LIMIT {
            class.hot.push(stack);
        } else {
            stack.release_pages();
            class.cold.push(stack);
        }
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        let Ok(mut orphans) = ORPHANS.lock() else {
            return;
        };
        let default = std::mem::take(&mut self.default);
        for class in std::iter::once(default).chain(self.others.drain().map(|(_, c)| c)) {
            for s in class.hot {
                s.release_pages();
                orphans.push(s);
            }
            orphans.extend(class.cold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated_and_rounded() {
        assert!(normalize_size(0).is_err());
        assert!(normalize_size(MIN_STACK_SIZE - 1).is_err());
        assert!(normalize_size(usize::MAX).is_err());
        assert_eq!(
            normalize_size(MIN_STACK_SIZE + 1).unwrap(),
            MIN_STACK_SIZE + page_size()
        );
    }

    #[test]
    fn reuse_is_lifo() {
        let mut pool = StackPool::default();
        let a = pool.take(MIN_STACK_SIZE).unwrap();
        let base = a.guard_range();
        pool.give(a);
        let b = pool.take(MIN_STACK_SIZE).unwrap();
        assert_eq!(b.guard_range(), base);
        pool.give(b);
    }
}
