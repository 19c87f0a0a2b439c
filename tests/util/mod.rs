//! Helpers shared by the integration tests (mio's `tests/util` is the model):
//! a watchdog instead of unbounded waits, a child-process runner for cases
//! that crash or hang, a drop counter, "until parked" instead of ordering
//! sleeps, a server on a thread of its own (`serve`), and an example's server
//! in a child process (`child_server`).
//!
//! Each test binary includes it with `mod util;` and uses what it needs.
#![allow(dead_code)]

pub mod child_server;
pub mod redis;
pub mod serve;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Aborts the whole test process if it is still alive after `limit`, naming
/// `what`: a hang becomes a bounded, attributed failure. Disarmed on drop.
///
/// ```ignore
/// let _wd = util::watchdog("queue hand-off", Duration::from_secs(20));
/// ```
pub fn watchdog(what: &str, limit: Duration) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let what = what.to_owned();
    std::thread::Builder::new()
        .name(format!("watchdog: {what}"))
        .spawn(move || {
            let t = Instant::now();
            while t.elapsed() < limit {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(20));
            }
            if !d.load(Ordering::SeqCst) {
                eprintln!("watchdog: '{what}' still running after {limit:?}; aborting");
                std::process::abort();
            }
        })
        .expect("spawn the watchdog thread");
    Watchdog { done }
}

/// Disarms its watchdog when dropped.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

const CHILD_ENV: &str = "MOSS_TEST_CHILD";

/// How a child run of one test case ended.
#[derive(Debug)]
pub struct ChildRun {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The child outlived the limit and was killed.
    pub timed_out: bool,
}

impl ChildRun {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// True in the child process that [`run_in_child`] started for `case`.
/// A test calls it first and, when true, runs the body that may crash or
/// hang, then returns.
pub fn in_child(case: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(case)
}

/// Starts the test `case` (its full name in this binary) again in a child
/// process of this test binary, with stdout and stderr piped, for a test
/// that talks to the child while it runs (signals, sockets). The caller
/// kills and reaps it.
pub fn spawn_child(case: &str) -> std::process::Child {
    spawn_child_env(case, &[])
}

/// [`spawn_child`] with the variables `env` added to the child's
/// environment (a setting read once per process, say).
pub fn spawn_child_env(case: &str, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .envs(env.iter().copied())
        // `--include-ignored`: the case may be an ignored reproduction run
        // on purpose (the filter is exact, so nothing else runs).
        .args([
            case,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, case)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the test binary")
}

/// Runs the test `case` (its full name in this binary, as given to libtest)
/// again in a child process of this test binary, killing it after `limit`.
/// Use it for anything that could abort, segfault or hang.
pub fn run_in_child(case: &str, limit: Duration) -> ChildRun {
    run_in_child_env(case, limit, &[])
}

/// [`run_in_child`] with the variables `env` added to the child's
/// environment.
pub fn run_in_child_env(case: &str, limit: Duration, env: &[(&str, &str)]) -> ChildRun {
    let mut child = spawn_child_env(case, env);
    // Read the pipes on threads so a chatty child cannot fill them and stall.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let t = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if t.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ChildRun {
        code: status.code(),
        signal: status.signal(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        timed_out,
    }
}

/// Runs the test `case` in a child process (see [`run_in_child`]) and
/// asserts that it passed, with its output in the message if not: for a
/// test whose failure mode is an abort, a crash or a hang.
///
/// ```ignore
/// #[test]
/// fn case() {
///     if !util::in_child("case") {
///         return util::passes_in_child("case");
///     }
///     // the body that could abort
/// }
/// ```
pub fn passes_in_child(case: &str) {
    let run = run_in_child(case, Duration::from_secs(60));
    assert!(
        run.success() && !run.timed_out,
        "{case}: {run:?}\nstderr:\n{}",
        run.stderr
    );
}

/// Counts drops of the values it makes (async-task's tests do the same).
#[derive(Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    pub fn new() -> DropCounter {
        DropCounter::default()
    }

    /// A value whose drop is counted.
    pub fn token(&self) -> Counted {
        Counted(self.0.clone())
    }

    /// Drops counted so far.
    pub fn drops(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Increments its counter when dropped.
pub struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Yields until the coroutine `id` is parked ("waiting on ..." in
/// `moss::dump()`), so a test orders events without sleeping. Panics after
/// 10,000 yields.
pub fn until_parked(id: moss::CoroutineId) {
    for _ in 0..10_000 {
        if is_parked(id) {
            return;
        }
        moss::yield_now();
    }
    panic!("coroutine #{id} never parked:\n{}", moss::dump());
}

/// Whether the coroutine `id` is parked now ("waiting on ..." in
/// `moss::dump()`).
pub fn is_parked(id: moss::CoroutineId) -> bool {
    let tag = format!("#{id} ");
    moss::dump()
        .lines()
        .any(|l| l.starts_with(&tag) && l.contains("waiting on"))
}

/// Polls `cond` (yielding to the hub between tries) until it holds, or
/// panics after `limit` naming `what`.
pub fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        moss::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on a fresh thread (so it gets a hub of its own), failing
/// instead of hanging after `limit`; a panic in `f` is re-raised here.
pub fn on_thread<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("test thread did not finish within {limit:?} (deadlock?)"),
    }
}

/// Runs `body` in a `moss::pool::Process` child (a fork) and returns its
/// exit code; the parent gives up (kills it) after 20 s, so a hang fails
/// the test instead of freezing it.
pub fn in_process(body: impl FnOnce() + 'static) -> i32 {
    in_process_within(Duration::from_secs(20), body).unwrap()
}

/// [`in_process`], giving up after `limit`: the exit code, or an error
/// if the child hung.
pub fn in_process_within(limit: Duration, body: impl FnOnce() + 'static) -> Result<i32, String> {
    let p = moss::pool::Process::new(body).start().unwrap();
    match p.join_timeout(limit).unwrap() {
        Some(code) => Ok(code),
        None => {
            p.kill().unwrap();
            p.join().unwrap();
            Err("the child hung".into())
        }
    }
}

/// [`on_thread`] after `moss::monkey::patch_all()` (idempotent).
pub fn on_patched_thread<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    moss::monkey::patch_all();
    on_thread(limit, f)
}

/// A coroutine that counts ticks every 10 ms until killed. A call that
/// blocked the thread would let no tick through while it is pending; tests
/// ask for at least 2 (not the nominal count: the machine may be loaded).
pub fn ticker() -> (std::rc::Rc<std::cell::Cell<u32>>, moss::JoinHandle<()>) {
    let ticks = std::rc::Rc::new(std::cell::Cell::new(0));
    let t = ticks.clone();
    let h = moss::spawn(move || {
        loop {
            moss::sleep(Duration::from_millis(10));
            t.set(t.get() + 1);
        }
    });
    (ticks, h)
}

/// A coroutine serving `conns` std::net connections of `listener`, each
/// echoed back by a coroutine of its own until EOF (patched std code).
pub fn std_echo_server(listener: std::net::TcpListener, conns: usize) -> moss::JoinHandle<()> {
    moss::spawn(move || {
        let mut hs = Vec::new();
        for _ in 0..conns {
            let (mut s, _) = listener.accept().unwrap();
            hs.push(moss::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut s, &buf[..n]).unwrap();
                }
            }));
        }
        for r in moss::join_all(hs) {
            r.unwrap();
        }
    })
}

/// A started `moss::pool::Process` that is killed and reaped when dropped, so
/// a test that fails before joining it leaves no child behind.
pub struct Reap(pub moss::pool::ProcessHandle);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join();
    }
}

impl std::ops::Deref for Reap {
    type Target = moss::pool::ProcessHandle;
    fn deref(&self) -> &moss::pool::ProcessHandle {
        &self.0
    }
}

/// Runs `body` as the test `case` (its full name in this binary) in a fresh
/// child process of the test binary, and asserts that it passed there
/// within `limit`. For tests that must not share the process with the
/// others: a test that waits for end-of-file on a pipe would wait for every
/// child that another test forked meanwhile (forked children inherit every
/// fd of the process).
pub fn isolated(case: &str, limit: Duration, body: impl FnOnce()) {
    isolated_env(case, limit, &[], body)
}

/// [`isolated`] with the variables `env` added to the child's environment.
pub fn isolated_env(case: &str, limit: Duration, env: &[(&str, &str)], body: impl FnOnce()) {
    if in_child(case) {
        let _wd = watchdog(case, limit);
        body();
        return;
    }
    let r = run_in_child_env(case, limit + Duration::from_secs(10), env);
    assert!(r.success(), "{case} failed in its child process: {r:#?}");
    // A misspelt case would run no test at all, and pass.
    assert!(
        r.stdout.contains("1 passed"),
        "{case} did not run in its child process: {r:#?}"
    );
}

/// Waits (up to 20 s) until the thread `tid` of this process sleeps in the
/// kernel (state `S` in `/proc`): it blocks in a wait.
pub fn until_thread_sleeps(tid: i32) {
    until_sleeps("the thread", &format!("/proc/self/task/{tid}/stat"));
}

/// Waits (up to 20 s) until the (single-threaded) process `pid` sleeps in
/// the kernel (state `S` in `/proc`): it blocks in a wait.
pub fn until_process_sleeps(pid: u32) {
    until_sleeps("the process", &format!("/proc/{pid}/stat"));
}

/// Waits (up to 20 s) until the task whose `/proc` stat file is `path`
/// sleeps in the kernel.
fn until_sleeps(who: &str, path: &str) {
    until(
        &format!("{who} to sleep in the kernel"),
        Duration::from_secs(20),
        || {
            let stat = std::fs::read_to_string(path).expect("it is alive");
            // "tid (name) S ...": the state follows the name's closing paren.
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.as_bytes()[0]);
            state == Some(b'S')
        },
    );
}

/// [`isolated`], with `moss::monkey::patch_all()` called first in the child.
pub fn isolated_patched(case: &str, limit: Duration, body: impl FnOnce()) {
    isolated(case, limit, || {
        moss::monkey::patch_all();
        body();
    });
}

/// Runs `body` as the test `case` in a child process of the test binary
/// with its stdio (0-2) closed, as a daemon's would be, and asserts that
/// it passed there and that afterwards none of the numbers 0-2 is open: an
/// fd of moss's that took one would receive what a `println!` writes, and a
/// file the program opens next to be its stdin would get a higher number.
/// The child reports through a copy of its stderr kept at 10 or above.
pub fn with_stdio_closed(case: &str, limit: Duration, body: impl FnOnce()) {
    if !in_child(case) {
        let r = run_in_child(case, limit);
        assert!(
            r.success() && r.stderr.contains("CHILD-OK"),
            "{case}: {r:#?}"
        );
        return;
    }
    // SAFETY: plain fcntl/close on fd numbers this child owns; nothing in
    // it uses stdio afterwards but std's printing, which tolerates a
    // closed fd.
    let report = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 10) };
    assert!(report >= 10);
    for fd in 0..3 {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
    let report = |msg: String| {
        // SAFETY: writes `msg` to our own copy of stderr.
        unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
    };
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        return report(format!(
            "the body panicked: {:?}\n",
            moss::panic_message(&*p)
        ));
    }
    // SAFETY: F_GETFD only reads flags.
    let taken: Vec<i32> = (0..3)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .collect();
    if !taken.is_empty() {
        return report(format!("stdio numbers taken: {taken:?}\n"));
    }
    println!("stdout is closed"); // (std ignores a closed stdout)
    report("CHILD-OK\n".to_string());
}

/// A loopback address where nothing listens, so a connect is refused: a
/// port just bound and freed.
pub fn refused_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `f` in a child process, reaped when the result is dropped.
pub fn start(f: impl FnOnce() + 'static) -> Reap {
    Reap(moss::pool::Process::new(f).start().unwrap())
}

/// A global allocator that counts the bytes live on the heap, for a test
/// binary that asserts memory does not grow (declare it with
/// `#[global_allocator] static HEAP: util::LiveBytes = util::LiveBytes::new();`).
/// A deterministic measure where a timing one would depend on the load.
pub struct LiveBytes(std::sync::atomic::AtomicIsize);

impl LiveBytes {
    pub const fn new() -> LiveBytes {
        LiveBytes(std::sync::atomic::AtomicIsize::new(0))
    }

    /// Bytes allocated and not yet freed, by every thread of the process.
    pub fn live(&self) -> isize {
        self.0.load(Ordering::SeqCst)
    }
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// counter only observes the sizes.
unsafe impl std::alloc::GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `layout` is the system's.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            self.0.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.0.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        self.0.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator, that is from the system's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as for `dealloc` and `alloc`.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            self.0
                .fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

/// `fork(2)` through libc (its atfork handlers run, as for any program).
/// The child must only use moss, its own fds and `_exit` (no lock another
/// thread of the parent may have held).
pub fn fork() -> libc::pid_t {
    // SAFETY: the callers' children only use moss, sleep, write to their
    // own fds and `_exit`; no lock of another thread is needed there.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    pid
}

/// Reaps the forked child `pid` (waiting at most 20 s, then killing it):
/// its exit code, or 128 + the signal that ended it. Yields to other
/// coroutines meanwhile.
pub fn exit_code_of(pid: libc::pid_t) -> i32 {
    let t = Instant::now();
    loop {
        let mut st = 0;
        // SAFETY: `pid` is our unreaped child; `st` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            if libc::WIFEXITED(st) {
                return libc::WEXITSTATUS(st);
            }
            return 128 + libc::WTERMSIG(st);
        }
        if t.elapsed() > Duration::from_secs(20) {
            // SAFETY: our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        moss::sleep(Duration::from_millis(2));
    }
}

/// Puts this thread's hub on io_uring (it must not exist yet); fails if
/// the machine does not allow it.
pub fn on_uring() {
    moss::reactor::set_backend(moss::reactor::Backend::Uring);
    assert_eq!(
        moss::reactor::backend(),
        moss::reactor::Backend::Uring,
        "io_uring could not be set up on this machine"
    );
}

/// A xorshift generator for randomized tests, seeded from the clock: the
/// seed (printed, for a rerun by hand) and `next(n)`, a number below `n`.
pub fn clock_rng() -> (u64, impl FnMut(u64) -> u64) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = seed;
    let next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    (seed, next)
}

/// Runs `f` on a fresh thread whose hub runs on `b` (io_uring must be
/// available when asked for), failing instead of hanging after `limit`; a
/// panic in `f` is re-raised here. The backend choice is process-wide
/// until a hub exists, so it is made under a lock: tests of one binary may
/// run on different backends at once.
pub fn on_backend<T: Send + 'static>(
    b: moss::reactor::Backend,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    static CHOICE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let (made, hub_made) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel();
    let choice = CHOICE.lock().unwrap_or_else(|e| e.into_inner());
    moss::reactor::set_backend(b);
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let got = moss::reactor::backend();
            let _ = made.send(());
            assert_eq!(got, b, "this machine cannot run a hub on {b:?}");
            f()
        }));
        let _ = tx.send(r);
    });
    let _ = hub_made.recv();
    drop(choice);
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("test thread on {b:?} did not finish within {limit:?} (deadlock?)"),
    }
}
