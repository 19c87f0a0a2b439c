//! moss::server::StreamServer: serving, stop, limits, panics, EMFILE,
//! several cores.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::net::{TcpListener, TcpStream};
use moss::server::StreamServer;

mod util;

fn echo(mut s: TcpStream, _peer: std::net::SocketAddr) {
    let mut b = [0u8; 1024];
    while let Ok(n @ 1..) = s.read(&mut b) {
        if s.write_all(&b[..n]).is_err() {
            return;
        }
    }
}

fn roundtrip(addr: std::net::SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(msg)?;
    let mut b = vec![0u8; msg.len()];
    c.read_exact(&mut b)?;
    Ok(b)
}

#[test]
fn serves_many_clients_and_stop_returns_ok() {
    let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
    let addr = server.local_addr();
    let srv = server.clone();
    let serving = moss::spawn(move || srv.serve_forever());
    let cs: Vec<_> = (0..100u32)
        .map(|i| moss::spawn(move || roundtrip(addr, &i.to_le_bytes()).unwrap() == i.to_le_bytes()))
        .collect();
    assert!(moss::join_all(cs).into_iter().all(|r| r.unwrap()));
    assert_eq!(
        server.serve_forever().unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    server.stop(Duration::from_secs(5));
    serving.join().unwrap().unwrap();
    // The listener is closed: nobody accepts any more.
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(
        server.serve_forever().unwrap_err().kind(),
        ErrorKind::NotConnected
    );
}

struct DropCount(Rc<Cell<u32>>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn stop_waits_for_handlers_then_kills_the_rest() {
    let dropped = Rc::new(Cell::new(0));
    let d = dropped.clone();
    // Handlers that finish in 100 ms, and handlers that never finish.
    let server = StreamServer::bind("127.0.0.1:0", move |mut s, _| {
        let _c = DropCount(d.clone());
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        if b[0] == b'q' {
            moss::sleep(Duration::from_millis(100));
            s.write_all(b"done").unwrap();
        } else {
            moss::sleep(Duration::from_secs(3600));
        }
    })
    .unwrap();
    let addr = server.local_addr();
    let srv = server.clone();
    let serving = moss::spawn(move || srv.serve_forever());
    let mut quick = TcpStream::connect(addr).unwrap();
    quick.write_all(b"q").unwrap();
    let mut stuck: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut stuck {
        s.write_all(b"s").unwrap();
    }
    let t = Instant::now();
    while server.connections() < 4 {
        assert!(t.elapsed() < Duration::from_secs(10));
        moss::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    server.stop(Duration::from_millis(300));
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(300), "{el:?}");
    assert!(el < Duration::from_secs(5), "{el:?}");
    assert_eq!(server.connections(), 0);
    assert_eq!(
        dropped.get(),
        4,
        "every handler ended and ran its destructors"
    );
    let mut b = [0u8; 4];
    quick.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"done", "the quick handler finished normally");
    for mut s in stuck {
        // Killed handlers closed their connections.
        assert_eq!(s.read(&mut b).unwrap(), 0);
    }
    serving.join().unwrap().unwrap();
}

#[test]
fn a_panicking_handler_does_not_stop_the_server() {
    let server = StreamServer::bind("127.0.0.1:0", |mut s, peer| {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        if b[0] == b'!' {
            panic!("handler asked to panic by {peer}");
        }
        s.write_all(&b).unwrap();
    })
    .unwrap();
    let addr = server.local_addr();
    let srv = server.clone();
    let serving = moss::spawn(move || srv.serve_forever());
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"!").unwrap();
        assert_eq!(
            c.read(&mut [0u8; 1]).unwrap(),
            0,
            "the panicking handler's connection closes"
        );
        assert_eq!(roundtrip(addr, b"k").unwrap(), b"k");
    }
    server.stop(Duration::from_secs(1));
    serving.join().unwrap().unwrap();
}

#[test]
fn connection_limit_pauses_accepting() {
    let release = Rc::new(Cell::new(false));
    let r = release.clone();
    let server = StreamServer::bind("127.0.0.1:0", move |mut s, _| {
        while !r.get() {
            moss::sleep(Duration::from_millis(5));
        }
        s.write_all(b"ok").unwrap();
    })
    .unwrap();
    server.set_max_connections(Some(2));
    let addr = server.local_addr();
    let srv = server.clone();
    let serving = moss::spawn(move || srv.serve_forever());
    // The kernel completes all four handshakes (backlog); moss accepts two.
    let cs: Vec<_> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let t = Instant::now();
    while server.connections() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "never accepted two");
        moss::sleep(Duration::from_millis(5));
    }
    // Give the acceptor ample time to (wrongly) take a third.
    moss::sleep(Duration::from_millis(200));
    assert_eq!(server.connections(), 2);
    release.set(true);
    for mut c in cs {
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
    }
    server.stop(Duration::from_secs(1));
    serving.join().unwrap().unwrap();
}

#[test]
fn stop_from_inside_a_handler() {
    let slot: Rc<Cell<Option<StreamServer>>> = Rc::new(Cell::new(None));
    let s2 = slot.clone();
    let server = StreamServer::bind("127.0.0.1:0", move |mut s, _| {
        let srv = s2.take().unwrap();
        srv.stop(Duration::from_secs(1));
        s.write_all(b"bye").unwrap();
    })
    .unwrap();
    slot.set(Some(server.clone()));
    let addr = server.local_addr();
    let c = moss::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    });
    server.serve_forever().unwrap(); // on the root; returns after stop
    assert_eq!(c.join().unwrap(), "bye");
}

/// Run in a child process (see `emfile_back_off`): lowers its own fd limit.
#[test]
#[ignore = "run by emfile_back_off in a child process"]
fn emfile_child() {
    if std::env::var_os("MOSS_EMFILE_CHILD").is_none() {
        return;
    }
    let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
    let addr = server.local_addr();
    let srv = server.clone();
    let serving = moss::spawn(move || srv.serve_forever());
    let mut a = TcpStream::connect(addr).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 3];
    a.write_all(b"one").unwrap();
    a.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"one");
    // Exhaust the fd table, then free exactly one fd for the client side.
    let mut hog = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
                break;
            }
        }
    }
    hog.pop();
    let mut late = TcpStream::connect(addr).unwrap(); // the server's accept hits EMFILE
    late.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    late.write_all(b"two").unwrap();
    // Existing connections keep being served during the back-off...
    for _ in 0..5 {
        a.write_all(b"abc").unwrap();
        a.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"abc");
        moss::sleep(Duration::from_millis(20));
    }
    // ...while the new one is not accepted.
    let e = late.read(&mut b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    // Free fds: accepting resumes within the back-off (at most 1 s).
    hog.clear();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    late.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"two");
    server.stop(Duration::from_secs(1));
    serving.join().unwrap().unwrap();
    println!("EMFILE-CHILD-OK");
}

#[test]
fn emfile_back_off() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "emfile_child",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MOSS_EMFILE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("EMFILE-CHILD-OK"),
        "child did not run:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("pausing"), "no back-off logged:\n{stderr}");
}

#[test]
fn run_per_core_serves_on_both_threads_with_reuseport() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex, mpsc};
    let port = Arc::new((Mutex::new(0u16), Condvar::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (port2, done2) = (port.clone(), done.clone());
    let servers = std::thread::spawn(move || {
        moss::run_per_core(2, move |i| {
            // Thread 0 picks the port; thread 1 binds the same one.
            let (lock, cv) = &*port2;
            let l = if i == 0 {
                let l = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
                *lock.lock().unwrap() = l.local_addr().unwrap().port();
                cv.notify_all();
                l
            } else {
                let mut p = lock.lock().unwrap();
                while *p == 0 {
                    p = cv.wait(p).unwrap();
                }
                TcpListener::bind_reuseport(("127.0.0.1", *p)).unwrap()
            };
            let server = StreamServer::from_listener(l, move |mut s, _| {
                let _ = s.write_all(&[i as u8]);
            })
            .unwrap();
            let srv = server.clone();
            let done = done2.clone();
            moss::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    moss::sleep(Duration::from_millis(5));
                }
                srv.stop(Duration::from_secs(1));
            });
            ready_tx.send(()).unwrap();
            server.serve_forever().unwrap();
        })
    });
    ready_rx.recv().unwrap();
    ready_rx.recv().unwrap();
    let port = *port.0.lock().unwrap();
    // The kernel spreads connections over both listeners by 4-tuple hash:
    // with 64 connections, all on one thread has probability 2^-63.
    let hs: Vec<_> = (0..64)
        .map(|_| {
            moss::spawn(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let mut b = [0u8; 1];
                c.read_exact(&mut b).unwrap();
                b[0]
            })
        })
        .collect();
    let seen: Vec<u8> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    done.store(true, Ordering::SeqCst);
    servers.join().unwrap();
    assert!(seen.contains(&0) && seen.contains(&1), "{seen:?}");
}

#[test]
fn serve_forever_cancelled_by_timeout_then_served_again() {
    let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
    let addr = server.local_addr();
    let srv = server.clone();
    let r = moss::spawn(move || moss::timeout(Duration::from_millis(200), || srv.serve_forever()));
    // Served by the first or (on a slow machine) the second serve_forever.
    let first = moss::spawn(move || roundtrip(addr, b"first").unwrap());
    assert!(
        r.join().unwrap().is_err(),
        "the timeout cancelled serve_forever"
    );
    // The acceptor went down with it; a new serve_forever takes over.
    let srv = server.clone();
    let serving = moss::spawn(move || srv.serve_forever());
    assert_eq!(roundtrip(addr, b"second").unwrap(), b"second");
    assert_eq!(first.join().unwrap(), b"first");
    server.stop(Duration::from_secs(1));
    serving.join().unwrap().unwrap();
}

/// A handler that catches the cancellation and keeps running: `stop`
/// returns at its timeout anyway (it used to wait for it without bound),
/// names it, and `connections()` keeps counting it until it ends. A handler
/// that ends when killed is not reported.
#[test]
fn stop_returns_at_its_timeout_and_names_handlers_it_could_not_end() {
    util::on_thread(Duration::from_secs(30), || {
        let release = Rc::new(Cell::new(false));
        let r = release.clone();
        // The client's first byte says which handler it gets. (Not the
        // parity of its port: Linux gives connect() even ports first, so an
        // odd one came only after thousands of connections.)
        let server = StreamServer::bind("127.0.0.1:0", move |mut s, _| {
            let mut kind = [0u8];
            s.read_exact(&mut kind).unwrap();
            if kind == *b"s" {
                // Stubborn: survives its kill until released.
                while !r.get() {
                    let _ = std::panic::catch_unwind(|| moss::sleep(Duration::from_millis(10)));
                }
            } else {
                moss::sleep(Duration::from_secs(3600));
            }
        })
        .unwrap();
        let addr = server.local_addr();
        let srv = server.clone();
        let serving = moss::spawn(move || srv.serve_forever());
        let client = |kind: &[u8]| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(kind).unwrap();
            c
        };
        let clients = [client(b"s"), client(b"p")];
        let stubborn = clients[0].local_addr().unwrap();
        let plain = clients[1].local_addr().unwrap();
        util::until("two handlers", Duration::from_secs(10), || {
            server.connections() == 2
        });
        let t = Instant::now();
        let unfinished = server.stop(Duration::from_millis(200));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        // 200 ms, then at most 50 ms for the killed to unwind; generous
        // for a loaded machine, far below "without bound".
        assert!(
            took < Duration::from_secs(2),
            "stop overran its timeout: {took:?}"
        );
        let peers: Vec<_> = unfinished.iter().map(|u| u.peer).collect();
        assert_eq!(peers, [stubborn], "{unfinished:?}");
        assert!(!peers.contains(&plain), "{unfinished:?}");
        assert_eq!(server.connections(), unfinished.len());
        assert!(serving.join().unwrap().is_ok());
        release.set(true);
        util::until(
            "the stubborn handler to end",
            Duration::from_secs(10),
            || server.connections() == 0,
        );
        drop(clients);
    });
}

/// `start` serves in the background: the root's own blocking calls run the
/// accept loop and the handlers; `serve_forever` after `start` waits for
/// the running loop (and returns after `stop`); a second `start` is
/// refused while accepting, and both fail once stopped.
#[test]
fn start_serves_in_the_background() {
    util::on_thread(Duration::from_secs(30), || {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let addr = server.local_addr();
        server.start().unwrap();
        assert_eq!(server.start().unwrap_err().kind(), ErrorKind::AlreadyExists);
        // Nothing but the root: its read runs the hub, which accepts.
        assert_eq!(roundtrip(addr, b"root").unwrap(), b"root");

        let srv = server.clone();
        let serving = moss::spawn(move || srv.serve_forever());
        moss::yield_now();
        assert_eq!(
            server.serve_forever().unwrap_err().kind(),
            ErrorKind::AlreadyExists,
            "one serve_forever waits already"
        );
        assert_eq!(roundtrip(addr, b"again").unwrap(), b"again");
        assert!(server.stop(Duration::from_secs(5)).is_empty());
        serving.join().unwrap().unwrap();
        assert_eq!(server.start().unwrap_err().kind(), ErrorKind::NotConnected);
        let e = TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    });
}

/// A started server with nobody in `serve_forever`: `stop` alone ends it,
/// and `moss::run` does not wait for it afterwards.
#[test]
fn a_started_server_is_stopped_by_stop_alone() {
    util::on_thread(Duration::from_secs(30), || {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let addr = server.local_addr();
        moss::run(|| {
            server.start().unwrap();
            let srv = server.clone();
            moss::spawn(move || {
                assert_eq!(roundtrip(addr, b"x").unwrap(), b"x");
                assert!(srv.stop(Duration::from_secs(5)).is_empty());
            });
        });
        assert_eq!(server.connections(), 0);
        assert!(TcpStream::connect(addr).is_err());
    });
}

/// `serve_forever` cancelled while a `start`ed loop runs takes the loop
/// down with it; `start` then resumes accepting.
#[test]
fn start_after_a_cancelled_serve_forever_resumes() {
    util::on_thread(Duration::from_secs(30), || {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let addr = server.local_addr();
        server.start().unwrap();
        let srv = server.clone();
        let r = moss::timeout(Duration::from_millis(50), || srv.serve_forever());
        assert!(r.is_err(), "the timeout cancelled serve_forever");
        server.start().unwrap();
        assert_eq!(roundtrip(addr, b"back").unwrap(), b"back");
        assert!(server.stop(Duration::from_secs(5)).is_empty());
    });
}
