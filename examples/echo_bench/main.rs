//! The echo-server benchmark: moss against the servers a user would pick
//! instead, measured the same way in the same run.
//!
//! ```sh
//! cargo run --release --example echo_bench                 # the default table (~1 min)
//! cargo run --release --example echo_bench -- --conns 64,512,2000 --size 64,4096 --rounds 5
//! cargo run --release --example echo_bench -- --strace     # syscalls per message (needs strace)
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
//! To add a server kind: one variant and one function in `servers.rs`.

mod load;
mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

const USAGE: &str = "usage:
  echo_bench [--conns 64,512] [--size 64] [--pipeline 1] [--duration SECS] [--warmup SECS]
             [--rounds 3] [--servers moss,monkey,tokio,std] [--buf 4096] [--hold 10000] [--strace]
  echo_bench --serve moss|monkey|tokio|std [--port 0] [--buf 4096]
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
    };
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
            "--duration" => o.duration = Duration::from_secs_f64(list(&next(&mut i))[0]),
            "--warmup" => o.warmup = Duration::from_secs_f64(list(&next(&mut i))[0]),
            "--rounds" => o.rounds = list(&next(&mut i))[0],
            "--buf" => o.buf = list(&next(&mut i))[0],
            "--hold" => o.hold = list(&next(&mut i))[0],
            "--strace" => o.strace = true,
            "--servers" => {
                o.kinds = next(&mut i)
                    .split(',')
                    .map(|k| Kind::parse(k).unwrap_or_else(|| die(&format!("unknown server {k}"))))
                    .collect()
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
    pin_self(1);
    if o.strace {
        return strace_report(&o);
    }
    harness(&o);
}

// ---------------------------------------------------------------- children

/// `--serve`: bind, report the port on stdout, serve until stdin closes.
fn serve_child(kind: Kind, port: u16, buf: usize) {
    let l = bind(port).unwrap_or_else(|e| die(&format!("bind: {e}")));
    println!("PORT {}", l.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    kind.serve(l, buf);
}

/// A loopback listener with a deep backlog (hundreds of connections arrive
/// at once), handed to every server kind alike.
fn bind(port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    s.listen(4096)?;
    Ok(s.into())
}

fn pin_self(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    if let Err(e) = set_affinity(cpu) {
        eprintln!("echo_bench: cannot pin to CPU {cpu}: {e}");
    }
}

fn set_affinity(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside
    // it (cpu < CPU_SETSIZE); sched_setaffinity only reads it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises this process's soft fd limit to the hard one (children inherit
/// it): 10,000 connections need 10,000 fds on each side.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read/write the rlimit struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Starts `exe --serve kind` (optionally under `wrapper`), pinned to CPU 0.
fn start(kind: Kind, buf: usize, wrapper: &[&str]) -> Server {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if let Some((w, rest)) = wrapper.split_first() {
        let mut c = Command::new(w);
        c.args(rest).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(["--serve", kind.key(), "--buf", &buf.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        // SAFETY: the closure runs in the forked child before exec and only
        // calls sched_setaffinity (async-signal-safe) on a stack value.
        unsafe {
            cmd.pre_exec(|| set_affinity(0));
        }
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start server: {e}")));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| die(&format!("{} did not report its port: {line:?}", kind.key())));
    Server {
        child,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    }
}

/// Closes the server's stdin (it exits), reaps it and returns its total
/// (user, system) CPU time from `wait4`'s rusage: microsecond resolution,
/// where `/proc/PID/stat` counts 10 ms ticks (too coarse for a few
/// milliseconds of user time per run).
fn stop(mut s: Server) -> (Duration, Duration) {
    drop(s.child.stdin.take());
    let pid = s.child.id() as libc::pid_t;
    let t = Instant::now();
    loop {
        let late = t.elapsed() >= Duration::from_secs(10);
        if late {
            let _ = s.child.kill();
        }
        // SAFETY: a zeroed rusage is valid; wait4 writes into our locals.
        let (r, ru) = unsafe {
            let mut status = 0;
            let mut ru: libc::rusage = std::mem::zeroed();
            let flags = if late { 0 } else { libc::WNOHANG };
            (libc::wait4(pid, &mut status, flags, &mut ru), ru)
        };
        if r == pid {
            let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            return (tv(ru.ru_utime), tv(ru.ru_stime));
        }
        if r < 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
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
            "  {:<22} {:>8} msgs  {:>9} syscalls  {:.3} per msg  (recvfrom {:.3}, sendto {:.3}, read {:.3}, write {:.3}, epoll_wait {:.3}, futex {:.3})",
            kind.name(),
            r.msgs,
            total,
            total as f64 / msgs,
            calls("recvfrom") as f64 / msgs,
            calls("sendto") as f64 / msgs,
            calls("read") as f64 / msgs,
            calls("write") as f64 / msgs,
            calls("epoll_wait") as f64 / msgs,
            calls("futex") as f64 / msgs,
        );
        if total == 0 {
            println!("    (no strace output: is strace installed?)");
        }
    }
}
