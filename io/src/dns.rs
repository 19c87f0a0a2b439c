//! Name resolution off the hub.
//!
//! `getaddrinfo` blocks its thread, possibly for seconds. moss runs it on a
//! [`ThreadPool`] of [`MAX_WORKERS`] resolver threads (started on demand,
//! kept for the life of the process) and parks the asking context until the
//! answer is there, so the other coroutines of its hub keep running. A
//! forked child (a `Process` body) starts its own resolver threads: the pool
//! is fork-safe. `getaddrinfo` itself is not: glibc's NSS modules take
//! locks that no fork handler resets, so a child forked while a resolver
//! thread held one would wait on it forever in its own first lookup. The
//! lookups therefore run inside `without_fork`, and moss's forks (`Process`,
//! `ProcessPool` workers) wait for the lookups in flight.
//!
//! A coroutine killed while it waits unwinds at once; its job still finishes
//! on the resolver thread and the answer is dropped.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};

use moss_runtime::pool::ThreadPool;
use moss_runtime::sys::{ForkSafeOnceLock, without_fork};

/// Resolver threads at most.
const MAX_WORKERS: usize = 4;

/// The resolver pool, made on first use: a child forked while another
/// thread made it makes its own (std's `OnceLock` would wait for ever).
fn pool() -> &'static ThreadPool {
    static POOL: ForkSafeOnceLock<ThreadPool> = ForkSafeOnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(MAX_WORKERS))
}

/// Runs `f` on a resolver thread and parks the caller until it returns.
/// Cancellation (kill, `timeout`) unwinds the caller at once.
fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    pool().apply(f).map_err(io::Error::from)
}

/// Resolves `"host:port"` with the system resolver, off the hub.
pub(crate) fn resolve(host_port: String) -> io::Result<std::vec::IntoIter<SocketAddr>> {
    let v = run_blocking(move || {
        without_fork(|| host_port.as_str().to_socket_addrs().map(|i| i.collect()))
    })??;
    let v: Vec<SocketAddr> = v;
    Ok(v.into_iter())
}

/// Resolves `"host:port"` (or an `"ip:port"` literal) to socket addresses,
/// without blocking the hub: the system resolver runs on a helper thread
/// while the calling coroutine is parked.
///
/// ```
/// let addrs: Vec<_> = moss::net::lookup_host("localhost:80").unwrap().collect();
/// assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
/// ```
pub fn lookup_host(host_port: &str) -> io::Result<impl Iterator<Item = SocketAddr> + use<>> {
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return Ok(vec![a].into_iter());
    }
    resolve(host_port.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::{Duration, Instant};

    #[test]
    fn blocking_work_runs_off_the_hub() {
        // Four blocking calls from four coroutines meet inside the resolver
        // threads (so they overlap), and each then waits, blocking its
        // thread, for a message that a coroutine of this hub sends only
        // after all four have met. Were the hub's thread blocked by any of
        // them, the message could never be sent and every call would end at
        // its 20 s limit with `false`: events, not tick rates, so a loaded
        // machine cannot make it flaky.
        let met = Arc::new(AtomicUsize::new(0));
        let limit = Duration::from_secs(20);
        let (txs, hs): (Vec<_>, Vec<_>) = (0..4)
            .map(|i| {
                let (tx, rx) = mpsc::channel::<()>();
                let met = met.clone();
                let h = moss_runtime::spawn(move || {
                    super::run_blocking(move || {
                        met.fetch_add(1, Ordering::SeqCst);
                        let t = Instant::now();
                        while met.load(Ordering::SeqCst) < 4 && t.elapsed() < limit {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        let all_met = met.load(Ordering::SeqCst) == 4;
                        (i * 2, all_met && rx.recv_timeout(limit).is_ok())
                    })
                    .unwrap()
                });
                (tx, h)
            })
            .unzip();
        let sender = moss_runtime::spawn(move || {
            let t = Instant::now();
            while met.load(Ordering::SeqCst) < 4 && t.elapsed() < limit {
                moss_runtime::sleep(Duration::from_millis(1));
            }
            for tx in txs {
                let _ = tx.send(());
            }
        });
        let v: Vec<(i32, bool)> = moss_runtime::join_all(hs)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        sender.join().unwrap();
        assert_eq!(v, [(0, true), (2, true), (4, true), (6, true)]);
    }
}
