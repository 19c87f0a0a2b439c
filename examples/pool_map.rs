//! A `moss::pool::Pool` of 5 coroutines fetching 50 items from a local
//! server: at most 5 requests are in flight at once, `map` returns the
//! answers in input order, and the whole run takes about 50 / 5 request
//! times instead of 50.
//!
//! The server (a coroutine on 127.0.0.1, port chosen by the OS) answers each
//! request after 20 ms, like a slow backend.
//!
//! Run: `cargo run --example pool_map`

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::net::{TcpListener, TcpStream};
use moss::pool::Pool;

const ITEMS: u32 = 50;
const POOL: usize = 5;
const LATENCY: Duration = Duration::from_millis(20);

/// Answers one line per connection: "item N" -> "value of item N".
fn serve(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        moss::spawn(move || {
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_ok() {
                moss::sleep(LATENCY);
                let _ = writeln!(&conn, "value of {}", line.trim());
            }
        });
    }
}

fn fetch(addr: SocketAddr, i: u32) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the local server");
    writeln!(s, "item {i}").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    answer.trim().to_owned()
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = moss::spawn(move || serve(listener));

    let pool = Pool::new(POOL);
    let (now, max) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let (n, m) = (now.clone(), max.clone());
    let start = Instant::now();
    let answers = pool.map(
        move |i| {
            n.set(n.get() + 1);
            m.set(m.get().max(n.get()));
            let a = fetch(addr, i);
            n.set(n.get() - 1);
            a
        },
        0..ITEMS,
    );
    let took = start.elapsed();

    for (i, a) in answers.iter().enumerate().step_by(10) {
        println!("answer {i:>2}: {a}");
    }
    assert_eq!(answers.len(), ITEMS as usize);
    assert!(
        answers
            .iter()
            .enumerate()
            .all(|(i, a)| *a == format!("value of item {i}"))
    );
    println!(
        "fetched {ITEMS} items with a pool of {POOL}: at most {} in flight, {:.0} ms \
         (one at a time would take {:.0} ms)",
        max.get(),
        took.as_secs_f64() * 1000.0,
        (LATENCY * ITEMS).as_secs_f64() * 1000.0
    );
    assert_eq!(max.get(), POOL);

    // Results as they complete, with the same pool.
    let first: Vec<u32> = pool
        .imap_unordered(
            |ms: u32| {
                moss::sleep(Duration::from_millis(ms as u64));
                ms
            },
            [90, 10, 50],
        )
        .collect();
    println!("imap_unordered yields in completion order: {first:?}");
    server.kill();
}
