//! examples/kv_server against real clients: the `redis` crate, redis-cli
//! (and redis-server itself, for byte-exact replies) where installed, and
//! raw sockets for everything a client library would never send.
//!
//! The example's modules are compiled in (their unit tests run here too);
//! each test serves them on a thread of its own (`util::serve`).

mod util;

#[allow(dead_code)]
#[path = "../examples/kv_server"]
mod kv {
    pub mod commands;
    pub mod conn;
    #[path = "../common/linger.rs"]
    pub mod linger;
    pub mod resp;
    pub mod store;
}
#[allow(dead_code)]
#[path = "../examples/common/listen.rs"]
mod listen;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::conn::Config;
use kv::store::Store;
use util::redis::{RedisServer, have_or_skip};
use util::serve::{ServerThread, server_thread};

fn start_with(cfg: Config, store: Arc<Store>) -> ServerThread {
    let s2 = store.clone();
    server_thread(
        move || {
            let l = moss::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            kv::conn::server(l, s2, cfg).expect("server")
        },
        move |s| kv::conn::run(s, &store, 0, 1),
    )
}

fn start() -> ServerThread {
    start_with(Config::default(), Arc::new(Store::new(16)))
}

fn client(addr: SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_connection()
        .expect("connect")
}

/// A raw connection with a read timeout (a hang fails the test).
fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one RESP reply, whole, as bytes.
fn read_reply(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    read_reply_into(s, &mut out);
    out
}

fn read_line(s: &mut impl Read, out: &mut Vec<u8>) -> String {
    let start = out.len();
    let mut b = [0u8];
    while !out.ends_with(b"\r\n") || out.len() - start < 2 {
        s.read_exact(&mut b).expect("a reply line");
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out[start..out.len() - 2]).into_owned()
}

fn read_reply_into(s: &mut impl Read, out: &mut Vec<u8>) {
    let line = read_line(s, out);
    let n: i64 = line[1..].parse().unwrap_or(-1);
    match line.as_bytes()[0] {
        b'$' if n >= 0 => {
            let mut b = vec![0u8; n as usize + 2];
            s.read_exact(&mut b).expect("bulk data");
            out.extend_from_slice(&b);
        }
        b'*' => {
            for _ in 0..n.max(0) {
                read_reply_into(s, out);
            }
        }
        _ => {}
    }
}

/// Reads until EOF (the server closed); everything read.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("the server closes cleanly");
    v
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

#[test]
fn redis_crate_commands_and_errors() {
    let srv = start();
    let mut c = client(srv.addr);
    let q = |c: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<redis::Value> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(c)
    };
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi there").query(&mut c).unwrap();
    assert_eq!(echo, "hi there");
    let () = redis::cmd("SET")
        .arg("k")
        .arg(&b"bin\0\r\nary"[..])
        .query(&mut c)
        .unwrap();
    let v: Vec<u8> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, b"bin\0\r\nary");
    let none: Option<String> = redis::cmd("GET").arg("missing").query(&mut c).unwrap();
    assert_eq!(none, None);
    let n: i64 = redis::cmd("INCR").arg("n").query(&mut c).unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("INCRBY").arg("n").arg(41).query(&mut c).unwrap();
    assert_eq!(n, 42);
    let () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2"])
        .query(&mut c)
        .unwrap();
    let m: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&["a", "zz", "b"])
        .query(&mut c)
        .unwrap();
    assert_eq!(m, [Some("1".into()), None, Some("2".into())]);
    let e: i64 = redis::cmd("EXISTS")
        .arg(&["a", "b", "zz", "a"])
        .query(&mut c)
        .unwrap();
    assert_eq!(e, 3);
    let d: i64 = redis::cmd("DEL").arg(&["a", "zz"]).query(&mut c).unwrap();
    assert_eq!(d, 1);
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 3); // k, n, b

    // Errors come back as Redis's, and the connection stays usable.
    let err = q(&mut c, &["INCR", "k"]).unwrap_err();
    assert_eq!(err.code(), Some("ERR"));
    assert_eq!(
        err.detail(),
        Some("value is not an integer or out of range")
    );
    let err = q(&mut c, &["GET"]).unwrap_err();
    assert_eq!(
        err.detail(),
        Some("wrong number of arguments for 'get' command")
    );
    let err = q(&mut c, &["NOSUCH", "x"]).unwrap_err();
    assert_eq!(
        err.detail(),
        Some("unknown command 'NOSUCH', with args beginning with: 'x' ")
    );
    let err = q(&mut c, &["SET", "k", "v", "EX", "0"]).unwrap_err();
    assert_eq!(err.detail(), Some("invalid expire time in 'set' command"));
    let err = q(&mut c, &["SET", "k", "v", "NX", "XX"]).unwrap_err();
    assert_eq!(err.detail(), Some("syntax error"));
    let () = redis::cmd("SET")
        .arg("big")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    let err = q(&mut c, &["INCR", "big"]).unwrap_err();
    assert_eq!(err.detail(), Some("increment or decrement would overflow"));

    // NX / XX.
    let r: Option<String> = redis::cmd("SET")
        .arg(&["k", "x", "NX"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg(&["new", "x", "XX"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg(&["new", "x", "NX"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));

    let () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 0);
    drop(c);
    srv.until_connections(0, Duration::from_secs(20));
    srv.stop().unwrap();
}

#[test]
fn redis_crate_pipeline_of_ten_thousand() {
    let srv = start();
    let mut c = client(srv.addr);
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.cmd("SET").arg(format!("key:{i}")).arg(i * 3);
        p.cmd("INCR").arg("counter");
    }
    let replies: Vec<redis::Value> = p.query(&mut c).unwrap();
    assert_eq!(replies.len(), 10_000);
    for (i, r) in replies.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(*r, redis::Value::Okay, "reply {i}");
        } else {
            assert_eq!(*r, redis::Value::Int(i as i64 / 2 + 1), "reply {i}");
        }
    }
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.cmd("GET").arg(format!("key:{i}"));
    }
    let vals: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(vals, (0..5000).map(|i| i * 3).collect::<Vec<i64>>());
}

#[test]
fn expiry_ttl_and_reclaiming() {
    let store = Arc::new(Store::new(4));
    let srv = start_with(Config::default(), store.clone());
    let mut c = client(srv.addr);
    let () = redis::cmd("SET")
        .arg(&["short", "v", "PX", "100"])
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&["long", "v", "EX", "1000"])
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&["plain", "v"])
        .query(&mut c)
        .unwrap();
    let ttl =
        |c: &mut redis::Connection, k: &str| -> i64 { redis::cmd("TTL").arg(k).query(c).unwrap() };
    assert_eq!(ttl(&mut c, "long"), 1000);
    assert_eq!(ttl(&mut c, "plain"), -1);
    assert_eq!(ttl(&mut c, "nothing"), -2);
    let pttl: i64 = redis::cmd("PTTL").arg("short").query(&mut c).unwrap();
    assert!((1..=100).contains(&pttl), "{pttl}");
    // EXPIRE's conditions.
    let r: i64 = redis::cmd("EXPIRE")
        .arg(&["plain", "50", "XX"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 0);
    let r: i64 = redis::cmd("EXPIRE")
        .arg(&["long", "50", "GT"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 0);
    let r: i64 = redis::cmd("EXPIRE")
        .arg(&["long", "500", "LT"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    assert_eq!(ttl(&mut c, "long"), 500);
    // INCR keeps the deadline, SET drops it.
    let () = redis::cmd("SET")
        .arg(&["n", "1", "EX", "100"])
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("INCR").arg("n").query(&mut c).unwrap();
    assert_eq!(ttl(&mut c, "n"), 100);
    let () = redis::cmd("SET").arg(&["n", "1"]).query(&mut c).unwrap();
    assert_eq!(ttl(&mut c, "n"), -1);
    // A past deadline deletes.
    let r: i64 = redis::cmd("EXPIRE")
        .arg(&["n", "-1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    assert_eq!(ttl(&mut c, "n"), -2);

    std::thread::sleep(Duration::from_millis(150));
    let v: Option<String> = redis::cmd("GET").arg("short").query(&mut c).unwrap();
    assert_eq!(v, None);
    // 2000 keys that nobody touches again are reclaimed by the sweeper.
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET")
            .arg(format!("t{i}"))
            .arg("x")
            .arg("PX")
            .arg(30)
            .ignore();
    }
    let () = p.query(&mut c).unwrap();
    let t = Instant::now();
    while store.stored() > 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} keys still stored",
            store.stored()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 2); // long, plain
}

#[test]
fn inline_commands() {
    let srv = start();
    let mut s = raw(srv.addr);
    s.write_all(b"PING\r\nset greeting \"hello world\"\r\n\r\nget greeting\nECHO 'it''s'\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut s), b"+PONG\r\n");
    assert_eq!(read_reply(&mut s), b"+OK\r\n");
    assert_eq!(read_reply(&mut s), b"$11\r\nhello world\r\n");
    // 'it''s' is two quoted strings glued: unbalanced by Redis's rules.
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: unbalanced quotes in request\r\n"
    );
}

#[test]
fn quit_answers_what_came_before_and_closes() {
    let srv = start();
    let mut s = raw(srv.addr);
    // Commands behind QUIT are never run, and their bytes left unread do
    // not reset the connection under the replies.
    let mut input = b"PING\r\nSET q 1\r\nQUIT\r\n".to_vec();
    for _ in 0..2000 {
        input.extend_from_slice(b"SET q 2\r\n");
    }
    s.write_all(&input).unwrap();
    assert_eq!(read_to_close(&mut s), b"+PONG\r\n+OK\r\n+OK\r\n");
    let mut c = client(srv.addr);
    let v: String = redis::cmd("GET").arg("q").query(&mut c).unwrap();
    assert_eq!(v, "1");
}

#[test]
fn protocol_errors_reply_then_close() {
    let srv = start();
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"*1\r\n$1000000000000\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*99999999\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$3\r\nGETxx",
            b"-ERR Protocol error: expected CRLF after a bulk string\r\n",
        ),
    ];
    for (input, reply) in cases {
        let mut s = raw(srv.addr);
        // A good command first: its reply still arrives before the error.
        s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        s.write_all(input).unwrap();
        let got = read_to_close(&mut s);
        let mut want = b"+PONG\r\n".to_vec();
        want.extend_from_slice(reply);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "for {:?}",
            String::from_utf8_lossy(input)
        );
    }
    srv.until_connections(0, Duration::from_secs(20));
}

#[test]
fn garbage_never_hurts_the_server() {
    let srv = start();
    // Deterministic pseudo-random garbage of many shapes.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200 {
        let len = (next() % 3000) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match round % 4 {
            0 => junk.insert(0, b'*'),
            1 => junk
                .splice(0..0, b"*3\r\n$3\r\nSET\r\n$".iter().copied())
                .for_each(drop),
            _ => {}
        }
        let mut s = raw(srv.addr);
        let _ = s.write_all(&junk);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        // Whatever came back, the server ends the conversation.
        s.read_to_end(&mut out)
            .expect("the server replies and closes, never hangs");
    }
    srv.until_connections(0, Duration::from_secs(20));
    let mut c = client(srv.addr);
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn half_sent_commands_and_vanishing_clients() {
    let srv = start();
    // A bulk announced at 50 MB, 1 MB sent, then the client vanishes.
    let mut s = raw(srv.addr);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$50000000\r\n")
        .unwrap();
    s.write_all(&vec![b'x'; 1 << 20]).unwrap();
    drop(s);
    // Half a header, then gone.
    let mut s = raw(srv.addr);
    s.write_all(b"*2\r\n$3\r\nGE").unwrap();
    drop(s);
    // A client that pipelines 40 MB of replies and never reads them.
    let mut s = raw(srv.addr);
    s.write_all(&resp(&[b"SET", b"v", &vec![b'v'; 1 << 20]]))
        .unwrap();
    let get = resp(&[b"GET", b"v"]);
    let batch: Vec<u8> = get.iter().copied().cycle().take(get.len() * 40).collect();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&batch).unwrap();
    // Meanwhile others are served at once (the hub is not stuck).
    let mut c = client(srv.addr);
    let () = redis::cmd("SET")
        .arg(&["other", "ok"])
        .query(&mut c)
        .unwrap();
    drop(c);
    drop(s);
    srv.until_connections(0, Duration::from_secs(20));
    let mut c = client(srv.addr);
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, None, "a half-sent SET stored nothing");
}

#[test]
fn query_buffer_limit() {
    let cfg = Config {
        max_bulk: 1 << 20,
        max_query: 64 * 1024,
        ..Config::default()
    };
    let srv = start_with(cfg, Arc::new(Store::new(1)));
    let mut s = raw(srv.addr);
    s.write_all(b"*1\r\n$2000000\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    let mut s = raw(srv.addr);
    let big = resp(&[b"SET", b"k", &vec![b'x'; 200_000]]);
    let _ = s.write_all(&big);
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: the command is longer than the query buffer limit\r\n"
    );
    // Within the limit all is well.
    let mut s = raw(srv.addr);
    s.write_all(&resp(&[b"SET", b"k", &vec![b'y'; 60_000]]))
        .unwrap();
    assert_eq!(read_reply(&mut s), b"+OK\r\n");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    let mut want = b"$60000\r\n".to_vec();
    want.extend(vec![b'y'; 60_000]);
    want.extend_from_slice(b"\r\n");
    assert_eq!(read_reply(&mut s), want);
}

#[test]
fn a_thousand_concurrent_connections() {
    let srv = start();
    let addr = srv.addr;
    let n = 1000;
    moss::run(|| {
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let opened = opened.clone();
                moss::spawn(move || {
                    let mut s = moss::net::TcpStream::connect(addr).expect("connect");
                    opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Everyone is connected before anyone talks.
                    while opened.load(std::sync::atomic::Ordering::SeqCst) < n {
                        moss::sleep(Duration::from_millis(5));
                    }
                    let key = format!("c{i}");
                    s.write_all(&resp(&[b"SET", key.as_bytes(), key.as_bytes()]))
                        .unwrap();
                    s.write_all(&resp(&[b"INCR", b"total"])).unwrap();
                    s.write_all(&resp(&[b"GET", key.as_bytes()])).unwrap();
                    let mut buf = Vec::new();
                    let mut b = [0u8; 256];
                    while buf.iter().filter(|&&c| c == b'\n').count() < 4 {
                        let k = s.read(&mut b).unwrap();
                        assert!(k > 0, "connection {i} closed early");
                        buf.extend_from_slice(&b[..k]);
                    }
                    let text = String::from_utf8(buf).unwrap();
                    assert!(text.starts_with("+OK\r\n:"), "{text:?}");
                    assert!(
                        text.ends_with(&format!("\r\n${}\r\n{key}\r\n", key.len())),
                        "{text:?}"
                    );
                })
            })
            .collect();
        for r in moss::join_all(hs) {
            r.unwrap();
        }
    });
    srv.until_connections(0, Duration::from_secs(20));
    let mut c = client(addr);
    let total: i64 = redis::cmd("GET").arg("total").query(&mut c).unwrap();
    assert_eq!(total, n as i64);
}

#[test]
fn two_hubs_share_one_store() {
    let store = Arc::new(Store::new(64));
    let listeners = Arc::new(listen::Listeners::bind(0).unwrap());
    let servers: Vec<ServerThread> = (0..2)
        .map(|hub| {
            let (st, st2, ls) = (store.clone(), store.clone(), listeners.clone());
            server_thread(
                move || kv::conn::server(ls.take().unwrap(), st, Config::default()).unwrap(),
                move |s| kv::conn::run(s, &st2, hub, 2),
            )
        })
        .collect();
    assert_eq!(servers[0].addr, servers[1].addr);
    let addr = listeners.addr();
    // 64 connections at once: the kernel spreads them over both hubs (all
    // on one would have odds of 2^-63).
    let conns: Vec<redis::Connection> = (0..64).map(|_| client(addr)).collect();
    let per_hub: Vec<usize> = servers.iter().map(|s| s.connections()).collect();
    assert_eq!(per_hub.iter().sum::<usize>(), 64, "{per_hub:?}");
    assert!(per_hub.iter().all(|&n| n > 0), "{per_hub:?}");
    // Every INCR, from either hub, counts exactly once.
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _: i64 = redis::cmd("INCR").arg("shared").query(&mut c).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = client(addr);
    let v: i64 = redis::cmd("GET").arg("shared").query(&mut c).unwrap();
    assert_eq!(v, 64 * 50);
}

/// Differential: the same bytes to redis-server and to kv_server give the
/// same reply bytes, errors included.
#[test]
fn replies_match_redis_server_byte_for_byte() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let srv = start();
    let script: Vec<Vec<&[u8]>> = vec![
        vec![b"PING"],
        vec![b"PING", b"hello"],
        vec![b"PING", b"a", b"b"],
        vec![b"ping"],
        vec![b"ECHO", b""],
        vec![b"ECHO"],
        vec![b"SET", b"k", b"v"],
        vec![b"GET", b"k"],
        vec![b"GET", b"nope"],
        vec![b"GET", b"k", b"x"],
        vec![b"SET", b"k"],
        vec![b"SET", b"k", b"v", b"EX"],
        vec![b"SET", b"k", b"v", b"EX", b"abc"],
        vec![b"SET", b"k", b"v", b"EX", b"-1"],
        vec![b"SET", b"k", b"v", b"PX", b"0"],
        vec![b"SET", b"k", b"v", b"EX", b"9223372036854775807"],
        vec![b"SET", b"k", b"v", b"EX", b"10", b"PX", b"10"],
        vec![b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"10"],
        vec![b"SET", b"k", b"v", b"NX", b"XX"],
        vec![b"SET", b"k", b"v", b"FOO"],
        vec![b"SET", b"k", b"v", b"XX", b"EX", b"100"],
        vec![b"TTL", b"k"],
        vec![b"SET", b"k", b"w", b"KEEPTTL"],
        vec![b"TTL", b"k"],
        vec![b"SET", b"k", b"z", b"nx"],
        vec![b"SET", b"fresh", b"z", b"nx", b"px", b"100000"],
        vec![b"PTTL", b"nope"],
        vec![b"DEL"],
        vec![b"DEL", b"k", b"k", b"nope"],
        vec![b"EXISTS", b"fresh", b"fresh", b"nope"],
        vec![b"INCR", b"n"],
        vec![b"INCR", b"n", b"x"],
        vec![b"DECR", b"n"],
        vec![b"INCRBY", b"n", b"-10"],
        vec![b"INCRBY", b"n", b"1.5"],
        vec![b"DECRBY", b"n", b"-9223372036854775808"],
        vec![b"SET", b"s", b"abc"],
        vec![b"INCR", b"s"],
        vec![b"SET", b"s", b" 1"],
        vec![b"INCR", b"s"],
        vec![b"SET", b"s", b"01"],
        vec![b"INCR", b"s"],
        vec![b"SET", b"s", b"9223372036854775807"],
        vec![b"INCR", b"s"],
        vec![b"SET", b"s", b"-9223372036854775808"],
        vec![b"DECR", b"s"],
        vec![b"MSET", b"a", b"1", b"b"],
        vec![b"MSET", b"a", b"1", b"b", b"2"],
        vec![b"MGET", b"a", b"nope", b"b"],
        vec![b"MGET"],
        vec![b"EXPIRE", b"a"],
        vec![b"EXPIRE", b"a", b"x"],
        vec![b"EXPIRE", b"a", b"100", b"FOO"],
        vec![b"EXPIRE", b"a", b"100", b"NX", b"XX"],
        vec![b"EXPIRE", b"a", b"100", b"GT", b"LT"],
        vec![b"EXPIRE", b"a", b"100", b"GT"],
        vec![b"EXPIRE", b"a", b"100", b"NX"],
        vec![b"EXPIRE", b"a", b"200", b"NX"],
        vec![b"EXPIRE", b"a", b"50", b"GT"],
        vec![b"EXPIRE", b"a", b"300", b"gt"],
        vec![b"TTL", b"a"],
        vec![b"EXPIRE", b"a", b"9223372036854775807"],
        vec![b"EXPIRE", b"a", b"-9223372036854775808"],
        vec![b"PEXPIRE", b"a", b"9223372036854775807"],
        vec![b"EXPIRE", b"nope", b"10"],
        vec![b"EXPIRE", b"b", b"0"],
        vec![b"EXISTS", b"b"],
        vec![b"TTL"],
        vec![b"DBSIZE", b"x"],
        vec![b"DBSIZE"],
        vec![b"FLUSHALL", b"LAZY"],
        vec![b"FLUSHALL", b"ASYNC", b"x"],
        vec![b"CONFIG", b"GET", b"save"],
        vec![b"CONFIG", b"GET", b"appendonly"],
        vec![b"CONFIG"],
        vec![b"CONFIG", b"GET"],
        vec![b"NOSUCH"],
        vec![b"NOSUCH", b"a\r\nb", b"c"],
        vec![b"", b"x"],
        vec![b"FLUSHALL"],
        vec![b"DBSIZE"],
        vec![b"QUIT"],
    ];
    let run = |addr: SocketAddr| -> Vec<String> {
        let mut s = raw(addr);
        script
            .iter()
            .map(|cmd| {
                s.write_all(&resp(cmd)).unwrap();
                String::from_utf8_lossy(&read_reply(&mut s)).into_owned()
            })
            .collect()
    };
    let want = run(redis.addr);
    let got = run(srv.addr);
    for ((cmd, w), g) in script.iter().zip(&want).zip(&got) {
        let cmd: Vec<_> = cmd.iter().map(|a| String::from_utf8_lossy(a)).collect();
        assert_eq!(g, w, "for {cmd:?}");
    }
    // A long unknown command and arguments: Redis truncates to 128 bytes.
    let long = vec![b'z'; 300];
    let cmd = [&long[..], &long[..], b"x"];
    let reply = |addr| {
        let mut s = raw(addr);
        s.write_all(&resp(&cmd)).unwrap();
        read_reply(&mut s)
    };
    assert_eq!(
        String::from_utf8_lossy(&reply(srv.addr)),
        String::from_utf8_lossy(&reply(redis.addr))
    );
}

#[test]
fn redis_cli_and_its_pipe_mode() {
    if !have_or_skip("redis-cli") {
        return;
    }
    let srv = start();
    let port = srv.addr.port().to_string();
    let cli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello world\n");
    // (redis-cli ends an error with an empty line)
    assert_eq!(
        cli(&["INCR", "greeting"]),
        "ERR value is not an integer or out of range\n\n"
    );
    // Mass insertion: 20,000 commands streamed, then redis-cli's own ECHO
    // marker to find the end of the replies.
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend(resp(&[b"SET", format!("m{i}").as_bytes(), b"1"]));
    }
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli --pipe");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 20000"), "{text}");
    assert_eq!(cli(&["DBSIZE"]), "20001\n");
}
