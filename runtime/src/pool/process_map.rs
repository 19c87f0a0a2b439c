//! The map family of [`ProcessPool`]: `map` with a chunk size,
//! `imap` and `imap_unordered` ([`ProcessImap`]), and `map_async`.
//!
//! Items travel in chunks: one task is `Vec<A>` in, `Vec<R>` out (the
//! `call_batch` trampoline), so a chunk counts as one task for
//! `max_tasks_per_child`, and a failure (a panic, a dying worker) fails
//! every item of its chunk.
//!
//! # imap
//!
//! ```text
//!   items ──take chunksize──▶ submit ──▶ [chunk 0][chunk 1]...[chunk w-1]   (in flight, w = 2 × workers)
//!                                            │ imap: wait for the oldest
//!                                            │ imap_unordered: wait for any
//!                                            ▼
//!   next() ◀── results of that chunk, one by one; then the window is refilled
//! ```
//!
//! The input is consumed lazily, a window of chunks ahead of the caller: an
//! endless iterator works, and memory stays bounded. A chunk leaves the
//! window only once its reply is there, so a `kill` or `timeout` of a
//! caller waiting in `next` loses nothing: the next call picks up where it
//! stopped. Dropping the iterator drops the results of the chunks still in
//! flight (they still run).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::PoolError;
use super::process_pool::{ProcessPool, Reply, call_batch, decode_reply};
use crate::park;
use crate::sync::AsyncResult;

impl ProcessPool {
    /// [`map`](Self::map) with `chunksize` items per task (Python's
    /// `map(func, iterable, chunksize)`; 0 is taken as 1). Larger chunks
    /// cost fewer round trips for small tasks; smaller ones balance uneven
    /// tasks better.
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let replies = self.submit_chunks(f, items.into_iter().collect(), chunksize.max(1), 0)?;
        concat_chunks(&replies)
    }

    /// Submits `items` in chunks of `chunksize` (at least 1), the first
    /// counting `extra` more outstanding items for `join` (a callback).
    pub(crate) fn submit_chunks<A, R>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
        extra: usize,
    ) -> Result<Vec<Arc<Reply>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let mut replies = Vec::with_capacity(items.len().div_ceil(chunksize));
        let mut it = items.into_iter();
        let mut extra = extra;
        loop {
            let part: Vec<A> = it.by_ref().take(chunksize).collect();
            if part.is_empty() {
                return Ok(replies);
            }
            replies.push(self.submit_counting(call_batch::<A, R>, f as usize, &part, 1 + extra)?);
            extra = 0;
        }
    }

    /// Applies `f` to every item in the workers, yielding the results in
    /// input order as they arrive (Python's `imap`): the first result is
    /// there as soon as its task is done, whatever the others do. The input
    /// is consumed lazily, a window of tasks ahead of the caller (endless
    /// iterators work). One item per task; see
    /// [`ProcessImap::chunksize`]. A failed task is an `Err` item; the
    /// others go on.
    ///
    /// ```
    /// use moss::pool::ProcessPool;
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = ProcessPool::new(2).unwrap();
    /// let mut it = pool.imap(square, 1..);     // an endless input
    /// assert_eq!(it.next().unwrap().unwrap(), 1);
    /// let next: Vec<u64> = it.take(3).map(Result::unwrap).collect();
    /// assert_eq!(next, [4, 9, 16]);
    /// ```
    pub fn imap<I, R>(&self, f: fn(I::Item) -> R, items: I) -> ProcessImap<I::IntoIter, R>
    where
        I: IntoIterator,
        I::Item: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        ProcessImap::new(self.clone(), f, items.into_iter(), true)
    }

    /// [`imap`](Self::imap), yielding each result as soon as its task is
    /// done, in whatever order they finish (Python's `imap_unordered`).
    pub fn imap_unordered<I, R>(&self, f: fn(I::Item) -> R, items: I) -> ProcessImap<I::IntoIter, R>
    where
        I: IntoIterator,
        I::Item: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        ProcessImap::new(self.clone(), f, items.into_iter(), false)
    }

    /// [`map`](Self::map) without waiting (Python's `map_async`): when
    /// every result is there, `callback(&results)` runs in a coroutine on
    /// the caller's hub (not for an error), then the returned
    /// [`AsyncResult`] becomes ready with the results in input order or the
    /// first error. Callbacks behave as in
    /// [`apply_async`](Self::apply_async).
    pub fn map_async<A, R, C>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        callback: C,
    ) -> AsyncResult<Result<Vec<R>, PoolError>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(&Vec<R>) + 'static,
    {
        self.map_async_with(f, items, callback, |_: &PoolError| {})
    }

    /// [`map_async`](Self::map_async) with an `error_callback` too (Python's
    /// `error_callback=`): it runs instead of `callback`, with the error,
    /// when the map fails.
    pub fn map_async_with<A, R, C, E>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        callback: C,
        error_callback: E,
    ) -> AsyncResult<Result<Vec<R>, PoolError>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(&Vec<R>) + 'static,
        E: FnOnce(&PoolError) + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = self.default_chunksize(items.len());
        // The first chunk also counts the callback for `join`.
        let replies = self.submit_chunks(f, items, chunksize, 1);
        self.spawn_async(replies, concat_chunks::<R>, callback, error_callback)
    }

    /// The pool's chunk size for `map`, or Python's default: about four
    /// chunks per worker.
    pub(crate) fn default_chunksize(&self, n: usize) -> usize {
        if let Some(c) = self.shared.config.chunksize {
            return c;
        }
        n.div_ceil(4 * self.size()).max(1)
    }
}

/// The results of chunk replies that have all arrived, in order, or the
/// first error.
pub(crate) fn concat_chunks<R: DeserializeOwned>(
    replies: &[Arc<Reply>],
) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::new();
    for r in replies {
        r.wait(None, "process pool task");
        out.extend(decode_reply::<Vec<R>>(r)?);
    }
    Ok(out)
}

/// A chunk in flight: its reply (or why it could not be submitted) and how
/// many items it holds.
struct Chunk {
    reply: Result<Arc<Reply>, PoolError>,
    len: usize,
}

impl Chunk {
    fn is_ready(&self) -> bool {
        self.reply.as_ref().map_or(true, |r| r.is_set())
    }
}

/// The iterator of [`ProcessPool::imap`] and
/// [`ProcessPool::imap_unordered`]: `Result<R, PoolError>` per item.
pub struct ProcessImap<I: Iterator, R> {
    pool: ProcessPool,
    f: fn(I::Item) -> R,
    /// `None` once exhausted (or once a submit failed).
    items: Option<I>,
    chunksize: usize,
    ordered: bool,
    in_flight: VecDeque<Chunk>,
    out: VecDeque<Result<R, PoolError>>,
}

impl<I, R> ProcessImap<I, R>
where
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    fn new(pool: ProcessPool, f: fn(I::Item) -> R, items: I, ordered: bool) -> Self {
        let chunksize = pool.shared.config.chunksize.unwrap_or(1);
        ProcessImap {
            pool,
            f,
            items: Some(items),
            chunksize,
            ordered,
            in_flight: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// Sends `n` items per task from now on (Python's `chunksize`; 0 is
    /// taken as 1; default 1, or the pool's
    /// [`chunksize`](super::ProcessPoolBuilder::chunksize)). Results still come one item at a time, a
    /// chunk's all at once.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    /// Keeps twice as many chunks in flight as the pool has workers.
    fn fill(&mut self) {
        let window = 2 * self.pool.size();
        while self.in_flight.len() < window {
            let Some(items) = self.items.as_mut() else {
                return;
            };
            let part: Vec<I::Item> = items.by_ref().take(self.chunksize).collect();
            if part.is_empty() {
                self.items = None;
                return;
            }
            let len = part.len();
            let reply =
                self.pool
                    .submit_counting(call_batch::<I::Item, R>, self.f as usize, &part, 1);
            if reply.is_err() {
                self.items = None; // every later submit would fail too
            }
            self.in_flight.push_back(Chunk { reply, len });
        }
    }

    /// Waits until some chunk in flight has its reply; its index. A `kill`
    /// of the caller unwinds it, with every chunk still in flight.
    fn wait_any(&self) -> usize {
        loop {
            if let Some(k) = self.in_flight.iter().position(Chunk::is_ready) {
                return k;
            }
            let u = park::unparker();
            let mut ready = false;
            for c in &self.in_flight {
                if let Ok(r) = &c.reply {
                    ready |= r.watch(&u);
                }
            }
            if !ready {
                park::park_cancellable(None, "process pool imap_unordered");
            }
        }
    }
}

impl<I, R> Iterator for ProcessImap<I, R>
where
    I: Iterator,
    I::Item: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Result<R, PoolError>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Some(r);
            }
            self.fill();
            if self.in_flight.is_empty() {
                return None;
            }
            let k = if self.ordered {
                if let Ok(r) = &self.in_flight[0].reply {
                    r.wait(None, "process pool imap");
                }
                0
            } else {
                self.wait_any()
            };
            // Out of the window only now that its reply is there.
            let chunk = self.in_flight.remove(k).expect("an index in the window");
            match chunk.reply.and_then(|r| decode_reply::<Vec<R>>(&r)) {
                Ok(v) => self.out.extend(v.into_iter().map(Ok)),
                Err(e) => self.out.extend((0..chunk.len).map(|_| Err(e.clone()))),
            }
        }
    }
}

impl<I: Iterator, R> fmt::Debug for ProcessImap<I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessImap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("chunks_in_flight", &self.in_flight.len())
            .field("results_ready", &self.out.len())
            .finish()
    }
}
