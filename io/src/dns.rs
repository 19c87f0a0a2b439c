//! Name resolution off the hub.
//!
//! `getaddrinfo` blocks its thread, possibly for seconds. moss runs it on a
//! few resolver threads of its own and parks the asking context until the
//! answer is there, so the other coroutines of its hub keep running.
//!
//! The mechanism is deliberately small and private: a job queue served by up
//! to [`MAX_WORKERS`] threads started on demand (they stay for the life of
//! the process), and a result slot plus an [`Unparker`] per job. It is the
//! only place here that runs blocking code on another thread, so it can later
//! be swapped for the runtime's general thread pool without touching callers.
//!
//! A coroutine killed while it waits unwinds at once; its job still finishes
//! on the resolver thread and the answer is dropped.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use moss_runtime::park::{self, Unparker, Wakeup};

/// Resolver threads at most.
const MAX_WORKERS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: Mutex<PoolState>,
    ready: Condvar,
}

struct PoolState {
    jobs: VecDeque<Job>,
    workers: usize,
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        queue: Mutex::new(PoolState {
            jobs: VecDeque::new(),
            workers: 0,
            idle: 0,
        }),
        ready: Condvar::new(),
    })
}

fn worker(pool: &'static Pool) {
    let mut st = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            job();
            st = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        } else {
            st.idle += 1;
            st = pool.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
        }
    }
}

fn submit(job: Job) -> io::Result<()> {
    let pool = pool();
    let mut st = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    st.jobs.push_back(job);
    if st.idle == 0 && st.workers < MAX_WORKERS {
        let spawned = std::thread::Builder::new()
            .name("moss-resolver".into())
            .spawn(move || worker(pool));
        match spawned {
            Ok(_) => st.workers += 1,
            // Busy workers will pick the job up; with none, fail it now
            // rather than leave the caller waiting forever.
            Err(e) if st.workers == 0 => {
                st.jobs.pop_back();
                return Err(e);
            }
            Err(_) => {}
        }
    } else {
        pool.ready.notify_one();
    }
    Ok(())
}

/// Runs `f` on a resolver thread and parks the caller until it returns.
/// Cancellation (kill, `timeout`) unwinds the caller at once.
fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let unparker: Unparker = park::unparker();
    let s = slot.clone();
    submit(Box::new(move || {
        let v = f();
        *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        unparker.unpark();
    }))?;
    loop {
        if let Some(v) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(v);
        }
        // Spurious wake-ups are possible: loop and re-check the slot.
        if park::park(None, "DNS lookup") == Wakeup::Cancelled {
            park::deliver_cancel();
        }
    }
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
/// let addrs: Vec<_> = moss_io::net::lookup_host("localhost:80").unwrap().collect();
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
