//! Calling an async client library from coroutines: 100 coroutines on one
//! hub query Redis through the `redis` crate's tokio API, each written as a
//! plain blocking call, while the hub keeps running a ticker.
//!
//! ```sh
//! cargo run --example async_client --features tokio                  # starts its own redis-server
//! cargo run --example async_client --features tokio -- redis://127.0.0.1:6379/
//! ```
//!
//! Without a URL it starts a private `redis-server` (persistence off) on a
//! free loopback port, so `redis-server` must be installed.

use std::cell::Cell;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::compat;
use moss::sync::AsyncResult;

/// One coroutine's work: an ordinary function that blocks (the coroutine
/// parks; tokio runs the future).
fn query(client: &redis::Client, i: u32) -> redis::RedisResult<String> {
    let client = client.clone();
    compat::tokio(async move {
        let mut con = client.get_multiplexed_async_connection().await?;
        let key = format!("async_client:{i}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(format!("hello {i}"))
            .query_async(&mut con)
            .await?;
        // Waits 100 ms on the server (an empty list) without blocking it.
        let _: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(format!("{key}:empty"))
            .arg(0.1)
            .query_async(&mut con)
            .await?;
        redis::cmd("GET").arg(&key).query_async(&mut con).await
    })
}

fn main() {
    let (url, _server) = match std::env::args().nth(1) {
        Some(url) => (url, None),
        None => {
            let (url, server) = start_redis();
            (url, Some(server))
        }
    };
    let client = redis::Client::open(url.as_str()).expect("a redis:// URL");

    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let (t, d) = (ticks.clone(), done.clone());
    let ticker = moss::spawn(move || {
        while !d.get() {
            t.set(t.get() + 1);
            moss::sleep(Duration::from_millis(10));
        }
    });

    let start = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            moss::spawn(move || query(&client, i))
        })
        .collect();
    let replies: Vec<String> = moss::join_all(handles)
        .into_iter()
        .map(|r| r.expect("coroutine").expect("redis"))
        .collect();
    let took = start.elapsed();
    done.set(true);
    ticker.join().unwrap();
    assert_eq!(replies[42], "hello 42");
    println!(
        "100 coroutines x (SET, BLPOP 100 ms, GET) against {url}: {took:.0?} \
         (one after the other: > 10 s); the ticker ran {} times meanwhile",
        ticks.get()
    );

    // Runtime-agnostic futures need no tokio: block_on polls them on the
    // coroutine's own stack.
    let (tx, rx) = futures::channel::oneshot::channel();
    let waiter = moss::spawn(move || moss::block_on(rx).unwrap());
    moss::spawn(move || tx.send("a oneshot between two coroutines").unwrap());
    println!("block_on: {}", waiter.join().unwrap());

    // The other direction: a tokio task awaits what a coroutine produces.
    let result = AsyncResult::new();
    let awaited = result.clone();
    let producer = moss::spawn(move || {
        moss::sleep(Duration::from_millis(10));
        result.set(6 * 7);
    });
    let v = compat::tokio(async move { tokio::spawn(async move { awaited.await }).await.unwrap() });
    producer.join().unwrap();
    println!("a tokio task awaited a coroutine's AsyncResult: {v}");
}

/// A private `redis-server` on a free loopback port; killed when dropped.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (String, RedisServer) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("cannot start redis-server ({e}): install it, or pass a redis:// URL");
            std::process::exit(2);
        });
    let server = RedisServer(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (format!("redis://{addr}/"), server)
}
