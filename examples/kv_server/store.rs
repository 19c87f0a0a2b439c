//! The key space: byte-string keys and values with optional expiry,
//! shared by every hub thread of the server.
//!
//! # Sharing
//!
//! The map is split into a power-of-two number of shards, each a
//! `HashMap` behind a `std::sync::Mutex`; a key's shard comes from a cheap
//! hash of its bytes (the map inside keeps std's keyed SipHash, so crafted
//! keys can at worst crowd one shard, never degrade a map). Critical
//! sections never block or yield: a command locks one shard, looks up or
//! updates one entry, copies a small value out, and unlocks. That is why a
//! thread-blocking `std::sync::Mutex` is right here and a coroutine-parking
//! `moss::sync::Mutex` is not: a holder never waits on anything, so a
//! contended lock is released within nanoseconds, sooner than a park and
//! wake-up would take. The shard count was chosen by measurement (see the
//! example's module docs).
//!
//! Values are `Arc<[u8]>`: a GET copies a small value out under the lock,
//! and only clones the `Arc` of a large one, copying it after unlocking, so
//! a 64 MiB value never holds a shard for milliseconds.
//!
//! # Expiry
//!
//! Deadlines are milliseconds on the store's monotonic clock. An expired
//! key is removed when a command touches it (so it is never seen), and each
//! shard keeps a min-heap of deadlines from which [`Store::sweep`] (run
//! periodically by every hub) and `DBSIZE` reclaim keys nobody touches. A
//! heap entry whose key was since deleted or given another deadline is
//! skipped when popped; the heap is rebuilt when such stale entries
//! outnumber the live ones, so rewriting one key's TTL forever cannot grow
//! it without bound.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Values at most this long are copied out under the shard lock.
const COPY_UNDER_LOCK: usize = 16 * 1024;

/// Expired keys one sweep reclaims per shard at most (the rest wait for
/// the next sweep or for a command that touches them).
const SWEEP_BUDGET: usize = 1000;

struct Entry {
    value: Arc<[u8]>,
    /// Deadline in store milliseconds; 0 means none.
    expires: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    /// `(deadline, key)` of keys that had that deadline when pushed.
    deadlines: BinaryHeap<Reverse<(u64, Box<[u8]>)>>,
    /// Keys in `map` with a deadline.
    volatile: usize,
}

/// A key's time to live, as TTL/PTTL report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Persistent,
    Millis(u64),
}

/// Why INCR failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    NotAnInteger,
    Overflow,
}

/// SET's conditions and expiry.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions {
    /// Only if the key does not exist (NX).
    pub if_missing: bool,
    /// Only if the key exists (XX).
    pub if_present: bool,
    /// Keep the key's current deadline (KEEPTTL).
    pub keep_ttl: bool,
    /// Expire after this many milliseconds (EX, PX).
    pub ttl_ms: Option<u64>,
}

/// EXPIRE's conditions; each one set must hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpireCond {
    /// Only if the key has no deadline (NX).
    pub nx: bool,
    /// Only if it has one (XX).
    pub xx: bool,
    /// Only if the new deadline is later (GT; none counts as infinite).
    pub gt: bool,
    /// Only if it is earlier (LT; none counts as infinite).
    pub lt: bool,
}

/// The shared key space.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
}

impl Store {
    /// A store of `shards` shards (rounded up to a power of two, at least 1).
    pub fn new(shards: usize) -> Store {
        let n = shards.clamp(1, 1 << 16).next_power_of_two();
        Store {
            shards: (0..n).map(|_| Mutex::default()).collect(),
            epoch: Instant::now(),
        }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Now, in store milliseconds (never 0, which means "no deadline").
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let i = if self.shards.len() == 1 {
            0
        } else {
            // FNV-1a: spreads keys, costs a few ns for short ones.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in key {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
            (h ^ (h >> 32)) as usize & (self.shards.len() - 1)
        };
        lock(&self.shards[i])
    }

    /// Appends GET's reply for `key` (a bulk or nil) to `out`.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) {
        let big = {
            let mut sh = self.shard(key);
            // One lookup on the usual paths; a second only to remove an
            // expired key.
            match sh.map.get(key) {
                None => return super::resp::nil(out),
                Some(e) if !self.expired(e) => {
                    if e.value.len() <= COPY_UNDER_LOCK {
                        return super::resp::bulk(out, &e.value);
                    }
                    e.value.clone()
                }
                Some(_) => {
                    sh.remove(key);
                    return super::resp::nil(out);
                }
            }
        };
        super::resp::bulk(out, &big);
    }

    fn expired(&self, e: &Entry) -> bool {
        e.expires != 0 && e.expires <= self.now()
    }

    /// SET: returns whether the value was stored (NX/XX may refuse).
    pub fn set(&self, key: &[u8], value: &[u8], o: SetOptions) -> bool {
        let deadline = o.ttl_ms.map(|ms| self.now().saturating_add(ms));
        let mut guard = self.shard(key);
        let sh = &mut *guard;
        // The usual case, a live key without a deadline replaced by a
        // value without one: one lookup, no heap work.
        if let Some(e) = sh.map.get_mut(key)
            && e.expires == 0
            && deadline.is_none()
            && !o.if_missing
        {
            e.value = Arc::from(value);
            return true;
        }
        let old = sh.live(key, self).map(|e| e.expires);
        if (o.if_missing && old.is_some()) || (o.if_present && old.is_none()) {
            return false;
        }
        let expires = match (deadline, o.keep_ttl) {
            (Some(d), _) => d,
            (None, true) => old.unwrap_or(0),
            (None, false) => 0,
        };
        sh.put(key, Arc::from(value), expires);
        true
    }

    /// DEL of one key: whether it existed.
    pub fn del(&self, key: &[u8]) -> bool {
        let mut sh = self.shard(key);
        sh.live(key, self).is_some() && sh.remove(key)
    }

    /// EXISTS of one key.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.shard(key).live(key, self).is_some()
    }

    /// INCRBY: the new value. A missing key counts as 0; the deadline stays.
    pub fn incr(&self, key: &[u8], by: i64) -> Result<i64, IncrError> {
        let mut sh = self.shard(key);
        let (cur, expires) = match sh.live(key, self) {
            None => (0, 0),
            Some(e) => (
                super::resp::parse_i64(&e.value).ok_or(IncrError::NotAnInteger)?,
                e.expires,
            ),
        };
        let new = cur.checked_add(by).ok_or(IncrError::Overflow)?;
        let mut text = Vec::with_capacity(20);
        super::resp::push_i64(&mut text, new);
        sh.put(key, Arc::from(text), expires);
        Ok(new)
    }

    /// EXPIRE/PEXPIRE with a relative time in ms (`None`: in the past, the
    /// key goes now). Returns whether the deadline was set (or the key
    /// deleted).
    pub fn expire(&self, key: &[u8], ms: Option<u64>, c: ExpireCond) -> bool {
        let now = self.now();
        let mut sh = self.shard(key);
        let Some(cur) = sh.live(key, self).map(|e| e.expires) else {
            return false;
        };
        // A missing deadline counts as infinite for GT and LT, as in Redis.
        let new = ms.map_or(0, |ms| now.saturating_add(ms));
        let refused = (c.nx && cur != 0)
            || (c.xx && cur == 0)
            || (c.gt && (cur == 0 || ms.is_none() || new <= cur))
            || (c.lt && cur != 0 && ms.is_some() && new >= cur);
        if refused {
            return false;
        }
        if ms.is_none() {
            return sh.remove(key);
        }
        let value = sh.map[key].value.clone();
        sh.put(key, value, new);
        true
    }

    /// TTL/PTTL of `key`.
    pub fn ttl(&self, key: &[u8]) -> Ttl {
        let now = self.now();
        match self.shard(key).live(key, self).map(|e| e.expires) {
            None => Ttl::Missing,
            Some(0) => Ttl::Persistent,
            Some(d) => Ttl::Millis(d.saturating_sub(now)),
        }
    }

    /// FLUSHALL. The old maps are freed after their locks are released.
    pub fn flush(&self) {
        for s in self.shards.iter() {
            let old = std::mem::take(&mut *lock(s));
            drop(old);
        }
    }

    /// DBSIZE: live keys (expired ones are reclaimed first).
    pub fn len(&self) -> usize {
        let now = self.now();
        self.shards
            .iter()
            .map(|s| {
                let mut sh = lock(s);
                sh.reclaim(now, usize::MAX);
                sh.map.len()
            })
            .sum()
    }

    /// Keys held, expired or not (what the sweeper has not reclaimed yet).
    #[cfg(test)]
    pub fn stored(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Reclaims expired keys of shards `first, first + step, ...`, at most
    /// a fixed budget per shard. Returns how many it removed.
    pub fn sweep(&self, first: usize, step: usize) -> usize {
        let now = self.now();
        self.shards
            .iter()
            .skip(first)
            .step_by(step.max(1))
            .map(|s| lock(s).reclaim(now, SWEEP_BUDGET))
            .sum()
    }
}

/// A shard's lock. A panic while it was held (it cannot happen in this
/// file's critical sections, which do not panic) leaves a consistent map.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shard {
    /// The entry of `key` unless it is missing or expired (then removed).
    fn live(&mut self, key: &[u8], store: &Store) -> Option<&Entry> {
        let expires = self.map.get(key)?.expires;
        if expires != 0 && expires <= store.now() {
            self.remove(key);
            return None;
        }
        self.map.get(key)
    }

    /// Inserts or replaces `key`, keeping `volatile` and the heap in step.
    fn put(&mut self, key: &[u8], value: Arc<[u8]>, expires: u64) {
        let was_volatile = match self.map.get_mut(key) {
            Some(e) => {
                let v = e.expires != 0;
                if e.expires == expires {
                    // Same deadline (or none): the heap entry still holds.
                    e.value = value;
                    return;
                }
                e.value = value;
                e.expires = expires;
                v
            }
            None => {
                self.map.insert(key.into(), Entry { value, expires });
                false
            }
        };
        self.volatile = self.volatile + (expires != 0) as usize - was_volatile as usize;
        if expires != 0 {
            self.deadlines.push(Reverse((expires, key.into())));
            if self.deadlines.len() > 2 * self.volatile + 1024 {
                self.rebuild_heap();
            }
        }
    }

    /// Removes `key`; returns whether it was there.
    fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(e) => {
                self.volatile -= (e.expires != 0) as usize;
                if self.map.is_empty() {
                    self.deadlines.clear();
                }
                true
            }
            None => false,
        }
    }

    /// Pops due deadlines (at most `budget`), removing keys whose current
    /// deadline they still are. Returns the number of keys removed.
    fn reclaim(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            match self.deadlines.peek() {
                Some(Reverse((d, _))) if *d <= now => {}
                _ => break,
            }
            let Reverse((d, key)) = self.deadlines.pop().expect("peeked");
            if self.map.get(&key).is_some_and(|e| e.expires == d) {
                self.remove(&key);
                removed += 1;
            }
        }
        removed
    }

    /// Drops stale heap entries (keys deleted or given another deadline
    /// since) and duplicates. It runs once the heap holds more than twice
    /// the live deadlines plus a constant, and costs the heap's size: O(1)
    /// per push, amortised, however large the map.
    fn rebuild_heap(&mut self) {
        let mut v = std::mem::take(&mut self.deadlines).into_vec();
        v.retain(|Reverse((d, k))| self.map.get(k).is_some_and(|e| e.expires == *d));
        v.sort_unstable();
        v.dedup();
        self.deadlines = BinaryHeap::from(v);
    }
}
