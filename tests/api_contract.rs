//! The public names and shapes of DESIGN.md, used as a new user would: if a
//! signature drifts from the contract, this file stops compiling.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

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
