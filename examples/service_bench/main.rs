//! The service benchmark: the two example services against the servers a
//! user would compare them with, driven by clients nobody here wrote.
//!
//! ```sh
//! cargo run --release --example service_bench            # the whole table (~8 min)
//! cargo run --release --example service_bench -- --only redis --rounds 1
//! cargo run --release --example service_bench -- --serve hyper --port 8080   # one server alone
//! ```
//!
//! * `redis-benchmark -t ping,set,get -n 200000 -c 50` with `-P 1` and
//!   `-P 16` against the real `redis-server` (persistence off) and against
//!   examples/kv_server on one hub.
//! * `wrk -t1 --latency` for 5 s on `GET /` with 64 and 512 connections
//!   against examples/http_server on one hub and a hyper HTTP/1.1 server on
//!   a tokio current-thread runtime doing the same routes with the same
//!   header read timeout (`servers.rs`).
//! * User-space instructions per request: each server again under
//!   `valgrind --tool=callgrind`; after a warm-up the counters are zeroed,
//!   a fixed number of requests is sent (redis-benchmark `-n`, or
//!   `load.rs`'s keep-alive GETs with wrk's request bytes), and the counts
//!   are dumped. Instruction counts do not depend on the machine's load,
//!   unlike every wall-clock number here.
//!
//! As in echo_bench (whose pieces live in `examples/common/bench.rs`),
//! servers run as child processes pinned to CPU 0 and the load runs pinned
//! to CPU 1; peer and moss alternate within each round and the table shows
//! medians over rounds. Each server's CPU time (from `wait4`) is divided by
//! the requests it served: what a request costs the server, which req/s
//! hides once a client saturates its CPU.
//!
//! Missing tools (Debian packages redis-server, redis-tools, wrk, valgrind)
//! are reported and their rows skipped.

#[path = "../common/bench.rs"]
mod bench;
#[path = "../common/callgrind.rs"]
mod callgrind;
#[path = "../common/linger.rs"]
mod linger;
#[allow(dead_code)]
#[path = "../common/listen.rs"]
mod listen;
#[allow(dead_code)]
#[path = "../http_server"]
mod http {
    pub mod conn;
    use crate::linger;
    pub mod request;
}
#[allow(dead_code)]
#[path = "../kv_server"]
mod kv {
    pub mod commands;
    pub mod conn;
    use crate::linger;
    pub mod resp;
    pub mod store;
}
mod load;
mod servers;
mod tools;

use std::time::Duration;

use servers::Kind;

const USAGE: &str = "usage:
  service_bench [--rounds 3] [--requests 200000] [--clients 50] [--pipelines 1,16]
                [--conns 64,512] [--secs 5] [--cg-requests 20000]
                [--hold 10000] [--only redis|http|callgrind|hold|shards] [--keep-profiles]
  service_bench --serve kv|http|hyper [--port 0]
  service_bench --serve kv --threads N --shards N";

fn die(msg: &str) -> ! {
    eprintln!("service_bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

struct Opts {
    rounds: usize,
    requests: usize,
    clients: usize,
    pipelines: Vec<usize>,
    conns: Vec<usize>,
    secs: f64,
    cg_requests: usize,
    only: Option<String>,
    keep_profiles: bool,
    hold: usize,
}

fn list<T: std::str::FromStr>(v: &str) -> Vec<T> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| die(&format!("bad value {x:?}")))
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        rounds: 3,
        requests: 200_000,
        clients: 50,
        pipelines: vec![1, 16],
        conns: vec![64, 512],
        secs: 5.0,
        cg_requests: 20_000,
        only: None,
        keep_profiles: false,
        hold: 10_000,
    };
    let (mut serve, mut port, mut threads, mut shards) = (None, 0u16, 1usize, 64usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--rounds" => o.rounds = list(&val())[0],
            "--requests" => o.requests = list(&val())[0],
            "--clients" => o.clients = list(&val())[0],
            "--pipelines" => o.pipelines = list(&val()),
            "--conns" => o.conns = list(&val()),
            "--secs" => o.secs = list(&val())[0],
            "--cg-requests" => o.cg_requests = list(&val())[0],
            "--only" => o.only = Some(val()),
            "--keep-profiles" => o.keep_profiles = true,
            "--hold" => o.hold = list(&val())[0],
            "--serve" => {
                let k = val();
                serve = Some(Kind::parse(&k).unwrap_or_else(|| die(&format!("unknown server {k}"))))
            }
            "--port" => port = list(&val())[0],
            "--threads" => threads = list(&val())[0],
            "--shards" => shards = list(&val())[0],
            _ => die(&format!("unknown argument {a}")),
        }
    }
    if let Some(kind) = serve {
        if kind == Kind::Kv && threads > 1 {
            return servers::serve_kv_threads(threads, shards);
        }
        let l = bench::bind(port).unwrap_or_else(|e| die(&format!("bind: {e}")));
        return kind.serve(bench::serve_child(l));
    }
    o.rounds = o.rounds.max(1);
    bench::raise_nofile();
    bench::pin_self(bench::LOAD_CPU);
    let want = |s: &str| o.only.as_deref().is_none_or(|x| x == s);
    let mut table = Table::default();
    if want("redis") {
        match missing(&["redis-server", "redis-benchmark"]) {
            None => redis_rows(&o, &mut table),
            Some(m) => table.skipped(format!("redis rows: {m}")),
        }
    }
    if want("http") {
        match missing(&["wrk"]) {
            None => http_rows(&o, &mut table),
            Some(m) => table.skipped(format!("wrk rows: {m}")),
        }
    }
    if want("hold") {
        hold_rows(&o, &mut table);
    }
    // Not in the default table: how kv_server's store is shared.
    if o.only.as_deref() == Some("shards") {
        match missing(&["redis-benchmark"]) {
            None => shard_rows(&o, &mut table),
            Some(m) => table.skipped(format!("shard rows: {m}")),
        }
    }
    if want("callgrind") {
        match missing(&["valgrind", "callgrind_control"]) {
            None => callgrind_rows(&o, &mut table),
            Some(m) => table.skipped(format!("instruction counts: {m}")),
        }
    }
    table.print(&o);
}

/// `None` if every program is installed, else which are not.
fn missing(progs: &[&str]) -> Option<String> {
    let m: Vec<&str> = progs.iter().copied().filter(|p| !bench::have(p)).collect();
    (!m.is_empty()).then(|| {
        format!(
            "{} not installed (apt-get install redis-server redis-tools wrk valgrind)",
            m.join(", ")
        )
    })
}

// ------------------------------------------------------------ measurements

/// One server's result of one run.
struct Run {
    /// Requests per second by test name (redis) or "GET /" (wrk).
    rows: Vec<(String, f64, f64, f64)>,
    /// Requests the server answered and the CPU it spent in its whole life.
    requests: f64,
    user: Duration,
    sys: Duration,
}

fn redis_rows(o: &Opts, table: &mut Table) {
    let tests = "ping,set,get";
    for &p in &o.pipelines {
        let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
        for round in 0..o.rounds {
            for (i, runs) in runs.iter_mut().enumerate() {
                let (rows, (user, sys)) = if i == 0 {
                    let r = tools::Redis::start(&[]);
                    let rows = tools::redis_benchmark(r.addr, tests, o.requests, o.clients, p);
                    (rows, r.stop())
                } else {
                    let s = bench::start_self(&["--serve", "kv"], &[]);
                    let rows = tools::redis_benchmark(s.addr, tests, o.requests, o.clients, p);
                    (rows, bench::stop(s))
                };
                let name = ["redis-server", "kv_server"][i];
                for r in &rows {
                    eprintln!(
                        "  -P {p:<2} round {} {name:<13} {:<12} {:>9.0} req/s  p50 {:.3} p99 {:.3} ms",
                        round + 1,
                        r.test,
                        r.rps,
                        r.p50_ms,
                        r.p99_ms
                    );
                }
                runs.push(Run {
                    requests: (o.requests * rows.len()) as f64,
                    rows: rows
                        .into_iter()
                        .map(|r| (r.test, r.rps, r.p50_ms, r.p99_ms))
                        .collect(),
                    user,
                    sys,
                });
            }
        }
        table.compare(
            &format!("redis-benchmark -P {p}"),
            "redis-server",
            &runs[0],
            &runs[1],
        );
    }
}

fn http_rows(o: &Opts, table: &mut Table) {
    for &c in &o.conns {
        let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
        for round in 0..o.rounds {
            for (i, kind) in [Kind::Hyper, Kind::Http].into_iter().enumerate() {
                let s = bench::start_self(&["--serve", kind.key()], &[]);
                let w = tools::wrk(s.addr, c, o.secs, "/");
                let (user, sys) = bench::stop(s);
                eprintln!(
                    "  wrk -c {c:<4} round {} {:<11} {:>9.0} req/s  p50 {:.3} p99 {:.3} ms  errors {}",
                    round + 1,
                    kind.key(),
                    w.rps,
                    w.p50_ms,
                    w.p99_ms,
                    w.errors
                );
                assert_eq!(w.errors, 0, "{} answered wrk with errors", kind.key());
                runs[i].push(Run {
                    rows: vec![("GET /".into(), w.rps, w.p50_ms, w.p99_ms)],
                    requests: w.requests as f64,
                    user,
                    sys,
                });
            }
        }
        table.compare(&format!("wrk -c {c}"), "hyper-ct", &runs[0], &runs[1]);
    }
}

/// `--hold` connections open at once on each moss server (one hub), each
/// answered once all are open; the server's RSS then.
fn hold_rows(o: &Opts, table: &mut Table) {
    if o.hold == 0 {
        return;
    }
    let cases: [(Kind, &[u8], &[u8]); 2] = [
        (Kind::Kv, b"PING\r\n", b"+PONG\r\n"),
        (
            Kind::Http,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            http::conn::HELLO,
        ),
    ];
    for (kind, req, want) in cases {
        let s = bench::start_self(&["--serve", kind.key()], &[]);
        let t = std::time::Instant::now();
        let ok = moss::run(|| load::hold(s.addr, o.hold, req, want));
        let secs = t.elapsed().as_secs_f64();
        let rss = std::fs::read_to_string(format!("/proc/{}/status", s.child.id()))
            .ok()
            .and_then(|st| {
                let l = st.lines().find(|l| l.starts_with("VmHWM"))?.to_string();
                l.split_whitespace().nth(1).map(str::to_string)
            })
            .unwrap_or_default();
        bench::stop(s);
        eprintln!(
            "  hold {} {}: {ok} answered in {secs:.2} s, peak RSS {rss} kB",
            o.hold,
            kind.key()
        );
        table.row([
            &format!("{} connections open at once, one hub", o.hold),
            "",
            &format!("{}: answered / peak RSS", kind.key()),
            "",
            &format!("{ok} / {} MB", rss.parse::<u64>().unwrap_or(0) / 1024),
            "",
        ]);
    }
}

/// kv_server with 2 hubs and 1, 8 or 64 store shards under redis-benchmark
/// with 2 threads on random keys, -P 16 (where a request costs the server
/// least, so lock contention weighs most). Nothing is pinned: the two hubs
/// need both CPUs, so the load competes with them.
fn shard_rows(o: &Opts, table: &mut Table) {
    let counts = [1usize, 8, 64];
    let mut rps = vec![vec![Vec::new(); 2]; counts.len()];
    let args: Vec<String> = [
        "-t",
        "set,get",
        "-n",
        &(o.requests * 5).to_string(),
        "-r",
        "1000000",
        "-c",
        "50",
        "-P",
        "16",
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for round in 0..o.rounds {
        for (i, &n) in counts.iter().enumerate() {
            let s = bench::start_self_with(
                &[
                    "--serve",
                    "kv",
                    "--threads",
                    "2",
                    "--shards",
                    &n.to_string(),
                ],
                &[],
                bench::on_all_cpus,
            );
            let rows = tools::redis_benchmark_with(s.addr, &args, bench::on_all_cpus);
            bench::stop(s);
            for (t, r) in rows.iter().enumerate().take(2) {
                eprintln!(
                    "  shards {n:<3} round {} {:<4} {:>9.0} req/s",
                    round + 1,
                    r.test,
                    r.rps
                );
                rps[i][t].push(r.rps);
            }
        }
    }
    // The store alone: 2 threads, each 1,000,000 GETs and SETs of random
    // keys, no I/O: the most contention the locks can see.
    let mut ns = vec![Vec::new(); counts.len()];
    for _ in 0..o.rounds {
        for (i, &n) in counts.iter().enumerate() {
            ns[i].push(store_ns_per_op(n));
        }
    }
    let base = bench::median(ns[0].clone());
    for (i, &n) in counts.iter().enumerate().skip(1) {
        let v = bench::median(ns[i].clone());
        table.row([
            "Store alone, 2 threads, GET+SET of random keys",
            "1 shard",
            &format!("CPU ns/op, {n} shards"),
            &format!("{base:.0}"),
            &format!("{v:.0}"),
            &format!("{:.2}", v / base),
        ]);
    }
    for (t, test) in ["SET", "GET"].iter().enumerate() {
        let base = bench::median(rps[0][t].clone());
        for (i, &n) in counts.iter().enumerate().skip(1) {
            let v = bench::median(rps[i][t].clone());
            table.row([
                &format!("kv_server 2 hubs, redis-benchmark --threads 2 -r 1e6 -P 16 {test}"),
                "1 shard",
                &format!("req/s, {n} shards"),
                &format!("{base:.0}"),
                &format!("{v:.0}"),
                &format!("{:.2}", v / base),
            ]);
        }
    }
}

/// CPU ns per store operation (both threads' CPU time over all their
/// operations) with 2 threads hammering one store. CPU time, not wall
/// time: a loaded machine preempts the threads, which wall time would
/// count, while the cost of contention (cache-line transfers, futex
/// waits) is CPU time either way.
fn store_ns_per_op(shards: usize) -> f64 {
    const OPS: u64 = 1_000_000;
    let store = std::sync::Arc::new(kv::store::Store::new(shards));
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let hs: Vec<_> = (0..2u64)
        .map(|th| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                bench::pin_self(th as usize);
                start.wait();
                let t0 = thread_cpu();
                let mut out = Vec::with_capacity(64);
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ th;
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = (x % 100_000).to_le_bytes();
                    if x & 1 == 0 {
                        store.set(&key, b"xxx", Default::default());
                    } else {
                        out.clear();
                        store.get_into(&key, &mut out);
                    }
                }
                thread_cpu() - t0
            })
        })
        .collect();
    let cpu: std::time::Duration = hs
        .into_iter()
        .map(|h| h.join().expect("store thread"))
        .sum();
    cpu.as_nanos() as f64 / (2 * OPS) as f64
}

/// The calling thread's CPU time.
fn thread_cpu() -> std::time::Duration {
    // SAFETY: clock_gettime writes a timespec we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn callgrind_rows(o: &Opts, table: &mut Table) {
    let dir = std::env::temp_dir();
    let out = |tag: &str| {
        dir.join(format!("service_bench.{tag}.{}.%p", std::process::id()))
            .to_string_lossy()
            .into_owned()
    };
    let n = o.cg_requests;
    if missing(&["redis-server", "redis-benchmark"]).is_none() {
        let tests = "ping,set,get";
        for &p in &o.pipelines {
            let mut ir = [0.0; 2];
            for (i, tag) in ["redis", "kv"].into_iter().enumerate() {
                let file = out(tag);
                let wrapper = callgrind::wrapper(&file);
                let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
                let measure = |addr, pid| {
                    tools::redis_benchmark(addr, "set,get", 2000, o.clients, p);
                    callgrind::zero(pid);
                    let rows = tools::redis_benchmark(addr, tests, n, o.clients, p);
                    callgrind::dump(pid, &file) as f64 / (n * rows.len()) as f64
                };
                ir[i] = if i == 0 {
                    let r = tools::Redis::start(&w);
                    let v = measure(r.addr, r.child.id());
                    r.stop();
                    v
                } else {
                    let s = bench::start_self(&["--serve", "kv"], &w);
                    tools::wait_for_ping(s.addr, Duration::from_secs(60));
                    let v = measure(s.addr, s.child.id());
                    bench::stop(s);
                    v
                };
                callgrind::keep_or_remove(o.keep_profiles, &file);
                eprintln!(
                    "  callgrind -P {p:<2} {tag:<6} {:>8.0} instructions/request",
                    ir[i]
                );
            }
            table.instructions(
                &format!("redis-benchmark -P {p}, {tests}"),
                "redis-server",
                ir,
            );
        }
    }
    let mut ir = [0.0; 2];
    for (i, kind) in [Kind::Hyper, Kind::Http].into_iter().enumerate() {
        let file = out(kind.key());
        let wrapper = callgrind::wrapper(&file);
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let s = bench::start_self(&["--serve", kind.key()], &w);
        let pid = s.child.id();
        let warm = moss::run(|| load::http_gets(s.addr, "/", 64, 2000));
        assert_eq!(warm, 2000, "{} failed the warm-up", kind.key());
        callgrind::zero(pid);
        let done = moss::run(|| load::http_gets(s.addr, "/", 64, n));
        assert_eq!(done, n, "{} failed requests", kind.key());
        ir[i] = callgrind::dump(pid, &file) as f64 / n as f64;
        bench::stop(s);
        callgrind::keep_or_remove(o.keep_profiles, &file);
        eprintln!(
            "  callgrind http {:<6} {:>8.0} instructions/request",
            kind.key(),
            ir[i]
        );
    }
    table.instructions("GET /, 64 keep-alive connections", "hyper-ct", ir);
}

// ------------------------------------------------------------------ table

#[derive(Default)]
struct Table {
    lines: Vec<[String; 6]>,
    notes: Vec<String>,
}

impl Table {
    fn skipped(&mut self, why: String) {
        eprintln!("service_bench: skipping {why}");
        self.notes.push(format!("skipped {why}"));
    }

    fn row(&mut self, cells: [&str; 6]) {
        self.lines.push(cells.map(str::to_string));
    }

    /// Rows for runs of a peer (index 0) and moss (index 1): req/s and
    /// latency per test, then CPU per request.
    fn compare(&mut self, workload: &str, peer: &str, p: &[Run], m: &[Run]) {
        let tests: Vec<String> = p[0].rows.iter().map(|r| r.0.clone()).collect();
        for (t, test) in tests.iter().enumerate() {
            let med = |runs: &[Run], f: fn(&(String, f64, f64, f64)) -> f64| {
                bench::median(runs.iter().filter_map(|r| r.rows.get(t)).map(f).collect())
            };
            let (pr, mr) = (med(p, |r| r.1), med(m, |r| r.1));
            let w = format!("{workload} {test}");
            self.row([
                &w,
                peer,
                "req/s",
                &format!("{pr:.0}"),
                &format!("{mr:.0}"),
                &format!("{:.2}", mr / pr),
            ]);
            let lat =
                |runs: &[Run]| format!("{:.3} / {:.3}", med(runs, |r| r.2), med(runs, |r| r.3));
            self.row([&w, peer, "p50 / p99 ms", &lat(p), &lat(m), ""]);
        }
        let cpu = |runs: &[Run], f: fn(&Run) -> Duration| {
            bench::median(
                runs.iter()
                    .map(|r| f(r).as_secs_f64() * 1e6 / r.requests.max(1.0))
                    .collect(),
            )
        };
        for (what, f) in [
            (
                "server user µs/req",
                (|r: &Run| r.user) as fn(&Run) -> Duration,
            ),
            ("server sys µs/req", |r: &Run| r.sys),
        ] {
            let (pc, mc) = (cpu(p, f), cpu(m, f));
            self.row([
                workload,
                peer,
                what,
                &format!("{pc:.2}"),
                &format!("{mc:.2}"),
                &format!("{:.2}", mc / pc),
            ]);
        }
    }

    fn instructions(&mut self, workload: &str, peer: &str, ir: [f64; 2]) {
        self.row([
            workload,
            peer,
            "user instr/req",
            &format!("{:.0}", ir[0]),
            &format!("{:.0}", ir[1]),
            &format!("{:.2}", ir[1] / ir[0]),
        ]);
    }

    fn print(&self, o: &Opts) {
        println!();
        println!(
            "service benchmark: medians of {} interleaved rounds; servers pinned to CPU 0, load to CPU 1; \
             redis-benchmark -n {} -c {}; wrk -t1 -d {}s; callgrind over {} requests",
            o.rounds, o.requests, o.clients, o.secs, o.cg_requests
        );
        let head = ["workload", "peer", "measure", "peer", "moss", "moss/peer"];
        let mut w = head.map(|h| h.chars().count());
        for l in &self.lines {
            for (i, c) in l.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                if i >= 3 {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
                s.push_str("  ");
            }
            println!("{}", s.trim_end());
        };
        line(head);
        for l in &self.lines {
            line([&l[0], &l[1], &l[2], &l[3], &l[4], &l[5]]);
        }
        println!(
            "(moss = kv_server or http_server on one hub; moss/peer > 1 is better for req/s, < 1 for costs)"
        );
        for n in &self.notes {
            println!("{n}");
        }
    }
}
