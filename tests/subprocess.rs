//! moss::subprocess: std::process for coroutines — waits and pipes that
//! yield, output without deadlocks, failure paths, no zombies.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss::subprocess::{Command, Stdio};

mod util;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

const MB10: usize = 10 << 20;

/// stdin copied to stdout by `cat` while 10 MB go to stderr at the same
/// time: a parent that wrote all of stdin first, or read one pipe to its
/// end first, would deadlock.
fn busy_child() -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("head -c {MB10} /dev/zero >&2 & cat; wait")]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn communicate_10mb_each_way_without_deadlock() {
    let _wd = util::watchdog("communicate 10 MB", Duration::from_secs(60));
    let (ticks, tk) = util::ticker();
    let input = pattern(MB10);
    let out = busy_child().spawn().unwrap().communicate(&input).unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(out.stdout == input, "stdout differs from stdin");
    assert_eq!(out.stderr.len(), MB10);
    assert!(out.stderr.iter().all(|&b| b == 0));
    assert!(ticks.get() >= 1, "the hub was blocked");
    tk.kill();
}

#[test]
fn wait_with_output_while_another_coroutine_writes_stdin() {
    let _wd = util::watchdog("wait_with_output 10 MB", Duration::from_secs(60));
    let input = pattern(MB10);
    let mut child = busy_child().spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = moss::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == input);
    assert_eq!(out.stderr.len(), MB10);
}

#[test]
fn output_collects_both_pipes_and_the_exit_code() {
    let out = Command::new("sh")
        .args(["-c", "printf out; printf err >&2; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out");
    assert_eq!(out.stderr, b"err");
    // stdin is null for output(): `cat` sees EOF at once.
    let out = Command::new("cat").output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    // The same command again: output() left spawn's defaults alone.
    let mut c = Command::new("sh");
    c.args(["-c", "exit 0"]);
    assert!(c.output().unwrap().status.success());
    let child = c.spawn().unwrap();
    assert!(child.stdout.is_none() && child.stderr.is_none() && child.stdin.is_none());
    drop(child);
}

#[test]
fn env_and_current_dir_reach_the_child() {
    let out = Command::new("sh")
        .args(["-c", "printf '%s:%s' \"$MOSS_X\" \"$(pwd)\""])
        .env("MOSS_X", "42")
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"42:/");
}

#[test]
fn a_missing_program_is_not_found() {
    let e = Command::new("/nonexistent/moss-no-such-program")
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = Command::new("moss-no-such-program-in-path")
        .output()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = Command::new("moss-no-such-program-in-path")
        .status()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = Command::new("sleep")
        .current_dir("/nonexistent-dir")
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn waits_from_coroutines_overlap_and_the_hub_keeps_running() {
    let _wd = util::watchdog("overlapping waits", Duration::from_secs(60));
    let (ticks, tk) = util::ticker();
    let t = Instant::now();
    let hs: Vec<_> = (0..20)
        .map(|_| moss::spawn(|| Command::new("sleep").arg("0.2").status().unwrap()))
        .collect();
    for r in moss::join_all(hs) {
        assert!(r.unwrap().success());
    }
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(200));
    // Serially: 20 x 200 ms = 4 s.
    assert!(
        el < Duration::from_millis(2500),
        "waits did not overlap: {el:?}"
    );
    assert!(
        ticks.get() >= 5,
        "the hub was blocked: {} ticks",
        ticks.get()
    );
    tk.kill();
}

#[test]
fn wait_timeout_try_wait_and_kill() {
    let mut c = Command::new("sleep").arg("30").spawn().unwrap();
    assert!(c.try_wait().unwrap().is_none());
    let t = Instant::now();
    assert!(
        c.wait_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none()
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    c.kill().unwrap();
    let s = c
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("exited after kill");
    assert_eq!(s.signal(), Some(libc::SIGKILL));
    // Reaped: further waits and kills report the same, without error.
    assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(c.try_wait().unwrap().unwrap().signal(), Some(libc::SIGKILL));
    c.kill().unwrap();
    // A zero timeout polls.
    let mut quick = Command::new("true").spawn().unwrap();
    let s = loop {
        if let Some(s) = quick.wait_timeout(Duration::ZERO).unwrap() {
            break s;
        }
        moss::sleep(Duration::from_millis(5));
    };
    assert!(s.success());
}

fn proc_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_killed_waiter_leaves_no_zombie() {
    let _wd = util::watchdog("zombie", Duration::from_secs(60));
    let pid = Rc::new(Cell::new(0));
    let p = pid.clone();
    let h = moss::spawn(move || {
        let mut c = Command::new("sleep").arg("0.3").spawn().unwrap();
        p.set(c.id());
        c.wait()
    });
    util::until_parked(h.id());
    let t = Instant::now();
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the kill was not prompt"
    );
    let pid = pid.get();
    assert!(pid > 0);
    // The process still ran to its end, then the reaper collected it: no
    // zombie in /proc.
    util::until("the orphan to be reaped", Duration::from_secs(20), || {
        !proc_exists(pid)
    });
    // Same for a child simply dropped while it runs.
    let c = Command::new("sleep").arg("0.1").spawn().unwrap();
    let pid = c.id();
    drop(c);
    util::until(
        "the dropped child to be reaped",
        Duration::from_secs(20),
        || !proc_exists(pid),
    );
}

#[test]
fn a_timeout_around_output_kills_its_pipe_coroutines() {
    let _wd = util::watchdog("timeout around output", Duration::from_secs(60));
    let r = moss::spawn(|| {
        moss::timeout(Duration::from_millis(100), || {
            Command::new("sh")
                .args(["-c", "echo started; sleep 30"])
                .output()
        })
    })
    .join()
    .unwrap();
    assert!(r.is_err(), "the timeout fired");
    // Nothing of the cancelled call is left running on this hub.
    util::until("helpers to end", Duration::from_secs(5), || {
        moss::dump().starts_with("hub") && moss::dump().lines().count() == 2
    });
}

#[test]
fn a_child_that_closes_its_pipes_early() {
    let _wd = util::watchdog("early close", Duration::from_secs(60));
    // It closes stdin and stdout at once, then writes to stderr and exits.
    let script = "exec 0<&- 1>&-; sleep 0.1; printf done >&2";
    let spawn = || {
        Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // communicate: the broken stdin is not an error (as in Python).
    let out = spawn().communicate(&pattern(1 << 20)).unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr, b"done");
    // Writing directly: BrokenPipe, reading: EOF.
    let mut c = spawn();
    let mut stdin = c.stdin.take().unwrap();
    let e = stdin.write_all(&pattern(1 << 20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    let mut s = Vec::new();
    assert_eq!(c.stdout.take().unwrap().read_to_end(&mut s).unwrap(), 0);
    assert!(c.wait().unwrap().success());
}

#[test]
fn communicate_input_needs_a_piped_stdin() {
    let c = Command::new("true").spawn().unwrap();
    let e = c.communicate(b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Empty input without a pipe is fine.
    let out = Command::new("true")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
        .communicate(b"")
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_pipeline_through_std_stdio() {
    let mut first = Command::new("printf")
        .arg("b\\na\\nc\\n")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = first.stdout.take().unwrap();
    let second = Command::new("sort")
        .stdin(out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = second.wait_with_output().unwrap();
    assert_eq!(o.stdout, b"a\nb\nc\n");
    assert!(first.wait().unwrap().success());
}

#[test]
fn pipes_are_read_cooperatively_while_the_child_runs() {
    let _wd = util::watchdog("cooperative pipe", Duration::from_secs(60));
    let (ticks, tk) = util::ticker();
    let mut c = Command::new("sh")
        .args(["-c", "sleep 0.2; printf late"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = String::new();
    c.stdout.as_mut().unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "late");
    assert!(
        ticks.get() >= 5,
        "the hub was blocked: {} ticks",
        ticks.get()
    );
    assert!(c.wait().unwrap().success());
    tk.kill();
}
