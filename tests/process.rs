//! Process / ProcessHandle / Runnable: forked children, exit codes, signals,
//! joins that yield.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::{PANIC_EXIT_CODE, Process, ProcessQueue, Runnable};
use util::Reap;

#[test]
fn exit_codes_for_return_panic_and_exit() {
    let ok = Reap(Process::new(|| ()).start().unwrap());
    let panicked = Reap(Process::new(|| panic!("child failed")).start().unwrap());
    let exited = Reap(Process::new(|| std::process::exit(7)).start().unwrap());
    assert_eq!(ok.join().unwrap(), 0);
    assert_eq!(panicked.join().unwrap(), PANIC_EXIT_CODE);
    assert_eq!(exited.join().unwrap(), 7);
    assert_eq!(ok.exit_code(), Some(0));
    assert!(!ok.is_alive());
    // Signalling a reaped child is a no-op, not an error.
    ok.terminate().unwrap();
}

#[test]
fn terminate_and_kill_a_sleeping_process() {
    let p = Reap(
        Process::new(|| std::thread::sleep(Duration::from_secs(60)))
            .name("sleeper")
            .start()
            .unwrap(),
    );
    assert_eq!(p.name(), "sleeper");
    assert_ne!(p.pid(), std::process::id());
    assert!(p.is_alive());
    assert_eq!(p.exit_code(), None);
    assert_eq!(p.join_timeout(Duration::from_millis(100)).unwrap(), None);
    let t = Instant::now();
    p.terminate().unwrap();
    assert_eq!(p.join().unwrap(), -libc_sigterm());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(p.exit_code(), Some(-libc_sigterm()));
    assert!(!p.is_alive());

    let q = Reap(
        Process::new(|| std::thread::sleep(Duration::from_secs(60)))
            .start()
            .unwrap(),
    );
    q.kill().unwrap();
    assert_eq!(q.join().unwrap(), -9);
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn joins_from_coroutines_overlap_and_the_hub_keeps_running() {
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let ticker = {
        let (ticks, done) = (ticks.clone(), done.clone());
        moss::spawn(move || {
            while !done.get() {
                moss::sleep(Duration::from_millis(10));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    let t = Instant::now();
    let hs: Vec<_> = (0..3)
        .map(|i| {
            moss::spawn(move || {
                let p = Reap(
                    Process::new(move || {
                        std::thread::sleep(Duration::from_millis(300));
                        std::process::exit(i)
                    })
                    .start()
                    .unwrap(),
                );
                p.join().unwrap()
            })
        })
        .collect();
    let codes: Vec<i32> = moss::join_all(hs).into_iter().map(Result::unwrap).collect();
    let elapsed = t.elapsed();
    done.set(true);
    ticker.join().unwrap();
    assert_eq!(codes, vec![0, 1, 2]);
    assert!(
        elapsed < Duration::from_secs(3),
        "joins did not overlap: {elapsed:?}"
    );
    assert!(ticks.get() >= 5, "hub blocked: {} ticks", ticks.get());
}

#[test]
fn the_child_runs_on_a_fresh_hub() {
    let q = Arc::new(ProcessQueue::<u32>::new(8).unwrap());
    // A coroutine of the parent that has not run yet: it must run only here.
    let parent_co = {
        let q = q.clone();
        moss::spawn(move || q.put(std::process::id()))
    };
    let child = {
        let q = q.clone();
        Reap(
            Process::new(move || {
                // Runs the child's hub: the parent's coroutine must not be there.
                moss::sleep(Duration::from_millis(20));
                let h = moss::spawn(|| 5);
                assert_eq!(h.join().unwrap(), 5);
                q.put(0);
            })
            .start()
            .unwrap(),
        )
    };
    assert_eq!(child.join().unwrap(), 0);
    parent_co.join().unwrap();
    let mut got = vec![q.get(), q.get()];
    got.sort();
    assert_eq!(got, vec![0, std::process::id()]);
    assert!(q.is_empty());
}

#[test]
fn start_from_a_coroutine_and_capture_arguments() {
    let q = Arc::new(ProcessQueue::<String>::new(2).unwrap());
    let h = {
        let q = q.clone();
        moss::spawn(move || {
            let (name, n) = ("args".to_string(), 6u64);
            let p = Reap(
                Process::new(move || q.put(format!("{name}:{}", n * 7)))
                    .start()
                    .unwrap(),
            );
            p.join().unwrap()
        })
    };
    assert_eq!(h.join().unwrap(), 0);
    assert_eq!(q.get(), "args:42");
}

struct Greeter {
    who: String,
    out: Arc<ProcessQueue<String>>,
}

impl Runnable for Greeter {
    fn run(self) {
        self.out
            .put(format!("hello {} from {}", self.who, std::process::id()));
    }
    fn name(&self) -> String {
        format!("greeter-{}", self.who)
    }
}

#[test]
fn custom_process_type() {
    let out = Arc::new(ProcessQueue::new(1).unwrap());
    let p = Reap(
        Greeter {
            who: "moss".into(),
            out: out.clone(),
        }
        .start()
        .unwrap(),
    );
    assert_eq!(p.name(), "greeter-moss");
    assert_eq!(out.get(), format!("hello moss from {}", p.pid()));
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn run_executes_in_this_process() {
    let pid = Rc::new(Cell::new(0));
    let p = pid.clone();
    Process::new(move || p.set(std::process::id())).run();
    assert_eq!(pid.get(), std::process::id());
}

#[test]
fn default_names_are_numbered() {
    let a = Reap(Process::new(|| ()).start().unwrap());
    let b = Reap(Process::new(|| ()).start().unwrap());
    assert!(a.name().starts_with("Process-"), "{}", a.name());
    assert_ne!(a.name(), b.name());
    a.join().unwrap();
    b.join().unwrap();
}

/// Uses about `depth` KiB of stack.
fn deep(depth: u32) -> u64 {
    let buf = std::hint::black_box([depth as u8; 1024]);
    if depth == 0 {
        buf[0] as u64
    } else {
        deep(depth - 1) + buf[1] as u64
    }
}

#[test]
fn the_body_gets_a_big_stack_even_when_started_from_a_small_coroutine() {
    let q = Arc::new(ProcessQueue::<(Option<String>, u64)>::new(1).unwrap());
    let q2 = q.clone();
    let h = moss::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            let p = Reap(
                Process::new(move || {
                    // ~2 MiB of stack: far more than the 64 KiB coroutine
                    // that called start.
                    let name = moss::current().name().map(str::to_owned);
                    q2.put((name, deep(2000)));
                })
                .name("deep")
                .start()
                .unwrap(),
            );
            p.join().unwrap()
        })
        .unwrap();
    assert_eq!(h.join().unwrap(), 0);
    let (name, _) = q.get();
    assert_eq!(name.as_deref(), Some("deep"));
}

#[test]
fn a_child_can_use_moss_sockets_inherited_from_the_parent() {
    use std::io::{Read, Write};
    let (a, mut b) = moss::net::UnixStream::pair().unwrap();
    // The parent waits on `a` once, so this thread's hub knows the fd.
    a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 5];
    assert!((&a).read(&mut buf).is_err());
    a.set_read_timeout(None).unwrap();
    let child = Reap(
        Process::new(move || {
            // The child's fresh hub must register the fd anew.
            let mut buf = [0u8; 5];
            (&a).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            (&a).write_all(b"world").unwrap();
        })
        .start()
        .unwrap(),
    );
    moss::sleep(Duration::from_millis(50)); // the child waits for data first
    b.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");
    assert_eq!(child.join().unwrap(), 0);
}
