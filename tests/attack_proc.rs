//! Attacks on `moss::signal`, `moss::subprocess`, and cancellation of
//! patched std code. Signal cases run in child processes (dispositions are
//! process-wide).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod util;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moss::signal;
use moss::subprocess::{Command, Stdio};

fn raise(sig: i32) {
    // SAFETY: sends a signal to this process.
    unsafe { libc::kill(libc::getpid(), sig) };
}

#[test]
fn signal_bad_numbers_are_invalid_input() {
    util::isolated(
        "signal_bad_numbers_are_invalid_input",
        Duration::from_secs(10),
        || {
            for s in [
                0,
                -1,
                65,
                1000,
                i32::MIN,
                i32::MAX,
                9,
                19,
                11,
                7,
                4,
                8,
                32,
                33,
            ] {
                let e = signal::wait(&[s]).unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "wait {s}");
                let e = signal::handler(s, || ()).unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "handler {s}");
            }
            // A bad number among good ones installs nothing.
            assert!(signal::wait(&[libc::SIGUSR1, 0]).is_err());
            assert_eq!(
                signal::wait(&[]).unwrap_err().kind(),
                std::io::ErrorKind::InvalidInput
            );
            assert!(
                signal::wait_timeout(&[34], Duration::ZERO)
                    .unwrap()
                    .is_none()
            );
            assert!(
                signal::wait_timeout(&[64], Duration::ZERO)
                    .unwrap()
                    .is_none()
            );
        },
    );
}

static USER_HITS: AtomicUsize = AtomicUsize::new(0);
extern "C" fn user_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    USER_HITS.fetch_add(1, Ordering::SeqCst);
}

/// A user's own SA_SIGINFO handler, then a moss handler, dropped: the
/// user's handler is back and gets the next delivery.
#[test]
fn signal_handler_drop_restores_a_siginfo_handler() {
    util::isolated(
        "signal_handler_drop_restores_a_siginfo_handler",
        Duration::from_secs(10),
        || {
            // SAFETY: installs a valid SA_SIGINFO handler.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = user_handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
            }
            let hits = Rc::new(Cell::new(0));
            let h2 = hits.clone();
            let h = signal::handler(libc::SIGUSR1, move || h2.set(h2.get() + 1)).unwrap();
            raise(libc::SIGUSR1);
            util::until("moss handler ran", Duration::from_secs(5), || {
                hits.get() == 1
            });
            assert_eq!(USER_HITS.load(Ordering::SeqCst), 0);
            drop(h);
            // kill(2) to the process may run the handler on another thread
            // (the test harness' main thread) after `raise` returns: wait
            // for it rather than assume it ran on this one.
            raise(libc::SIGUSR1);
            util::until("the user's handler ran", Duration::from_secs(5), || {
                USER_HITS.load(Ordering::SeqCst) >= 1
            });
            // Twice more: a second install/drop cycle restores it again.
            let h = signal::handler(libc::SIGUSR1, || ()).unwrap();
            drop(h);
            raise(libc::SIGUSR1);
            util::until(
                "the user's handler ran again",
                Duration::from_secs(5),
                || USER_HITS.load(Ordering::SeqCst) >= 2,
            );
            assert_eq!(USER_HITS.load(Ordering::SeqCst), 2);
            assert_eq!(hits.get(), 1, "the dropped moss handler ran again");
        },
    );
}

/// A handler whose `f` panics: the next delivery still runs it.
#[test]
fn signal_handler_survives_a_panicking_f() {
    util::isolated(
        "signal_handler_survives_a_panicking_f",
        Duration::from_secs(10),
        || {
            let hits = Rc::new(Cell::new(0));
            let h2 = hits.clone();
            let _h = signal::handler(libc::SIGUSR2, move || {
                h2.set(h2.get() + 1);
                if h2.get() == 1 {
                    panic!("first run panics");
                }
            })
            .unwrap();
            raise(libc::SIGUSR2);
            util::until("first run", Duration::from_secs(5), || hits.get() == 1);
            moss::sleep(Duration::from_millis(5));
            raise(libc::SIGUSR2);
            util::until("second run", Duration::from_secs(5), || hits.get() == 2);
        },
    );
}

/// Two coroutines wait for different signals on one thread, a third for
/// both, and a handler runs for one of them: each gets what it waits for.
#[test]
fn signal_waiters_and_handler_on_one_thread() {
    util::isolated(
        "signal_waiters_and_handler_on_one_thread",
        Duration::from_secs(10),
        || {
            let hits = Rc::new(Cell::new(0));
            let h2 = hits.clone();
            let _h = signal::handler(libc::SIGUSR1, move || h2.set(h2.get() + 1)).unwrap();
            let a = moss::spawn(|| signal::wait(&[libc::SIGUSR1]).unwrap());
            let b = moss::spawn(|| signal::wait(&[libc::SIGUSR2]).unwrap());
            let c = moss::spawn(|| signal::wait(&[libc::SIGHUP, libc::SIGUSR2]).unwrap());
            for h in [&a, &b, &c] {
                util::until_parked(h.id());
            }
            raise(libc::SIGUSR2);
            assert_eq!(b.join().unwrap(), libc::SIGUSR2);
            assert_eq!(c.join().unwrap(), libc::SIGUSR2);
            assert!(!a.is_finished());
            raise(libc::SIGUSR1);
            assert_eq!(a.join().unwrap(), libc::SIGUSR1);
            util::until("handler ran", Duration::from_secs(5), || hits.get() >= 1);
        },
    );
}

/// A signal storm from another thread while a handler runs: the process
/// survives and the handler ran at least once after the last delivery.
#[test]
fn signal_storm() {
    util::isolated("signal_storm", Duration::from_secs(30), || {
        let hits = Rc::new(Cell::new(0u32));
        let h2 = hits.clone();
        let _h = signal::handler(libc::SIGUSR1, move || h2.set(h2.get() + 1)).unwrap();
        let t = std::thread::spawn(|| {
            for _ in 0..20_000 {
                raise(libc::SIGUSR1);
            }
        });
        while !t.is_finished() {
            moss::sleep(Duration::from_millis(1));
        }
        t.join().unwrap();
        let before = hits.get();
        raise(libc::SIGUSR1);
        util::until("after storm", Duration::from_secs(5), || {
            hits.get() > before
        });
    });
}

/// `Command::output` keeps stdio set through `as_std_mut` (or on a std
/// command converted with `From`), as std's `output` keeps an explicitly
/// set stdout (it used to replace it with a pipe, and afterwards reset it
/// to `inherit`). Unset streams are piped on every run of the command.
#[test]
fn output_keeps_stdio_set_on_the_std_command() {
    let mut std_cmd = std::process::Command::new("echo");
    std_cmd.arg("hi").stdout(std::process::Stdio::null());
    assert_eq!(std_cmd.output().unwrap().stdout, b"");
    let mut c = Command::from(std_cmd);
    assert_eq!(
        c.output().unwrap().stdout,
        b"",
        "From<std Command>: stdout(null) ignored"
    );
    let mut c = Command::new("echo");
    c.arg("hi");
    c.as_std_mut().stdout(std::process::Stdio::null());
    assert_eq!(
        c.output().unwrap().stdout,
        b"",
        "as_std_mut().stdout(null) ignored"
    );
    assert_eq!(c.output().unwrap().stdout, b"", "forgotten on the next run");
    // Unset streams: piped on every run, also after a run reset them.
    let mut c = Command::new("sh");
    c.args(["-c", "echo out; echo err >&2"]);
    for _ in 0..2 {
        let out = c.output().unwrap();
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }
    // Set after a run: honoured.
    c.as_std_mut().stderr(std::process::Stdio::null());
    let out = c.output().unwrap();
    assert_eq!(
        (&out.stdout[..], &out.stderr[..]),
        (&b"out\n"[..], &b""[..])
    );
    // stdin piped on the std command: `output` keeps the pipe (std's does
    // too) instead of its default /dev/null.
    let mut std_cmd = std::process::Command::new("sh");
    std_cmd
        .args(["-c", "test -p /dev/stdin && echo pipe"])
        .stdin(std::process::Stdio::piped());
    assert_eq!(std_cmd.output().unwrap().stdout, b"pipe\n");
    let out = Command::from(std_cmd).output().unwrap();
    assert_eq!(out.stdout, b"pipe\n");
}

/// Big data both ways through `communicate`, and big stdout + stderr
/// through `output`, byte-exact, while a ticker runs.
#[test]
fn subprocess_big_data_exact() {
    let _wd = util::watchdog("big data", Duration::from_secs(60));
    let (ticks, tk) = util::ticker();
    let input: Vec<u8> = (0..12 << 20)
        .map(|i: u32| (i * 7 + i / 251) as u8)
        .collect();
    let child = Command::new("sh")
        .args(["-c", "cat; cat /dev/zero | head -c 5000000 >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.communicate(&input).unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == input,
        "stdout differs ({} bytes)",
        out.stdout.len()
    );
    assert_eq!(out.stderr.len(), 5_000_000);
    assert!(out.stderr.iter().all(|&b| b == 0));
    assert!(ticks.get() >= 2);
    tk.kill();
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn zombies_of(me: u32) -> Vec<String> {
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().into_string().unwrap_or_default();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let mut f = after.split(' ');
        let state = f.next().unwrap();
        let ppid: u32 = f.next().unwrap().parse().unwrap();
        if ppid == me && state == "Z" {
            z.push(name);
        }
    }
    z
}

/// Coroutines killed in every blocking point of a subprocess (wait,
/// wait_timeout, communicate, output, a pipe read and a pipe write): no
/// zombie and no fd left once the children have exited.
#[test]
fn subprocess_kills_leave_no_zombies_or_fds() {
    util::isolated(
        "subprocess_kills_leave_no_zombies_or_fds",
        Duration::from_secs(60),
        || {
            // Warm up: this thread's hub, and the reaper thread (and its hub)
            // that a dropped running child starts.
            moss::yield_now();
            drop(Command::new("sleep").arg("0.05").spawn().unwrap());
            moss::sleep(Duration::from_millis(300));
            let fds0 = open_fds();
            for round in 0..30 {
                let h = moss::spawn(move || match round % 6 {
                    0 => {
                        let mut c = Command::new("sleep").arg("0.2").spawn().unwrap();
                        c.wait().unwrap();
                    }
                    1 => {
                        let mut c = Command::new("sleep").arg("0.2").spawn().unwrap();
                        c.wait_timeout(Duration::from_secs(10)).unwrap();
                    }
                    2 => {
                        let c = Command::new("sh")
                            .args(["-c", "cat >/dev/null; sleep 0.2"])
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .unwrap();
                        c.communicate(&vec![1u8; 4 << 20]).unwrap();
                    }
                    3 => {
                        Command::new("sh")
                            .args(["-c", "echo x; sleep 0.2; echo y >&2"])
                            .output()
                            .unwrap();
                    }
                    4 => {
                        let mut c = Command::new("sh")
                            .args(["-c", "sleep 0.2; echo x"])
                            .stdout(Stdio::piped())
                            .spawn()
                            .unwrap();
                        let mut s = String::new();
                        c.stdout.as_mut().unwrap().read_to_string(&mut s).unwrap();
                    }
                    _ => {
                        let mut c = Command::new("sh")
                            .args(["-c", "sleep 0.2; cat >/dev/null"])
                            .stdin(Stdio::piped())
                            .spawn()
                            .unwrap();
                        c.stdin
                            .as_mut()
                            .unwrap()
                            .write_all(&vec![0u8; 4 << 20])
                            .unwrap();
                    }
                });
                moss::sleep(Duration::from_millis(20));
                h.kill();
                assert!(h.join().unwrap_err().is_killed());
            }
            // Every child exits within ~0.2 s (4 MB into cat is quick once it runs).
            let me = std::process::id();
            let t = Instant::now();
            loop {
                let z = zombies_of(me);
                let fds = open_fds();
                if z.is_empty() && fds <= fds0 {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "zombies {z:?}, fds {fds} (before {fds0}): {:?}",
                    std::fs::read_dir("/proc/self/fd")
                        .unwrap()
                        .flatten()
                        .map(|e| std::fs::read_link(e.path()).unwrap_or_default())
                        .collect::<Vec<_>>()
                );
                moss::sleep(Duration::from_millis(50));
            }
        },
    );
}

/// `moss::timeout` around patched std code that unwraps its I/O result:
/// the hooked read fails with ECANCELED, the caller's `unwrap` panics, and
/// `timeout` re-raises that panic instead of returning `Elapsed`
/// (cancel.rs: only a `Cancelled` payload of its scope becomes Elapsed; an
/// `Ok` return after a seen timeout does, a panic does not).
///
/// Expected: `Err(Elapsed)`, as for the same code over moss::net, and as
/// gevent's Timeout raised out of the socket call. Got: the panic
/// "called `Result::unwrap()` on an `Err` value: Os { code: 125, kind:
/// Other, message: \"Operation canceled\" }" propagates out of `timeout`.
#[test]
fn timeout_around_patched_std_read_unwrap() {
    util::isolated(
        "timeout_around_patched_std_read_unwrap",
        Duration::from_secs(10),
        || {
            moss::monkey::patch_all();
            let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                moss::timeout(Duration::from_millis(50), || {
                    let mut buf = [0u8; 1];
                    a.read(&mut buf).unwrap()
                })
            }));
            match r {
                Ok(Err(_elapsed)) => {}
                Ok(Ok(n)) => panic!("read returned {n}"),
                Err(p) => panic!(
                    "timeout re-raised the hooked call's failure as a panic: {}",
                    moss::panic_message(&*p).unwrap_or("?")
                ),
            }
        },
    );
}

/// `kill` of a coroutine in patched std code that unwraps: the coroutine
/// dies of the kill, but `join` reports a panic (and the panic hook prints
/// "Operation canceled" to stderr).
///
/// Expected: `is_killed()`. Got: `is_panic()`.
#[test]
fn kill_patched_std_read_unwrap_reports_panic() {
    util::isolated(
        "kill_patched_std_read_unwrap_reports_panic",
        Duration::from_secs(10),
        || {
            moss::monkey::patch_all();
            let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let h = moss::spawn(move || {
                let mut buf = [0u8; 1];
                a.read(&mut buf).unwrap()
            });
            util::until_parked(h.id());
            h.kill();
            let e = h.join().unwrap_err();
            assert!(e.is_killed(), "killed coroutine reported as: {e}");
        },
    );
}

/// With stdio closed (a daemon, a forked child that closed 0-2), the hub's
/// own fds (its epoll instance and eventfd) never take the numbers 0-2 (see
/// `util::with_stdio_closed`). Checked for the hub of the main thread and
/// of another thread.
#[test]
fn hub_fds_never_take_closed_stdio_numbers() {
    util::with_stdio_closed(
        "hub_fds_never_take_closed_stdio_numbers",
        Duration::from_secs(30),
        || {
            moss::sleep(Duration::from_millis(1));
            let five = std::thread::spawn(|| moss::spawn(|| 5).join().unwrap())
                .join()
                .unwrap();
            assert_eq!(five, 5);
        },
    );
}
