//! Attacks on `moss::monkey` under `patch_all`: the futex hook's thread
//! parker emulation, and forked children that inherit the hub.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod util;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// Counts the heap bytes of the whole process (the test below runs alone in
/// a child process).
#[global_allocator]
static HEAP: util::LiveBytes = util::LiveBytes::new();

/// Every coroutine whose std thread-parker wait (`thread::park_timeout`,
/// `mpsc::Receiver::recv_timeout`, ... anything on the parker) ended
/// without a token used to leave an entry in a per-thread list that was
/// never freed and scanned twice per parker wait: memory grew without
/// bound and waits got O(n) slower (first batch of 3000 coroutines 0.1 s,
/// eighth 2.7 s). The parker keeps no per-coroutine state now: once the
/// first batches have filled the runtime's caches, a batch leaves the heap
/// as it found it. (Measured in live heap bytes, not in time: the time of a
/// batch is the OS's as much as moss's on a loaded machine. The old list
/// of 16-byte entries grew by hundreds of kilobytes over these batches.)
#[test]
fn parker_idle_list_grows_with_dead_coroutines() {
    util::isolated_patched(
        "parker_idle_list_grows_with_dead_coroutines",
        Duration::from_secs(120),
        || {
            const N: usize = 3000;
            let batch = || {
                for _ in 0..N {
                    moss::spawn(|| std::thread::park_timeout(Duration::ZERO))
                        .join()
                        .unwrap();
                }
            };
            for _ in 0..3 {
                batch();
            }
            let first = HEAP.live();
            for _ in 0..7 {
                batch();
            }
            let grown = HEAP.live() - first;
            println!("live heap bytes after 3 batches {first}, grown by {grown} after 7 more");
            // Less than a byte per dead coroutine (the old list: 16 each).
            assert!(
                grown < N as isize,
                "the heap grew by {grown} bytes over {} dead coroutines that waited on the parker",
                7 * N
            );
        },
    );
}

/// `std::process::Command` with a `pre_exec` hook forks (no posix_spawn).
/// The forked child, before exec, is a copy of the calling coroutine with
/// the parent's hub still in its thread-locals: a hooked blocking call in
/// `pre_exec` (here `std::thread::sleep`, async-signal-safe nanosleep) parks
/// that copy and runs the *parent's other coroutines* in the child, on the
/// parent's shared epoll instance. Their side effects happen twice.
///
/// Expected: only the parent's pid ever writes a tick. Got: ticks written
/// by the child's pid (the parent's ticker coroutine ran in the child for
/// the 150 ms of the sleep).
#[test]
fn pre_exec_sleep_runs_parent_coroutines_in_child() {
    util::isolated_patched(
        "pre_exec_sleep_runs_parent_coroutines_in_child",
        Duration::from_secs(20),
        || {
            let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
            let ticker = moss::spawn(move || {
                use std::io::Write;
                let mut w = w;
                loop {
                    moss::sleep(Duration::from_millis(5));
                    // SAFETY: getpid has no preconditions.
                    let pid = unsafe { libc::getpid() };
                    w.write_all(&pid.to_le_bytes()).unwrap();
                }
            });
            let st = moss::spawn(|| {
                // SAFETY: the hook only sleeps (nanosleep is async-signal-safe).
                unsafe {
                    std::process::Command::new("true")
                        .pre_exec(|| {
                            std::thread::sleep(Duration::from_millis(150));
                            Ok(())
                        })
                        .status()
                }
            })
            .join()
            .unwrap()
            .unwrap();
            assert!(st.success());
            ticker.kill();
            r.set_nonblocking(true).unwrap();
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            // SAFETY: getpid has no preconditions.
            let me = unsafe { libc::getpid() };
            let foreign: Vec<i32> = buf
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .filter(|&p| p != me)
                .collect();
            assert!(
                foreign.is_empty(),
                "{} ticks came from another process (the pre_exec child ran our coroutines): {:?}",
                foreign.len(),
                &foreign[..foreign.len().min(5)]
            );
        },
    );
}

/// A raw `libc::fork()` from a coroutine (gevent's `os.fork` use case):
/// the child keeps the parent's hub, whose epoll instance is *shared* with
/// the parent. When the child blocks in a hooked call, its hub loop runs
/// `epoll_wait` on the shared instance and consumes edge-triggered events
/// meant for the parent: here the child's copy of a reader coroutine gets
/// the readiness event and reads the parent's data; the parent's reader
/// never wakes (hang).
///
/// Expected: the parent's reader gets "hello" (gevent re-initialises the
/// loop in a forked child, so the child never touches the parent's events).
/// Got: the parent's reader hangs (the child printed that it read "hello").
#[test]
fn raw_fork_child_steals_parent_io_events() {
    util::isolated_patched(
        "raw_fork_child_steals_parent_io_events",
        Duration::from_secs(20),
        || {
            let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let reader = moss::spawn(move || {
                let mut buf = [0u8; 5];
                a.read_exact(&mut buf).unwrap();
                // SAFETY: getpid has no preconditions.
                eprintln!("pid {} read {:?}", unsafe { libc::getpid() }, &buf);
                buf
            });
            util::until_parked(reader.id());
            let forker = moss::spawn(|| {
                // SAFETY: the child only sleeps (hooked) and _exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                    // SAFETY: ends the child without running the parent's atexit.
                    unsafe { libc::_exit(0) };
                }
                pid
            });
            let pid = forker.join().unwrap();
            // A plain thread writes while this process's hub is not polling
            // (the root blocks in a raw, unhooked nanosleep).
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                use std::io::Write;
                (&b).write_all(b"hello").unwrap();
                b
            });
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 200_000_000,
            };
            // SAFETY: raw nanosleep with a valid timespec (not hooked).
            unsafe {
                libc::syscall(
                    libc::SYS_nanosleep,
                    &ts,
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            let _b = writer.join().unwrap();
            let mut st = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            match reader.join_timeout(Duration::from_secs(2)) {
                Ok(r) => assert_eq!(&r.unwrap(), b"hello"),
                Err(_) => panic!("the parent's reader never got the data the child's hub took"),
            }
        },
    );
}

/// A hooked read on a socket the hub refuses to register for the hooks
/// (registered with the hub directly, through the reactor's own API): the
/// wait polls the fd with growing naps on hub timers, so another coroutine
/// of the thread can write the data (the fallback used to block the
/// thread in `poll(2)`, and with the writer on the same thread, forever).
#[test]
fn hooked_read_on_an_fd_the_hub_refuses_keeps_the_hub_running() {
    util::isolated_patched(
        "hooked_read_on_an_fd_the_hub_refuses_keeps_the_hub_running",
        Duration::from_secs(20),
        || {
            use std::os::fd::AsRawFd;
            let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let _taken = moss_runtime::reactor::Registration::new(a.as_raw_fd()).unwrap();
            let (ticks, tk) = util::ticker();
            let writer = moss::spawn(move || {
                moss::sleep(Duration::from_millis(200));
                std::io::Write::write_all(&mut &b, b"hello").unwrap();
                b
            });
            let reader = moss::spawn(move || {
                let mut buf = [0u8; 5];
                a.read_exact(&mut buf).unwrap();
                buf
            });
            assert_eq!(&reader.join().unwrap(), b"hello");
            let _b = writer.join().unwrap();
            let t = ticks.get();
            tk.kill();
            assert!(t >= 2, "hub frozen during the read: {t} ticks");
        },
    );
}

/// `std::thread::JoinHandle::join` in a coroutine when no helper thread
/// can be started (here: the address-space limit leaves no room for a
/// thread stack): the hook polls `pthread_tryjoin_np` with growing naps,
/// and the hub keeps running (it used to block the thread in the real
/// `pthread_join`).
#[test]
fn thread_join_without_a_helper_thread_keeps_the_hub_running() {
    util::isolated_patched(
        "thread_join_without_a_helper_thread_keeps_the_hub_running",
        Duration::from_secs(20),
        || {
            let t = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(400));
                7
            });
            let (ticks, tk) = util::ticker();
            let j = moss::spawn(move || {
                // No room for another thread's stack (8 MiB by default; a
                // 2 MiB Rust one): the mapped size now, plus 1 MiB for the
                // heap to grow.
                let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
                let pages: u64 = statm.split(' ').next().unwrap().parse().unwrap();
                // SAFETY: sysconf has no preconditions.
                let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
                let lim = libc::rlimit {
                    rlim_cur: pages * page + (1 << 20),
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: a valid rlimit; lowers only the soft limit.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
                assert!(
                    std::thread::Builder::new().spawn(|| ()).is_err(),
                    "the limit should leave no room for a thread"
                );
                let r = t.join().unwrap();
                let inf = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: as above.
                unsafe { libc::setrlimit(libc::RLIMIT_AS, &inf) };
                r
            });
            assert_eq!(j.join().unwrap(), 7);
            let t = ticks.get();
            tk.kill();
            assert!(t >= 2, "hub frozen during the join: {t} ticks");
        },
    );
}
