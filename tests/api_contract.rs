//! The public names and shapes of DESIGN.md, used as a new user would: if a
//! signature drifts from the contract, this file stops compiling.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

mod util;

#[test]
fn coroutine_api() {
    let h: moss::JoinHandle<u32> = moss::spawn(|| 1);
    let id: moss::CoroutineId = h.id();
    assert_eq!(format!("{id}"), id.to_string());
    assert_eq!(h.name(), None);
    assert!(!h.is_finished());
    let r: Result<u32, moss::JoinError> = h.join();
    assert_eq!(r.unwrap(), 1);

    let later = moss::spawn_later(Duration::from_millis(1), || 2u8);
    let back: Result<Result<u8, moss::JoinError>, moss::JoinHandle<u8>> =
        later.join_timeout(Duration::ZERO);
    let later = back.unwrap_err();
    assert_eq!(later.join().unwrap(), 2);

    let b: std::io::Result<moss::JoinHandle<()>> = moss::Builder::new()
        .name("n")
        .stack_size(64 * 1024)
        .spawn(|| ());
    let b = b.unwrap();
    assert_eq!(b.name(), Some("n"));
    b.kill();
    let e: moss::JoinError = moss::spawn(|| panic!("x")).join().unwrap_err();
    let _: &dyn std::error::Error = &e;
    assert!(e.is_panic() && !e.is_killed());
    let _payload: Box<dyn std::any::Any + Send> = e.into_panic();

    let all: Vec<Result<i32, moss::JoinError>> =
        moss::join_all(vec![moss::spawn(|| 1), moss::spawn(|| 2)]);
    assert_eq!(all.len(), 2);
    moss::sleep(Duration::ZERO);
    moss::yield_now();
    let c: moss::Current = moss::current();
    let _: moss::CoroutineId = c.id();
    let _: Option<&str> = c.name();
    let t: Result<(), moss::Elapsed> = moss::timeout(Duration::from_millis(1), || {
        moss::sleep(Duration::from_secs(1))
    });
    let el: moss::Elapsed = t.unwrap_err();
    let _: &dyn std::error::Error = &el;
    assert_eq!(moss::run(|| 5), 5);
    moss::wait();
    moss::run_per_core(1, |i: usize| assert_eq!(i, 0));
    let d: String = moss::dump();
    assert!(!d.is_empty());
}

#[test]
fn greenlet_result_api() {
    let h: moss::JoinHandle<u32> = moss::spawn(|| 1);
    h.link(|r: &Result<u32, moss::JoinError>| assert_eq!(*r.as_ref().unwrap(), 1));
    let ok: bool = h.is_successful();
    assert!(!ok);
    h.kill_nowait();
    let dead: bool = h.kill_timeout(Duration::from_secs(1));
    assert!(dead);
    let out: Vec<moss::Joined<u32>> = moss::JoinAll::new(vec![moss::spawn(|| 2)])
        .timeout(Duration::from_secs(5))
        .stop_on_error()
        .count(1)
        .join();
    assert!(matches!(out[0], moss::Joined::Finished(Ok(2))));
}

#[test]
fn cross_process_primitives_api() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let (a, b): (
        moss::pool::Connection<String>,
        moss::pool::Connection<String>,
    ) = moss::pool::pipe::<String>().unwrap();
    send_sync(&a);
    let sent: std::io::Result<()> = a.send(&"x".to_string());
    sent.unwrap();
    let polled: bool = b.poll(Duration::ZERO);
    assert!(polled);
    let got: std::io::Result<String> = b.recv();
    assert_eq!(got.unwrap(), "x");
    let timed: std::io::Result<String> = b.recv_timeout(Duration::ZERO);
    assert!(timed.is_err());

    let lock: moss::pool::ProcessLock = moss::pool::ProcessLock::new().unwrap();
    send_sync(&lock);
    let g: moss::pool::ProcessLockGuard<'_> = lock.lock();
    assert!(!g.owner_died());
    drop(g);
    let t: Option<moss::pool::ProcessLockGuard<'_>> = lock.try_lock();
    drop(t);
    let r: Result<moss::pool::ProcessLockGuard<'_>, moss::sync::Timeout> =
        lock.lock_timeout(Duration::ZERO);
    drop(r);

    let sem = moss::pool::ProcessSemaphore::new(1).unwrap();
    send_sync(&sem);
    sem.acquire();
    let ok: bool = sem.try_acquire();
    assert!(!ok);
    let r: Result<(), moss::sync::Timeout> = sem.acquire_timeout(Duration::ZERO);
    assert!(r.is_err());
    sem.release();

    let ev = moss::pool::ProcessEvent::new().unwrap();
    send_sync(&ev);
    ev.set();
    ev.clear();
    let set: bool = ev.is_set();
    assert!(!set);
    let waited: bool = ev.wait_timeout(Duration::ZERO);
    assert!(!waited);
    ev.set();
    ev.wait();

    let v: moss::pool::SharedValue<i64> = moss::pool::SharedValue::new(1i64).unwrap();
    send_sync(&v);
    v.set(2);
    let r: i64 = v.update(|x| {
        *x += 1;
        *x
    });
    assert_eq!((r, v.get()), (3, 3));
}

#[test]
fn greenlet_api() {
    use moss::greenlet::{self, Greenlet};
    let g: Greenlet<i32> = Greenlet::new(|v| v + 1);
    let g2 = g.clone();
    assert_eq!(g.switch(1), 2);
    assert!(g2.is_dead());
    assert!(g.parent().is_some());
    let root: Greenlet<i32> = greenlet::current();
    assert!(root.parent().is_none());
    Greenlet::new(|v: i32| v).throw();
}

#[test]
fn sync_api() {
    use moss::sync::*;
    let ev = Event::new();
    ev.set();
    ev.clear();
    assert!(!ev.is_set());
    assert!(!ev.wait_timeout(Duration::ZERO));
    ev.set();
    ev.wait();

    let ar: AsyncResult<u32> = AsyncResult::new();
    assert!(!ar.ready());
    assert!(ar.get_timeout(Duration::ZERO).is_err());
    ar.set(3);
    assert_eq!(ar.get(), 3);
    let ap: AsyncResult<u32> = AsyncResult::new();
    ap.set_panic(Box::new("boom"));

    let m = Mutex::new(0);
    *m.lock() += 1;
    assert!(m.try_lock().is_some());
    assert_eq!(*m.lock_timeout(Duration::ZERO).unwrap(), 1);

    let s = Semaphore::new(1);
    s.acquire();
    assert!(!s.try_acquire());
    assert!(s.acquire_timeout(Duration::ZERO).is_err());
    s.release();
    let bs = BoundedSemaphore::new(1);
    assert!(bs.release().is_err());

    let q: Queue<u8> = Queue::new(1);
    q.put(1);
    assert!(q.is_full() && q.len() == 1 && !q.is_empty());
    assert!(q.put_nowait(2).is_err());
    assert!(q.put_timeout(2, Duration::ZERO).is_err());
    assert_eq!(q.get(), 1);
    assert!(q.get_nowait().is_err());
    assert!(q.get_timeout(Duration::ZERO).is_err());
    let _u: Queue<u8> = Queue::unbounded();
    let jq: JoinableQueue<u8> = JoinableQueue::new(2);
    jq.put(1);
    jq.get();
    jq.task_done().unwrap();
    jq.join();
    let pq: PriorityQueue<u8> = PriorityQueue::unbounded();
    pq.put(3);
    pq.put(1);
    assert_eq!(pq.get(), 1);
    let lq: LifoQueue<u8> = LifoQueue::new(4);
    lq.put(1);
    lq.put(2);
    assert_eq!(lq.get(), 2);

    let (tx, rx): (Sender<u8>, Receiver<u8>) = channel();
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    tx2.send(2).unwrap();
    assert_eq!(rx.recv().unwrap(), 1);
    assert_eq!(rx.try_recv().unwrap(), 2);
    assert!(rx.recv_timeout(Duration::ZERO).is_err());
    drop((tx, tx2));
    assert!(rx.recv().is_err());
    let (btx, brx) = bounded::<u8>(1);
    drop(brx);
    assert_eq!(btx.send(9).unwrap_err().0, 9);
}

#[test]
fn threading_sync_api() {
    use moss::sync::*;
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RLock<std::cell::Cell<u8>>>();
    send_sync::<Condvar>();
    send_sync::<Barrier>();
    send_sync::<RwLock<u8>>();
    send_sync::<OnceCell<u8>>();

    let r: RLock<u8> = RLock::new(1);
    let g: RLockGuard<'_, u8> = r.lock();
    assert_eq!(*r.lock(), 1); // re-entry
    assert!(r.try_lock().is_some() && r.lock_timeout(Duration::ZERO).is_ok());
    drop(g);
    assert_eq!(r.into_inner(), 1);

    let m = Mutex::new(0);
    let cv = Condvar::new();
    let g: MutexGuard<'_, i32> = m.lock();
    let (g, res): (MutexGuard<'_, i32>, WaitTimeoutResult) = cv.wait_timeout(g, Duration::ZERO);
    assert!(res.timed_out());
    let g = cv.wait_while(g, |v| *v != 0);
    let (g, res) = cv.wait_timeout_while(g, Duration::ZERO, |v| *v != 0);
    assert!(!res.timed_out());
    drop(g);
    cv.notify_one();
    cv.notify_all();
    let _ = Condvar::wait::<i32>;

    let b = Barrier::new(1);
    let res: BarrierWaitResult = b.wait();
    assert!(res.is_leader());
    assert!(b.wait_timeout(Duration::ZERO).unwrap().is_leader());

    let l: RwLock<u8> = RwLock::new(1);
    let r1: RwLockReadGuard<'_, u8> = l.read();
    assert!(l.try_read().is_some() && l.try_write().is_none());
    drop(r1);
    let mut w: RwLockWriteGuard<'_, u8> = l.write();
    *w += 1;
    drop(w);
    assert!(l.read_timeout(Duration::ZERO).is_ok() && l.write_timeout(Duration::ZERO).is_ok());
    assert_eq!(l.into_inner(), 2);

    let c: OnceCell<u8> = OnceCell::new();
    assert_eq!(c.get(), None);
    assert_eq!(*c.get_or_init(|| 4), 4);
    assert_eq!(c.set(5), Err(5));
    assert_eq!(c.get_or_try_init(|| Err::<u8, ()>(())), Ok(&4));
    assert_eq!(*c.wait(), 4);
    assert_eq!(c.into_inner(), Some(4));
}

#[test]
fn coroutine_pools_api() {
    use moss::pool::{Group, Pool};
    let p = Pool::new(2);
    let h = p.spawn(|| 1);
    assert_eq!(h.join().unwrap(), 1);
    let v: Vec<u32> = p.map(|x: u32| x * 2, vec![1, 2, 3]);
    assert_eq!(v, [2, 4, 6]);
    let mut u: Vec<u32> = p.imap_unordered(|x: u32| x, vec![1, 2]).collect();
    u.sort();
    assert_eq!(u, [1, 2]);
    p.join();
    p.kill();
    assert_eq!(p.free_count(), 2);
    p.wait_available();
    let g = Group::new();
    g.spawn(|| ());
    g.join();
}

#[test]
fn net_api() {
    use moss::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let server = moss::spawn(move || {
        let (mut s, peer): (TcpStream, SocketAddr) = l.accept().unwrap();
        assert!(peer.ip().is_loopback());
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_write_timeout(None).unwrap();
    assert_eq!(c.peer_addr().unwrap(), addr);
    let c2: TcpStream = c.try_clone().unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&c2).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    c.shutdown(std::net::Shutdown::Both).unwrap();
    server.join().unwrap();
    let std_stream: std::net::TcpStream = c.into();
    let _back: TcpStream = TcpStream::from(std_stream);
    let _sl: std::net::TcpListener = TcpListener::bind("127.0.0.1:0").unwrap().into();
    let _ml: TcpListener = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
    let _ct = TcpStream::connect_timeout(&addr, Duration::from_millis(100));

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _stdu: std::net::UdpSocket = u.into();
    let (a, b) = UnixStream::pair().unwrap();
    drop((a, b));
    let dir = std::env::temp_dir().join(format!("moss-api-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let ul = UnixListener::bind(&dir).unwrap();
    drop(ul);
    let _ = std::fs::remove_file(&dir);
    let addrs: Vec<SocketAddr> = moss::net::lookup_host("localhost:80").unwrap().collect();
    assert!(!addrs.is_empty());
}

#[test]
fn server_api() {
    use moss::server::StreamServer;
    let srv: StreamServer = StreamServer::bind(
        "127.0.0.1:0",
        |mut s: moss::net::TcpStream, _peer: SocketAddr| {
            let _ = s.write_all(b"hi");
        },
    )
    .unwrap();
    let addr = srv.local_addr();
    let srv2 = srv.clone();
    let runner = moss::spawn(move || srv2.serve_forever());
    let mut c = moss::net::TcpStream::connect(addr).unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    srv.stop(Duration::from_secs(1));
    let r: std::io::Result<()> = runner.join().unwrap();
    r.unwrap();
}

#[test]
fn monkey_api_names() {
    let _: fn() = moss::monkey::patch_all;
    let _: fn() -> bool = moss::monkey::is_patched;
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn thread_and_process_pools_api() {
    use moss::pool::{PoolError, Process, ProcessHandle, ProcessPool, ProcessQueue, ThreadPool};
    let tp = ThreadPool::new(2);
    let r: Result<u32, PoolError> = tp.apply(|| 2);
    assert_eq!(r.unwrap(), 2);
    let ar: moss::sync::AsyncResult<u32> = tp.apply_async(|| 3, |v: &u32| assert_eq!(*v, 3));
    assert_eq!(ar.get(), 3);
    let _ = tp.map(|x: u32| x + 1, vec![1, 2]);
    tp.close();
    tp.join();

    let pp: std::io::Result<ProcessPool> = ProcessPool::new(1);
    let pp = pp.unwrap();
    let r: Result<u64, PoolError> = pp.apply(square, 7);
    assert_eq!(r.unwrap(), 49);
    let _async = pp.apply_async(square, 3, |v: &u64| assert_eq!(*v, 9));
    let _ = pp.map(square, vec![1, 2, 3]);
    pp.close();
    pp.join();
    pp.terminate();

    let h: std::io::Result<ProcessHandle> = Process::new(|| ()).name("p").start();
    let h = h.unwrap();
    let _: u32 = h.pid();
    let _ = h.name();
    let _ = h.join();
    let _ = h.join_timeout(Duration::ZERO);
    assert!(!h.is_alive());
    let code: Option<i32> = h.exit_code();
    assert_eq!(code, Some(0));
    let _ = h.terminate();
    let _ = h.kill();

    let q: std::io::Result<ProcessQueue<u32>> = ProcessQueue::new(2);
    let q = q.unwrap();
    q.put(1);
    assert!(q.put_timeout(2, Duration::ZERO).is_ok());
    assert!(q.is_full() && q.len() == 2 && !q.is_empty());
    assert!(q.put_nowait(3).is_err());
    assert_eq!(q.get(), 1);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 2);
    assert!(q.get_nowait().is_err());
}

// ---- Edge cases of the coroutine API ----

#[test]
fn coroutine_edge_cases() {
    for size in [0, usize::MAX] {
        let e = moss::Builder::new()
            .stack_size(size)
            .spawn(|| ())
            .unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "stack_size({size})"
        );
    }
    // A JoinError's message names the coroutine.
    let e = moss::Builder::new()
        .name("api-panicker")
        .spawn(|| panic!("boom"))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(e.to_string().contains("api-panicker"), "{e}");
    // sleep(MAX) sleeps until killed, and the kill is reported.
    let sleeper = moss::spawn(|| moss::sleep(Duration::MAX));
    util::until_parked(sleeper.id());
    assert!(!sleeper.is_finished());
    sleeper.kill();
    assert!(sleeper.is_finished());
    assert!(sleeper.join().unwrap_err().is_killed());
    // timeout(MAX) never fires; timeout(ZERO) fires if f blocks at all.
    assert_eq!(moss::timeout(Duration::MAX, || 3).unwrap(), 3);
    let el = moss::timeout(Duration::ZERO, moss::yield_now).unwrap_err();
    assert!(!el.to_string().is_empty());
    // join_timeout(ZERO) polls.
    let h = moss::spawn(|| moss::sleep(Duration::from_secs(60)));
    let h = h.join_timeout(Duration::ZERO).unwrap_err();
    h.kill();
}

#[test]
fn background_coroutine_api() {
    let b: moss::JoinHandle<()> = moss::Builder::new()
        .background(true)
        .spawn(|| moss::sleep(Duration::from_secs(60)))
        .unwrap();
    let t = std::time::Instant::now();
    moss::run(|| ());
    moss::wait();
    assert!(t.elapsed() < Duration::from_secs(30)); // did not wait for it
    assert!(!b.is_finished());
    b.kill();
    assert!(b.join().unwrap_err().is_killed());
}

#[test]
fn link_value_and_exception_api() {
    use std::cell::Cell;
    use std::rc::Rc;
    let (values, errors) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let ok = moss::spawn(|| 5u32);
    let (v, e) = (values.clone(), errors.clone());
    ok.link_value(move |x: &u32| v.set(v.get() + *x));
    ok.link_exception(move |_: &moss::JoinError| e.set(e.get() + 1));
    assert_eq!(ok.join().unwrap(), 5);
    assert!(moss::spawn(|| ()).join().is_ok());
    let bad = moss::spawn(|| -> u32 { panic!("bad") });
    let (v, e) = (values.clone(), errors.clone());
    bad.link_value(move |x: &u32| v.set(v.get() + *x));
    bad.link_exception(move |err: &moss::JoinError| {
        assert!(err.is_panic());
        e.set(e.get() + 1)
    });
    assert!(bad.join().is_err());
    assert_eq!((values.get(), errors.get()), (5, 1));
}

// ---- Service-grade additions ----

#[test]
fn signal_api() {
    use moss::signal::{self, SignalHandler};
    let _wd = util::watchdog("signal_api", Duration::from_secs(60));
    let runs = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let r = runs.clone();
    let h: std::io::Result<SignalHandler> =
        signal::handler(signal::SIGUSR1, move || r.set(r.get() + 1));
    let h = h.unwrap();
    // SAFETY: sends SIGUSR1 to this process, where moss's catcher is installed.
    unsafe { libc::kill(libc::getpid(), signal::SIGUSR1) };
    util::until("the SIGUSR1 handler ran", Duration::from_secs(20), || {
        runs.get() >= 1
    });
    h.cancel();
    drop(h);

    let waiter = moss::spawn(|| signal::wait(&[signal::SIGUSR2, signal::SIGWINCH]));
    util::until_parked(waiter.id());
    // SAFETY: sends SIGUSR2 to this process; the waiter's `wait` installed moss's catcher.
    unsafe { libc::kill(libc::getpid(), signal::SIGUSR2) };
    let got: std::io::Result<i32> = waiter.join().unwrap();
    assert_eq!(got.unwrap(), signal::SIGUSR2);
    let bad = signal::wait(&[0]).unwrap_err();
    assert_eq!(bad.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn subprocess_api() {
    use moss::subprocess::{Child, Command, ExitStatus, Output, Stdio};
    let _wd = util::watchdog("subprocess_api", Duration::from_secs(60));
    let mut child: Child = Command::new("sh")
        .arg("-c")
        .args(["cat; echo \"$MOSS_API\" >&2"])
        .env("MOSS_API", "yes")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(child.id() > 0);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"through the pipe").unwrap();
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "through the pipe");
    let mut err = String::new();
    child
        .stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "yes\n");
    let st: ExitStatus = child.wait().unwrap();
    assert!(st.success());

    let o: Output = Command::new("pwd").current_dir("/").output().unwrap();
    assert_eq!(o.stdout, b"/\n");
    let st = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
    assert_eq!(st.code(), Some(3));

    let mut slow = Command::new("sleep").arg("30").spawn().unwrap();
    let none: Option<ExitStatus> = slow.wait_timeout(Duration::from_millis(10)).unwrap();
    assert!(none.is_none());
    assert!(slow.try_wait().unwrap().is_none());
    slow.kill().unwrap();
    assert!(!slow.wait().unwrap().success());

    let c = Command::new("echo")
        .arg("hi")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(c.wait_with_output().unwrap().stdout, b"hi\n");
}

moss::coroutine_local! { static REQUEST_ID: std::cell::Cell<u64> = std::cell::Cell::new(0); }

#[test]
fn coroutine_local_api() {
    REQUEST_ID.with(|v| v.set(1)); // the root's own value
    let hs: Vec<_> = (2..5u64)
        .map(|i| {
            moss::spawn(move || {
                assert_eq!(REQUEST_ID.with(|v| v.get()), 0); // lazily initialised
                REQUEST_ID.with(|v| v.set(i));
                moss::yield_now(); // the others set theirs meanwhile
                REQUEST_ID.with(|v| v.get())
            })
        })
        .collect();
    let got: Vec<u64> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    assert_eq!(got, [2, 3, 4]);
    assert_eq!(REQUEST_ID.with(|v| v.get()), 1);
}

#[test]
fn monitor_api() {
    use moss::monitor::{self, BlockReport};
    use std::sync::Mutex as StdMutex;
    let _wd = util::watchdog("monitor_api", Duration::from_secs(60));
    static SEEN: StdMutex<Vec<(Option<String>, Duration, bool)>> = StdMutex::new(Vec::new());
    monitor::set_report(|r: &BlockReport| {
        let _: Option<&String> = r.thread_name.as_ref();
        let _: moss::CoroutineId = r.coroutine_id;
        if r.coroutine_name.as_deref() == Some("api-blocker") {
            SEEN.lock().unwrap().push((
                r.coroutine_name.clone(),
                r.blocked_for,
                r.spawn_site.is_some(),
            ));
        }
    });
    monitor::enable(Duration::from_millis(50));
    let blocker = moss::Builder::new()
        .name("api-blocker")
        .spawn(|| {
            // Holds its hub (a plain std sleep, no patching) until the
            // monitor has reported it, at most 30 s.
            let t = std::time::Instant::now();
            while SEEN.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .unwrap();
    blocker.join().unwrap();
    let seen = SEEN.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no block report");
    let (name, blocked_for, has_site) = &seen[0];
    assert_eq!(name.as_deref(), Some("api-blocker"));
    assert!(*blocked_for >= Duration::from_millis(50));
    assert!(has_site);
    let all: String = moss::dump_all();
    assert!(!all.is_empty());
}

#[test]
fn block_on_api() {
    use std::sync::{Arc, Mutex as StdMutex};
    use std::task::{Poll, Waker};
    assert_eq!(moss::block_on(async { 6 * 7 }), 42);
    // A future woken by another coroutine: the hub ran it while block_on parked.
    type Slot = Arc<StdMutex<(Option<u32>, Option<Waker>)>>;
    let slot: Slot = Arc::default();
    let s = slot.clone();
    let setter = moss::spawn(move || {
        let mut g = s.lock().unwrap();
        g.0 = Some(9);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    });
    let v = moss::block_on(std::future::poll_fn(|cx| {
        let mut g = slot.lock().unwrap();
        match g.0 {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }));
    assert_eq!(v, 9);
    setter.join().unwrap();
}

#[cfg(feature = "tokio")]
#[test]
fn compat_tokio_api() {
    let v: u32 = moss::compat::tokio(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        7
    });
    assert_eq!(v, 7);
}

#[test]
fn coop_api() {
    let _: u32 = moss::coop::BUDGET;
    // A coroutine that only ever calls operations completing at once still
    // lets the others run, once per budget.
    let other = std::rc::Rc::new(std::cell::Cell::new(false));
    let o = other.clone();
    let h = moss::spawn(move || o.set(true));
    for _ in 0..=moss::coop::BUDGET * 4 {
        moss::coop::proceed();
    }
    assert!(other.get(), "the budget never made the busy root yield");
    h.join().unwrap();
}

// ---- Python parity: process pools and the server's start ----

fn pid_of(_: u32) -> u32 {
    std::process::id()
}

static INITIALISED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn init_worker() {
    INITIALISED.store(11, std::sync::atomic::Ordering::SeqCst);
}

fn initialised(_: u32) -> u32 {
    INITIALISED.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn process_pool_builder_api() {
    use moss::pool::{PoolError, ProcessPool};
    let _wd = util::watchdog("process_pool_builder_api", Duration::from_secs(120));
    let pool: std::io::Result<ProcessPool> = ProcessPool::builder(1)
        .initializer(init_worker)
        .max_tasks_per_child(1)
        .build();
    let pool = pool.unwrap();
    assert_eq!(pool.apply(initialised, 0).unwrap(), 11);
    // One task per child: each task meets a fresh worker.
    let a = pool.apply(pid_of, 0).unwrap();
    let b = pool.apply(pid_of, 0).unwrap();
    assert_ne!(a, b);
    assert_ne!(a, std::process::id());

    let pool = ProcessPool::new(2).unwrap();
    let ordered: Vec<Result<u64, PoolError>> = pool.imap(square, 1..5u64).collect();
    assert_eq!(
        ordered.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [1, 4, 9, 16]
    );
    let mut any: Vec<u64> = pool
        .imap_unordered(square, vec![3u64, 1, 2])
        .map(Result::unwrap)
        .collect();
    any.sort();
    assert_eq!(any, [1, 4, 9]);
    let called = std::rc::Rc::new(std::cell::Cell::new(false));
    let c = called.clone();
    let ar: moss::sync::AsyncResult<Result<Vec<u64>, PoolError>> =
        pool.map_async(square, vec![2u64, 3], move |v: &Vec<u64>| {
            assert_eq!(*v, [4, 9]);
            c.set(true);
        });
    assert_eq!(ar.get().unwrap(), [4, 9]);
    assert!(called.get());
    pool.close();
    pool.join();
}

#[test]
fn server_start_api() {
    use moss::server::StreamServer;
    let srv = StreamServer::bind("127.0.0.1:0", |mut s: moss::net::TcpStream, _| {
        let _ = s.write_all(b"up");
    })
    .unwrap();
    let started: std::io::Result<()> = srv.start();
    started.unwrap();
    assert_eq!(
        srv.start().unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    let mut c = moss::net::TcpStream::connect(srv.local_addr()).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"up");
    srv.stop(Duration::from_secs(1));
    assert_eq!(
        srv.start().unwrap_err().kind(),
        std::io::ErrorKind::NotConnected
    );
}

#[test]
fn unix_socket_conversions_api() {
    use moss::net::{UnixListener, UnixStream};
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut a: UnixStream = a.into();
    let mut b = UnixStream::from(b);
    a.write_all(b"u").unwrap();
    let mut buf = [0u8; 1];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"u");
    let _std: std::os::unix::net::UnixStream = a.into();
    let path = std::env::temp_dir().join(format!("moss-api-ul-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l: UnixListener = std::os::unix::net::UnixListener::bind(&path)
        .unwrap()
        .into();
    let _back: std::os::unix::net::UnixListener = l.into();
    let _ = std::fs::remove_file(&path);
}
