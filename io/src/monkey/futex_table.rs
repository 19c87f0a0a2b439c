//! The futex hook's wait table: the moss-side waiters of every futex word,
//! in FIFO order per word, for `hooks_futex.rs` (which has the protocol).
//!
//! 256 buckets hashed by address, each behind a small lock that waits
//! through the *real* futex (never through the hook), with a count of its
//! waiters that wakers read without the lock. Inside a bucket, waiters are
//! nodes of a slab (a `Vec` with a free list), linked into one doubly
//! linked queue per address; a map from address to queue finds it:
//!
//! ```text
//! queues: addr A ─▶ { head, tail }      nodes: [0] A, prev NIL, next 2
//!         addr B ─▶ { head, tail }             [1] B, prev NIL, next NIL
//!                                              [2] A, prev 0,   next NIL
//!                                              [3] free ─▶ next free ...
//! ```
//!
//! So every operation costs O(1) plus the waiters it returns: enqueueing,
//! a waiter removing itself (timeout, cancellation), and a wake of `n`
//! waiters with a matching bitset (std always waits with "match any").
//! Nothing is scanned per wake, and nothing outlives its wait: a node is
//! freed when its waiter is woken or leaves, and an address's queue goes
//! with its last waiter. A waiter holds a [`Slot`] (index and unique id),
//! so a node reused by a later wait is never mistaken for its own. Memory
//! is bounded by the most waiters a bucket ever had at once.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use moss_runtime::park::Unparker;

use super::real;

const BUCKETS: usize = 256;
const NIL: u32 = u32::MAX;
/// A bucket that empties with more nodes than this gives their memory back.
const KEEP_NODES: usize = 256;

/// A lock for the buckets that waits through the real futex, so that
/// contention on it never re-enters the hook.
///
/// # Invariants
/// 0 unlocked, 1 locked, 2 locked with (possible) sleepers.
pub(super) struct RawLock(AtomicU32);

impl RawLock {
    const fn new() -> RawLock {
        RawLock(AtomicU32::new(0))
    }

    #[inline]
    fn lock(&self) {
        if self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..100 {
            if self.0.load(Ordering::Relaxed) == 0
                && self
                    .0
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        while self.0.swap(2, Ordering::Acquire) != 0 {
            real::keep_errno(|| {
                super::hooks_futex::real_futex(
                    self.0.as_ptr() as usize,
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    2,
                    0,
                    0,
                    0,
                )
            });
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            real::keep_errno(|| {
                super::hooks_futex::real_futex(
                    self.0.as_ptr() as usize,
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1,
                    0,
                    0,
                    0,
                )
            });
        }
    }
}

/// Addresses are already spread by the bucket hash; one multiply mixes
/// them for the map (no per-process random state to set up in a hook).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Where a waiter's node is: its index and the wait's unique id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Slot {
    index: u32,
    id: u64,
}

struct Node {
    addr: usize,
    bitset: u32,
    /// The wait's id; 0 while the node is free.
    id: u64,
    /// The waiting thread's tag (purged when the thread exits).
    thread: u64,
    unparker: Option<Unparker>,
    prev: u32,
    /// The next node of the queue, or of the free list.
    next: u32,
}

#[derive(Clone, Copy)]
struct Queue {
    head: u32,
    tail: u32,
    /// A thread's std parker word: a wake takes every waiter.
    parker: bool,
    /// The waiter keeping watch over a parker word (see `hooks_futex.rs`),
    /// or `NIL`.
    watcher: u32,
}

/// One bucket's waiters.
pub(super) struct Waiters {
    nodes: Vec<Node>,
    free: u32,
    queues: HashMap<usize, Queue, BuildHasherDefault<AddrHasher>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Waiters {
    const fn new() -> Waiters {
        Waiters {
            nodes: Vec::new(),
            free: NIL,
            queues: HashMap::with_hasher(BuildHasherDefault::new()),
        }
    }

    /// Appends a waiter to `addr`'s queue (`parker`: that address is a
    /// thread's std parker word).
    pub(super) fn push(
        &mut self,
        addr: usize,
        bitset: u32,
        thread: u64,
        parker: bool,
        unparker: Unparker,
    ) -> Slot {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let q = self.queues.entry(addr).or_insert(Queue {
            head: NIL,
            tail: NIL,
            parker,
            watcher: NIL,
        });
        let node = Node {
            addr,
            bitset,
            id,
            thread,
            unparker: Some(unparker),
            prev: q.tail,
            next: NIL,
        };
        let index = if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 waiters per bucket")
        };
        // `q` borrowed `self.queues` only; re-fetch it after the slab grew.
        let q = self.queues.get_mut(&addr).expect("just inserted");
        if q.tail == NIL {
            q.head = index;
        } else {
            self.nodes[q.tail as usize].next = index;
        }
        q.tail = index;
        Slot { index, id }
    }

    fn live(&self, s: Slot) -> bool {
        self.nodes
            .get(s.index as usize)
            .is_some_and(|n| n.id == s.id)
    }

    /// Whether the waiter is still queued (no waker took it).
    pub(super) fn is_queued(&self, s: Slot) -> bool {
        self.live(s)
    }

    /// Takes the waiter out of its queue if it is still there; whether it was.
    pub(super) fn remove(&mut self, s: Slot) -> bool {
        if !self.live(s) {
            return false;
        }
        self.unlink(s.index);
        true
    }

    /// Makes the queued waiter `s` of `addr` the queue's watcher if it has
    /// none; whether `s` is the watcher now.
    pub(super) fn claim_watch(&mut self, addr: usize, s: Slot) -> bool {
        if !self.live(s) {
            return false;
        }
        match self.queues.get_mut(&addr) {
            Some(q) if q.watcher == NIL || q.watcher == s.index => {
                q.watcher = s.index;
                true
            }
            _ => false,
        }
    }

    /// Whether the queued waiter `s` of `addr` is the queue's watcher.
    pub(super) fn is_watcher(&self, addr: usize, s: Slot) -> bool {
        self.live(s) && self.queues.get(&addr).is_some_and(|q| q.watcher == s.index)
    }

    /// If `addr`'s queue has waiters but no watcher (it left), makes the
    /// oldest the watcher; its unparker, to tell it.
    pub(super) fn hand_watch(&mut self, addr: usize) -> Option<Unparker> {
        let q = self.queues.get_mut(&addr)?;
        if q.watcher != NIL {
            return None;
        }
        q.watcher = q.head;
        self.nodes[q.head as usize].unparker.clone()
    }

    /// Removes up to `want` waiters of `addr` whose bitset matches (oldest
    /// first; every waiter of a parker word), adding their unparkers to
    /// `out`. Returns whether `addr` is a parker word.
    pub(super) fn take(
        &mut self,
        addr: usize,
        want: usize,
        bitset: u32,
        out: &mut Vec<Unparker>,
    ) -> bool {
        let Some(&q) = self.queues.get(&addr) else {
            return false;
        };
        let want = if q.parker { usize::MAX } else { want };
        let mut taken = 0;
        let mut i = q.head;
        while i != NIL && taken < want {
            let next = self.nodes[i as usize].next;
            if self.nodes[i as usize].bitset & bitset != 0 {
                if let Some(u) = self.unlink(i) {
                    out.push(u);
                }
                taken += 1;
            }
            i = next;
        }
        q.parker
    }

    /// Removes every waiter of thread `tag`; how many.
    pub(super) fn purge_thread(&mut self, tag: u64) -> usize {
        let mut gone = 0;
        let mut i = 0;
        // `unlink` may free the whole slab once the last waiter is gone.
        while i < self.nodes.len() {
            if self.nodes[i].id != 0 && self.nodes[i].thread == tag {
                self.unlink(i as u32);
                gone += 1;
            }
            i += 1;
        }
        gone
    }

    /// Renews the unparker of a queued waiter that parks again.
    pub(super) fn set_unparker(&mut self, s: Slot, u: Unparker) {
        if let Some(n) = self.nodes.get_mut(s.index as usize)
            && n.id == s.id
        {
            n.unparker = Some(u);
        }
    }

    /// Unlinks node `i` from its queue and frees it; its unparker.
    fn unlink(&mut self, i: u32) -> Option<Unparker> {
        let (addr, prev, next) = {
            let n = &self.nodes[i as usize];
            (n.addr, n.prev, n.next)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if let Some(q) = self.queues.get_mut(&addr) {
            if q.head == i {
                q.head = next;
            }
            if q.tail == i {
                q.tail = prev;
            }
            if q.watcher == i {
                q.watcher = NIL;
            }
            if q.head == NIL {
                self.queues.remove(&addr);
            }
        }
        let n = &mut self.nodes[i as usize];
        n.id = 0;
        n.next = self.free;
        self.free = i;
        let u = n.unparker.take();
        if self.queues.is_empty() && self.nodes.len() > KEEP_NODES {
            // Empty after a crowd: give the memory back.
            self.nodes = Vec::new();
            self.free = NIL;
            self.queues = HashMap::default();
        }
        u
    }
}

pub(super) struct Bucket {
    lock: RawLock,
    /// Queued waiters, plus waiters between announcing themselves and
    /// enqueueing. Wakers skip the bucket when it is 0 (see the protocol
    /// in `hooks_futex.rs`).
    pub(super) count: AtomicUsize,
    waiters: UnsafeCell<Waiters>,
}

// SAFETY: `waiters` is only accessed through a `Locked` guard, i.e. with
// `lock` held; the other fields are atomics.
unsafe impl Sync for Bucket {}

static TABLE: [Bucket; BUCKETS] = [const {
    Bucket {
        lock: RawLock::new(),
        count: AtomicUsize::new(0),
        waiters: UnsafeCell::new(Waiters::new()),
    }
}; BUCKETS];

/// The bucket of `addr`.
pub(super) fn bucket(addr: usize) -> &'static Bucket {
    let h = ((addr as u64) >> 2).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    &TABLE[h as usize % BUCKETS]
}

/// Every bucket.
pub(super) fn buckets() -> &'static [Bucket] {
    &TABLE
}

/// A bucket's waiters, locked.
pub(super) struct Locked(&'static Bucket);

impl Bucket {
    pub(super) fn locked(&'static self) -> Locked {
        self.lock.lock();
        Locked(self)
    }
}

impl Locked {
    /// The bucket locked.
    pub(super) fn bucket(&self) -> &'static Bucket {
        self.0
    }
}

impl std::ops::Deref for Locked {
    type Target = Waiters;
    fn deref(&self) -> &Waiters {
        // SAFETY: the lock is held for the guard's life (type invariant of
        // `Bucket`), so no other reference to the waiters exists.
        unsafe { &*self.0.waiters.get() }
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut Waiters {
        // SAFETY: as in `deref`.
        unsafe { &mut *self.0.waiters.get() }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        self.0.lock.unlock();
    }
}

/// In a forked child only the forking thread exists: every waiter belongs
/// to a context that will never run here, and a bucket lock may have been
/// held by a thread that is gone. Waiters are leaked, not dropped (their
/// unparkers belong to the parent's hubs).
pub(super) fn forget_all_after_fork() {
    for b in &TABLE {
        b.lock.0.store(0, Ordering::SeqCst);
        b.count.store(0, Ordering::SeqCst);
        // SAFETY: single-threaded child, and the lock was just reset: no
        // other reference to the waiters exists.
        std::mem::forget(std::mem::replace(
            unsafe { &mut *b.waiters.get() },
            Waiters::new(),
        ));
    }
}
