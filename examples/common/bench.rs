//! What the server benchmarks share: servers run as child processes pinned
//! to CPU 0 while the load runs in (or under) the benchmark process pinned
//! to CPU 1; each child's CPU time comes from `wait4`'s rusage when it
//! exits (µs resolution, where `/proc/PID/stat` counts 10 ms ticks).
//!
//! A child started with [`start_self`] is this same binary in a serving
//! mode: it binds, prints `PORT N` (see [`serve_child`]) and serves until
//! its stdin closes, which is how [`stop`] ends it.
// Each benchmark includes this file and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True if `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// The CPU servers run on.
pub const SERVER_CPU: usize = 0;
/// The CPU the benchmark process (and the load it starts) runs on.
pub const LOAD_CPU: usize = 1;

/// True if there are two CPUs to keep server and load apart.
pub fn can_pin() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
}

/// Pins the calling thread (and the children it starts later) to `cpu`,
/// when there are CPUs enough; says so if it cannot.
pub fn pin_self(cpu: usize) {
    if !can_pin() {
        return;
    }
    if let Err(e) = set_affinity(cpu) {
        eprintln!("cannot pin to CPU {cpu}: {e}");
    }
}

/// `sched_setaffinity` of the calling thread to one CPU.
pub fn set_affinity(cpu: usize) -> std::io::Result<()> {
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

/// Makes `cmd`'s process run on [`SERVER_CPU`] (when there are CPUs enough).
pub fn on_server_cpu(cmd: &mut Command) -> &mut Command {
    if can_pin() {
        // SAFETY: the closure runs in the forked child before exec and only
        // calls sched_setaffinity (async-signal-safe) on a stack value.
        unsafe {
            cmd.pre_exec(|| set_affinity(SERVER_CPU));
        }
    }
    cmd
}

/// Lets `cmd`'s process run on every CPU (undoing an inherited pin).
pub fn on_all_cpus(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls sched_setaffinity (async-signal-safe) on a stack value.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in 0..libc::CPU_SETSIZE as usize {
                libc::CPU_SET(cpu, &mut set);
            }
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// Raises this process's soft fd limit to the hard one (children inherit
/// it): 10,000 connections need 10,000 fds on each side.
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read/write the rlimit struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A loopback listener with a deep backlog (hundreds of connections arrive
/// at once), handed to every server kind alike.
pub fn bind(port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// In a serving child: reports `l`'s port on stdout, arranges for the
/// process to exit when stdin closes, and returns `l` to serve.
pub fn serve_child(l: std::net::TcpListener) -> std::net::TcpListener {
    announce(l.local_addr().expect("bound").port());
    l
}

/// In a serving child: reports `port` on stdout and arranges for the
/// process to exit when stdin closes.
pub fn announce(port: u16) {
    println!("PORT {port}");
    std::io::stdout().flush().expect("stdout");
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
}

/// A server child process and the address it serves.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Starts this binary with `args` (optionally under `wrapper`, e.g.
/// valgrind), pinned to [`SERVER_CPU`], and waits for its `PORT N` line.
pub fn start_self(args: &[&str], wrapper: &[&str]) -> Server {
    start_self_with(args, wrapper, on_server_cpu)
}

/// [`start_self`] with another placement (e.g. [`on_all_cpus`]).
pub fn start_self_with(
    args: &[&str],
    wrapper: &[&str],
    place: fn(&mut Command) -> &mut Command,
) -> Server {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = if let Some((w, rest)) = wrapper.split_first() {
        let mut c = Command::new(w);
        c.args(rest).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = place(&mut cmd)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe:?} {args:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("read the PORT line");
    let port: u16 = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{args:?} did not report its port: {line:?}"));
    Server {
        child,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    }
}

/// Closes the server's stdin (it exits), reaps it, killing it after 10 s,
/// and returns its total (user, system) CPU time.
pub fn stop(mut s: Server) -> (Duration, Duration) {
    drop(s.child.stdin.take());
    reap(&mut s.child, Duration::from_secs(10))
}

/// Waits for `child` (killing it after `patience`) and returns its
/// (user, system) CPU time from `wait4`.
pub fn reap(child: &mut Child, patience: Duration) -> (Duration, Duration) {
    let pid = child.id() as libc::pid_t;
    let t = Instant::now();
    loop {
        let late = t.elapsed() >= patience;
        if late {
            let _ = child.kill();
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

/// The median (the upper one of an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
