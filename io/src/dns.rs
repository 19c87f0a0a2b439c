//! Name resolution off the hub.
//!
//! `getaddrinfo` blocks its thread, possibly for seconds. moss runs it on a
//! [`ThreadPool`] of [`MAX_WORKERS`] resolver threads (started on demand,
//! kept for the life of the process) and parks the asking context until the
//! answer is there, so the other coroutines of its hub keep running. A
//! forked child (a `Process` body) starts its own resolver threads: the pool
//! is fork-safe.
//!
//! A coroutine killed while it waits unwinds at once; its job still finishes
//! on the resolver thread and the answer is dropped.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::OnceLock;

use moss_runtime::pool::ThreadPool;

/// Resolver threads at most.
const MAX_WORKERS: usize = 4;

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(MAX_WORKERS))
}

/// Runs `f` on a resolver thread and parks the caller until it returns.
/// Cancellation (kill, `timeout`) unwinds the caller at once.
fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    pool().apply(f).map_err(io::Error::from)
}

/// Resolves `"host:port"` with the system resolver, off the hub.
pub(crate) fn resolve(host_port: String) -> io::Result<std::vec::IntoIter<SocketAddr>> {
    let v = run_blocking(move || host_port.as_str().to_socket_addrs().map(|i| i.collect()))??;
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
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    #[test]
    fn blocking_work_runs_off_the_hub() {
        // Four 200 ms blocking calls from four coroutines overlap with each
        // other and with a ticker on the hub.
        let ticks = Rc::new(Cell::new(0));
        let t2 = ticks.clone();
        let ticker = moss_runtime::spawn(move || {
            for _ in 0..10 {
                moss_runtime::sleep(Duration::from_millis(10));
                t2.set(t2.get() + 1);
            }
        });
        let t = Instant::now();
        let hs: Vec<_> = (0..4)
            .map(|i| {
                moss_runtime::spawn(move || {
                    super::run_blocking(move || {
                        std::thread::sleep(Duration::from_millis(200));
                        i * 2
                    })
                    .unwrap()
                })
            })
            .collect();
        let v: Vec<i32> = moss_runtime::join_all(hs)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(v, [0, 2, 4, 6]);
        let el = t.elapsed();
        assert!(
            el < Duration::from_millis(700),
            "blocking calls did not overlap: {el:?}"
        );
        assert!(
            ticks.get() >= 5,
            "the hub was blocked: {} ticks",
            ticks.get()
        );
        ticker.join().unwrap();
    }
}
