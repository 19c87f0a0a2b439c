//! The echo-server benchmark: moss against the servers a user would pick
//! instead, measured the same way in the same run.
//!
//! ```sh
//! cargo run --release --example echo_bench                 # the default table (~1 min)
//! cargo run --release --example echo_bench -- --conns 64,512,2000 --size 64,4096 --rounds 5
//! cargo run --release --example echo_bench -- --strace     # syscalls per message (needs strace)
//! cargo run --release --example echo_bench -- --callgrind  # instructions per message (needs valgrind)
//! cargo run --release --example echo_bench -- --serve tokio --port 7000   # one server alone
//! cargo run --release --example echo_bench -- --load --addr 127.0.0.1:7000 --conns 64
//! ```
//!
//! Each server runs as a child process of this binary (`--serve KIND`)
//! pinned to CPU 0; the load generator (`load.rs`, moss coroutines on one
//! thread) runs in this process pinned to CPU 1. Runs are interleaved and
//! repeated (A B C A B C …). Each server's user and system CPU time comes
//! from `wait4`'s rusage when it exits (µs resolution; `/proc/PID/stat`
//! counts 10 ms ticks) and is divided by every message it echoed, so the
//! table shows what a message costs the server, which msgs/s alone hides
//! once both CPUs saturate in the kernel.
//!
//! `--callgrind` runs each server (moss, tokio, raw by default) under
//! valgrind's callgrind instead, the load outside it: after the warm-up
//! (every connection open) the load pauses, the server's counters are
//! zeroed, the load runs for `--duration` (default 5 s here), pauses again
//! with every connection still open, and the counters are read. Both
//! pauses leave no message in flight, so the instructions divided by the
//! messages echoed in between are exactly what a message costs the
//! server in user space (its kernel time is not counted), on any machine
//! load. `--keep-profiles` keeps the profiles for `callgrind_annotate`.
//!
//! To add a server kind: one variant and one function in `servers.rs`.

#[path = "../common/bench.rs"]
mod bench;
#[path = "../common/callgrind.rs"]
mod callgrind;
mod load;
mod servers;

use std::net::SocketAddr;
use std::time::Duration;

use bench::{Server, median, pin_self, raise_nofile, start_self, stop};
use load::{Load, LoadResult};
use servers::Kind;

struct Opts {
    conns: Vec<usize>,
    sizes: Vec<usize>,
    pipeline: usize,
    duration: Duration,
    warmup: Duration,
    rounds: usize,
    kinds: Vec<Kind>,
    buf: usize,
    hold: usize,
    strace: bool,
    callgrind: bool,
    keep_profiles: bool,
}

const USAGE: &str = "usage:
  echo_bench [--conns 64,512] [--size 64] [--pipeline 1] [--duration SECS] [--warmup SECS]
             [--rounds 3] [--servers moss,moss-uring,monkey,tokio,std,raw] [--buf 4096] [--hold 10000] [--strace]
  echo_bench --callgrind [--conns 64,512] [--size 64] [--servers moss,tokio,raw] [--duration 5]
             [--warmup 2] [--keep-profiles]
  echo_bench --serve moss|moss-uring|monkey|tokio|std|raw [--port 0] [--buf 4096]
  echo_bench --load --addr IP:PORT [--conns 64] [--size 64] [--pipeline 1] [--duration SECS]";

fn die(msg: &str) -> ! {
    eprintln!("echo_bench: {msg}\n{USAGE}");
    std::process::exit(2)
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
        conns: vec![64, 512],
        sizes: vec![64],
        pipeline: 1,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        rounds: 3,
        kinds: Kind::ALL.to_vec(),
        buf: 4096,
        hold: 10_000,
        strace: false,
        callgrind: false,
        keep_profiles: false,
    };
    let (mut duration, mut warmup, mut kinds) = (None, None, None);
    let (mut serve, mut port, mut load_addr, mut load_mode) = (None, 0u16, None, false);
    let mut i = 0;
    let next = |i: &mut usize| -> String {
        *i += 1;
        args.get(*i)
            .cloned()
            .unwrap_or_else(|| die("missing value"))
    };
    while i < args.len() {
        let a = args[i].clone();
        match a.as_str() {
            "--conns" => o.conns = list(&next(&mut i)),
            "--size" => o.sizes = list(&next(&mut i)),
            "--pipeline" => o.pipeline = list(&next(&mut i))[0],
            "--duration" => duration = Some(Duration::from_secs_f64(list(&next(&mut i))[0])),
            "--warmup" => warmup = Some(Duration::from_secs_f64(list(&next(&mut i))[0])),
            "--rounds" => o.rounds = list(&next(&mut i))[0],
            "--buf" => o.buf = list(&next(&mut i))[0],
            "--hold" => o.hold = list(&next(&mut i))[0],
            "--strace" => o.strace = true,
            "--callgrind" => o.callgrind = true,
            "--keep-profiles" => o.keep_profiles = true,
            "--servers" => {
                kinds = Some(
                    next(&mut i)
                        .split(',')
                        .map(|k| {
                            Kind::parse(k).unwrap_or_else(|| die(&format!("unknown server {k}")))
                        })
                        .collect(),
                )
            }
            "--serve" => {
                let k = next(&mut i);
                serve = Some(Kind::parse(&k).unwrap_or_else(|| die(&format!("unknown server {k}"))))
            }
            "--port" => port = list(&next(&mut i))[0],
            "--load" => load_mode = true,
            "--addr" => {
                load_addr = Some(
                    next(&mut i)
                        .parse::<SocketAddr>()
                        .unwrap_or_else(|_| die("bad --addr")),
                )
            }
            _ => die(&format!("unknown argument {a}")),
        }
        i += 1;
    }
    if o.callgrind {
        // Under callgrind a server runs ~50x slower: longer windows, and
        // only the servers the instruction table compares by default.
        o.duration = Duration::from_secs(5);
        o.warmup = Duration::from_secs(2);
        o.kinds = vec![Kind::Moss, Kind::Tokio, Kind::Raw];
    }
    o.duration = duration.unwrap_or(o.duration);
    o.warmup = warmup.unwrap_or(o.warmup);
    o.kinds = kinds.unwrap_or(o.kinds);
    o.pipeline = o.pipeline.max(1);
    o.rounds = o.rounds.max(1);
    if let Some(kind) = serve {
        return serve_child(kind, port, o.buf);
    }
    raise_nofile();
    if load_mode {
        let addr = load_addr.unwrap_or_else(|| die("--load needs --addr"));
        let l = Load {
            conns: o.conns[0],
            size: o.sizes[0],
            pipeline: o.pipeline,
            warmup: o.warmup,
            duration: o.duration,
        };
        let r = load::run(addr, l);
        println!(
            "{} msgs in {:.1} s: {:.0} msgs/s, p50 {:?} p99 {:?} p999 {:?}, {} errors",
            r.msgs,
            r.secs,
            r.rate(),
            r.pct(0.5),
            r.pct(0.99),
            r.pct(0.999),
            r.errors
        );
        return;
    }
    pin_self(bench::LOAD_CPU);
    if o.strace {
        return strace_report(&o);
    }
    if o.callgrind {
        return callgrind_report(&o);
    }
    harness(&o);
}

// ---------------------------------------------------------------- children

/// `--serve`: bind, report the port on stdout, serve until stdin closes.
fn serve_child(kind: Kind, port: u16, buf: usize) {
    let l = bench::bind(port).unwrap_or_else(|e| die(&format!("bind: {e}")));
    kind.serve(bench::serve_child(l), buf);
}

/// Starts `exe --serve kind` (optionally under `wrapper`), pinned to CPU 0.
fn start(kind: Kind, buf: usize, wrapper: &[&str]) -> Server {
    start_self(&["--serve", kind.key(), "--buf", &buf.to_string()], wrapper)
}

// ---------------------------------------------------------------- harness

struct Sample {
    load: LoadResult,
    user: Duration,
    sys: Duration,
}

fn one_run(kind: Kind, l: Load, buf: usize) -> Sample {
    let s = start(kind, buf, &[]);
    let load = moss::run(|| load::run(s.addr, l));
    // The server's whole life (start-up and warm-up included) over every
    // message it echoed: start-up is well under 1% of a run.
    let (user, sys) = stop(s);
    Sample { load, user, sys }
}

fn harness(o: &Opts) {
    let runs = o.conns.len() * o.sizes.len() * o.rounds * o.kinds.len();
    eprintln!(
        "echo_bench: {runs} runs of {:.1}+{:.1} s, servers on CPU 0, load on CPU 1 ...",
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64()
    );
    let mut rows = Vec::new();
    for &conns in &o.conns {
        for &size in &o.sizes {
            let l = Load {
                conns,
                size,
                pipeline: o.pipeline,
                warmup: o.warmup,
                duration: o.duration,
            };
            let mut samples: Vec<Vec<Sample>> = o.kinds.iter().map(|_| Vec::new()).collect();
            for round in 0..o.rounds {
                for (k, &kind) in o.kinds.iter().enumerate() {
                    let s = one_run(kind, l, o.buf);
                    eprintln!(
                        "  conns {conns:>5} size {size:>6} round {} {:<22} {:>9.0} msgs/s  p99 {:>8.1?}  errors {}",
                        round + 1,
                        kind.name(),
                        s.load.rate(),
                        s.load.pct(0.99),
                        s.load.errors
                    );
                    samples[k].push(s);
                }
            }
            rows.push((conns, size, samples));
        }
    }
    println!();
    println!(
        "echo benchmark: pipeline {}, {} rounds x {:.1} s, server pinned to CPU 0, load to CPU 1",
        o.pipeline,
        o.rounds,
        o.duration.as_secs_f64()
    );
    println!(
        "{:<22} {:>6} {:>6} {:>11} {:>15} {:>9} {:>10} {:>10} {:>7} {:>8} {:>8}",
        "server",
        "conns",
        "size",
        "msgs/s",
        "spread",
        "p99 µs",
        "user µs/m",
        "sys µs/m",
        "errors",
        "x moss",
        "user x"
    );
    for (conns, size, samples) in rows {
        let mut base = None;
        for (k, &kind) in o.kinds.iter().enumerate() {
            let ss = &samples[k];
            let rates: Vec<f64> = ss.iter().map(|s| s.load.rate()).collect();
            let rate = median(rates.clone());
            let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rates.iter().copied().fold(0.0, f64::max);
            let p99 = median(
                ss.iter()
                    .map(|s| s.load.pct(0.99).as_secs_f64() * 1e6)
                    .collect(),
            );
            let per = |f: fn(&Sample) -> Duration| {
                median(
                    ss.iter()
                        .map(|s| f(s).as_secs_f64() * 1e6 / s.load.total_msgs.max(1) as f64)
                        .collect(),
                )
            };
            let user = per(|s| s.user);
            let sys = per(|s| s.sys);
            let errors: u64 = ss.iter().map(|s| s.load.errors).sum();
            let (rx, ux) = match base {
                None => {
                    if kind == Kind::Moss {
                        base = Some((rate, user));
                    }
                    ("-".to_string(), "-".to_string())
                }
                Some((r, u)) => (format!("{:.2}", rate / r), format!("{:.2}", user / u)),
            };
            println!(
                "{:<22} {:>6} {:>6} {:>11.0} {:>15} {:>9.1} {:>10.2} {:>10.2} {:>7} {:>8} {:>8}",
                kind.name(),
                conns,
                size,
                rate,
                format!("{:.0}-{:.0}", lo, hi),
                p99,
                user,
                sys,
                errors,
                rx,
                ux
            );
        }
    }
    println!("(x moss: msgs/s of the server / moss's; user x: its user CPU per message / moss's)");
    if o.hold > 0 && o.kinds.contains(&Kind::Moss) {
        let s = start(Kind::Moss, o.buf, &[]);
        let (ok, t) = moss::run(|| load::hold(s.addr, o.hold));
        let rss = std::fs::read_to_string(format!("/proc/{}/status", s.child.id()))
            .ok()
            .and_then(|st| {
                st.lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
            })
            .unwrap_or_default();
        let _ = stop(s);
        println!(
            "moss held {} concurrent connections on one hub: {ok} echoed correctly, in {:.2?} (server RSS {rss} kB)",
            o.hold, t
        );
    }
}

/// Runs each server once under `strace -c -f` and prints syscalls per
/// echoed message (all of the server's syscalls, setup included).
fn strace_report(o: &Opts) {
    let l = Load {
        conns: o.conns[0],
        size: o.sizes[0],
        pipeline: o.pipeline,
        warmup: Duration::ZERO,
        duration: o.duration,
    };
    println!(
        "syscalls per echoed message (strace -c -f on the server, {} conns, {} B):",
        l.conns, l.size
    );
    for &kind in &o.kinds {
        let out = std::env::temp_dir().join(format!(
            "echo_bench_strace_{}_{}",
            kind.key(),
            std::process::id()
        ));
        let out_s = out.to_string_lossy().to_string();
        let s = start(kind, o.buf, &["strace", "-f", "-c", "-o", &out_s]);
        let r = moss::run(|| load::run(s.addr, l));
        let mut child = s.child;
        drop(child.stdin.take());
        let _ = child.wait();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        let calls = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.split_whitespace().last() == Some(name))
                .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
                .next()
                .unwrap_or(0)
        };
        let total = calls("total");
        let msgs = r.msgs.max(1) as f64;
        println!(
            "  {:<22} {:>8} msgs  {:>9} syscalls  {:.3} per msg  (recvfrom {:.3}, sendto {:.3}, read {:.3}, write {:.3}, epoll_wait {:.3}, io_uring_enter {:.3}, futex {:.3})",
            kind.name(),
            r.msgs,
            total,
            total as f64 / msgs,
            calls("recvfrom") as f64 / msgs,
            calls("sendto") as f64 / msgs,
            calls("read") as f64 / msgs,
            calls("write") as f64 / msgs,
            calls("epoll_wait") as f64 / msgs,
            calls("io_uring_enter") as f64 / msgs,
            calls("futex") as f64 / msgs,
        );
        if total == 0 {
            println!("    (no strace output: is strace installed?)");
        }
    }
}

/// Runs each server under callgrind once per connection count and prints
/// its user-space instructions per echoed message (see the module docs).
fn callgrind_report(o: &Opts) {
    let missing: Vec<&str> = ["valgrind", "callgrind_control"]
        .into_iter()
        .filter(|p| !bench::have(p))
        .collect();
    if !missing.is_empty() {
        die(&format!(
            "{} not installed (apt-get install valgrind)",
            missing.join(", ")
        ));
    }
    let size = o.sizes[0];
    eprintln!(
        "echo_bench: each server under callgrind, {size} B messages, {:.1} s warm-up, {:.1} s counted ...",
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64()
    );
    let mut rows = Vec::new();
    for &conns in &o.conns {
        let mut row = Vec::new();
        for &kind in &o.kinds {
            let file = std::env::temp_dir()
                .join(format!(
                    "echo_bench.{}.{conns}.{}.%p",
                    kind.key(),
                    std::process::id()
                ))
                .to_string_lossy()
                .into_owned();
            let wrapper = callgrind::wrapper(&file);
            let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
            let s = start(kind, o.buf, &w);
            let pid = s.child.id();
            let l = Load {
                conns,
                size,
                pipeline: 1,
                warmup: o.warmup,
                duration: o.duration,
            };
            let mut instructions = 0;
            let (msgs, errors) = moss::run(|| {
                load::run_counted(
                    s.addr,
                    l,
                    || callgrind::zero(pid),
                    || instructions = callgrind::dump(pid, &file),
                )
            });
            let _ = stop(s);
            callgrind::keep_or_remove(o.keep_profiles, &file);
            let per = instructions as f64 / msgs.max(1) as f64;
            eprintln!(
                "  conns {conns:>5} {:<22} {msgs:>8} msgs {instructions:>13} instructions {per:>8.0} per msg, {errors} errors",
                kind.name()
            );
            if errors > 0 || msgs == 0 {
                die(&format!("{} failed under callgrind", kind.name()));
            }
            row.push(per);
        }
        rows.push((conns, row));
    }
    println!();
    println!(
        "user-space instructions per echoed message (callgrind; {size} B, one message in flight per connection, {:.1} s counted)",
        o.duration.as_secs_f64()
    );
    print!("{:>6}", "conns");
    for k in &o.kinds {
        print!(" {:>22}", k.name());
    }
    println!();
    for (conns, row) in rows {
        print!("{conns:>6}");
        for per in row {
            print!(" {per:>22.0}");
        }
        println!();
    }
}
