//! examples/chat_server.rs in a child process: broadcasts reach every
//! client in order, leaving is announced, a client that stops reading is
//! disconnected without holding up the others, and SIGTERM shuts down
//! cleanly (every client gets the goodbye line, then end-of-file; the
//! process exits 0), also while a writer is stuck on a client that does
//! not read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../examples/chat_server.rs"]
mod chat_server;
mod util;

use util::child_server::{self, ChildServer};

/// A chat client: its address as the server names it, and a line reader.
struct Client {
    name: String,
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let name = w.local_addr().unwrap().to_string();
        let r = BufReader::new(w.try_clone().unwrap());
        Client { name, w, r }
    }

    fn say(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }

    /// Everything until end-of-file.
    fn rest(&mut self) -> String {
        let mut s = String::new();
        self.r.read_to_string(&mut s).unwrap();
        s
    }
}

#[test]
fn broadcasts_in_order_and_sigterm_shuts_down_cleanly() {
    const CASE: &str = "broadcasts_in_order_and_sigterm_shuts_down_cleanly";
    if util::in_child(CASE) {
        chat_server::run(0).unwrap();
        return;
    }
    let _wd = util::watchdog(CASE, Duration::from_secs(60));
    let (mut server, out, addr) = ChildServer::start(CASE);
    let mut a = Client::connect(addr);
    assert_eq!(a.line(), format!("* {} joined\n", a.name));
    let mut b = Client::connect(addr);
    assert_eq!(a.line(), format!("* {} joined\n", b.name));
    assert_eq!(b.line(), format!("* {} joined\n", b.name));
    let mut c = Client::connect(addr);
    let joined = format!("* {} joined\n", c.name);
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.line(), joined);
    }

    // Every line reaches every client, each sender's lines in order.
    for i in 0..50 {
        a.say(&format!("a{i}"));
    }
    b.say("from b");
    let (an, bn) = (a.name.clone(), b.name.clone());
    for x in [&mut a, &mut b, &mut c] {
        let mut from_a = Vec::new();
        let mut from_b = Vec::new();
        while from_a.len() < 50 || from_b.is_empty() {
            let l = x.line();
            if let Some(m) = l.strip_prefix(&format!("{an}: ")) {
                from_a.push(m.to_string());
            } else if let Some(m) = l.strip_prefix(&format!("{bn}: ")) {
                from_b.push(m.to_string());
            } else {
                panic!("unexpected line {l:?}");
            }
        }
        let want: Vec<String> = (0..50).map(|i| format!("a{i}\n")).collect();
        assert_eq!(from_a, want);
        assert_eq!(from_b, ["from b\n"]);
    }

    // Leaving is announced to the others.
    c.w.shutdown(Shutdown::Both).unwrap();
    let cn = c.name.clone();
    assert_eq!(a.line(), format!("* {cn} left\n"));
    assert_eq!(b.line(), format!("* {cn} left\n"));

    // SIGTERM: the goodbye, then end-of-file, then exit 0.
    server.sigterm();
    assert_eq!(a.rest(), "* server shutting down\n");
    assert_eq!(b.rest(), "* server shutting down\n");
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = child_server::rest(out);
    assert!(log.contains("shutting down 2 client(s)"), "{log}");
    assert!(
        log.contains("stopped (0 handler(s) still unwinding)"),
        "{log}"
    );
    // The listener is closed.
    assert!(TcpStream::connect(addr).is_err());
}

/// A client that never reads is disconnected once its outbox is full; the
/// others still get every line.
#[test]
fn a_client_that_stops_reading_is_disconnected() {
    const CASE: &str = "a_client_that_stops_reading_is_disconnected";
    if util::in_child(CASE) {
        chat_server::run(0).unwrap();
        return;
    }
    let _wd = util::watchdog(CASE, Duration::from_secs(120));
    let (mut server, out, addr) = ChildServer::start(CASE);
    let mut slow = Client::connect(addr);
    assert_eq!(slow.line(), format!("* {} joined\n", slow.name));
    let mut fast = Client::connect(addr);
    assert_eq!(fast.line(), format!("* {} joined\n", fast.name));
    // 4,000 lines of 4 KiB (16 MiB): more than the kernel buffers and the
    // outbox of `slow` can hold. `fast` reads on a thread of its own, and
    // sends a line only when at most WINDOW of its lines are still on their
    // way back: it keeps up by construction, however the machine schedules
    // its reader thread (a stalled reader with a sender running on would
    // fill its outbox too, and rightly get it disconnected).
    const N: usize = 4000;
    const WINDOW: usize = 64;
    let body = "x".repeat(4096);
    let name = fast.name.clone();
    let mut r = BufReader::new(fast.w.try_clone().unwrap());
    let got = Arc::new(AtomicUsize::new(0));
    let seen = got.clone();
    let reader = std::thread::spawn(move || {
        let mut l = String::new();
        while seen.load(Ordering::Acquire) < N {
            l.clear();
            assert!(r.read_line(&mut l).unwrap() > 0, "fast was disconnected");
            if l.starts_with(&format!("{name}: ")) {
                assert_eq!(l.len(), name.len() + 2 + 4096 + 1);
                seen.fetch_add(1, Ordering::Release);
            }
        }
        r
    });
    for i in 0..N {
        while i - got.load(Ordering::Acquire).min(i) > WINDOW && !reader.is_finished() {
            std::thread::sleep(Duration::from_micros(200));
        }
        fast.say(&body);
    }
    fast.r = reader.join().unwrap();
    // `slow` gets what fit in its buffers, then end-of-file.
    let t = Instant::now();
    let mut sink = Vec::new();
    slow.r.read_to_end(&mut sink).unwrap();
    assert!(sink.len() < N * 4096, "slow got every line");
    assert!(t.elapsed() < Duration::from_secs(60));
    fast.say("still here");
    assert_eq!(fast.line(), format!("{}: still here\n", fast.name));

    server.sigterm();
    assert_eq!(fast.rest(), "* server shutting down\n");
    assert!(server.0.wait().unwrap().success());
    assert!(child_server::rest(out).contains("stopped"));
}

/// At shutdown, a writer stuck on a client that stopped reading (its outbox
/// not full yet) is given its flush time, then killed with its handler's
/// `kill_on_drop` guard: the process still exits 0, and the other client
/// gets its goodbye.
#[test]
fn shutdown_with_a_writer_stuck_on_a_client_that_does_not_read() {
    const CASE: &str = "shutdown_with_a_writer_stuck_on_a_client_that_does_not_read";
    if util::in_child(CASE) {
        chat_server::run(0).unwrap();
        return;
    }
    let _wd = util::watchdog(CASE, Duration::from_secs(120));
    let (mut server, out, addr) = ChildServer::start(CASE);
    let mut stuck = Client::connect(addr);
    assert_eq!(stuck.line(), format!("* {} joined\n", stuck.name));
    let mut talker = Client::connect(addr);
    assert_eq!(talker.line(), format!("* {} joined\n", talker.name));
    // 200 lines of 256 KiB (50 MiB): more than the kernel buffers hold
    // (at most 32 + 4 MiB here), so the writer of `stuck` blocks, but fewer
    // lines than its outbox takes.
    const N: usize = 200;
    let body = "y".repeat(256 * 1024);
    let name = talker.name.clone();
    let mut r = BufReader::new(talker.w.try_clone().unwrap());
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        let mut l = String::new();
        while got < N {
            l.clear();
            assert!(r.read_line(&mut l).unwrap() > 0);
            if l.starts_with(&format!("{name}: ")) {
                got += 1;
            }
        }
        r
    });
    for _ in 0..N {
        talker.say(&body);
    }
    talker.r = reader.join().unwrap();
    let t = Instant::now();
    server.sigterm();
    assert_eq!(talker.rest(), "* server shutting down\n");
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The stuck writer had its 2 s to flush before it was killed (a lower
    // bound: proves this case ran the kill path).
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(child_server::rest(out).contains("stopped"));
    drop(stuck);
}
