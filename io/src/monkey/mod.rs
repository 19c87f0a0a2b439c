//! Monkey patching: unmodified blocking code yields inside coroutines.
//!
//! After [`patch_all`], code written for plain threads yields to the hub
//! when it would block in a coroutine, without being changed or rebuilt
//! against moss types (gevent's `monkey.patch_all()`): `std::net` and
//! `std::os::unix::net` sockets, pipes, `std::thread::sleep`, name lookups,
//! `std::process` waits and pipes, `std::thread::JoinHandle::join`, std's
//! locks and channels (`Mutex`, `Condvar`, `RwLock`, `OnceLock`, `mpsc`, on
//! Linux x86_64), and the third-party crates built on them (HTTP clients
//! such as `ureq`, database drivers, mio-based event loops).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! moss::monkey::patch_all();
//! let hs: Vec<_> = (0..10)
//!     .map(|_| moss::spawn(|| {
//!         // Plain std code: the connect and the read park this coroutine.
//!         let mut s = std::net::TcpStream::connect("127.0.0.1:8080")?;
//!         s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
//!         let mut body = Vec::new();
//!         s.read_to_end(&mut body)?;
//!         Ok::<_, std::io::Error>(body.len())
//!     }))
//!     .collect();
//! for r in moss::join_all(hs) {
//!     println!("{:?}", r.unwrap());
//! }
//! ```
//!
//! # What `patch_all` does not cover
//!
//! moss never preempts a coroutine: every other coroutine of its thread
//! waits until it reaches a blocking point that moss sees. The calls below
//! still block the whole thread in a coroutine (or, worse, wait forever),
//! patched or not:
//!
//! | in a coroutine | what happens | instead |
//! |---|---|---|
//! | CPU-bound work: a long loop, compression, hashing, parsing a big document | runs to its end while the thread's other coroutines wait | `moss::pool::ThreadPool::apply` or `moss::pool::ProcessPool`; or `moss::yield_now()` inside the loop |
//! | regular files: `std::fs` reads and writes, `open`, `stat`, `fsync` | block the thread (a file is always "ready", as in gevent) | `ThreadPool::apply(move \|\| std::fs::read(path))` |
//! | reading stdin, or writing to a terminal or pipe on fds 0–2 | blocks the thread (fds 0–2 are shared with the shell and stay as they are) | read stdin on a thread (`moss::thread::Builder`) and hand lines over through a `moss::sync::channel` |
//! | `parking_lot` locks, and crates built on them | block the thread (their wait records are per thread) | `moss::sync::Mutex`, `RwLock`, `Condvar` |
//! | C libraries' own locks and waits (`pthread_mutex_lock`, `pthread_cond_wait`, `sem_wait`) | block the thread | `moss::sync`, or call the library on a `ThreadPool` |
//! | a `std::sync::mpsc` receiver fed by another coroutine of the *same* thread | waits forever (std wakes only other threads) | `moss::sync::channel` (or `bounded`) |
//! | crates that make system calls without libc (`rustix`'s default `linux_raw` backend, and what uses it) | block the thread | the same crate with its libc backend (`rustix`'s `use-libc` feature), or a `ThreadPool` |
//! | `std::sync` on targets other than x86_64 Linux | blocks the thread | `moss::sync` |
//! | `wait`, `waitid`, `epoll_pwait2`; `epoll_wait` on a thread's root | block the thread | `moss::subprocess`; run the loop in a coroutine |
//! | a patched blocking call inside a raw `moss::greenlet` | aborts the process (a greenlet cannot park) | call it from a coroutine |
//!
//! std's channels and `thread::park` also wake parked coroutines with a
//! delay of up to a few milliseconds; `moss::sync` wakes them at once.
//!
//! # Finding the calls that block
//!
//! A call that blocks the thread shows as a service that stalls for every
//! client at once. Turn on the blocked-hub monitor to find it:
//! `moss::monitor::enable(Duration::from_millis(100))` starts one thread
//! that reports (to stderr, or to the function given to
//! `moss::monitor::set_report`) every time a coroutine keeps its thread
//! from switching for longer than that: which coroutine, where it was
//! spawned, for how long. The call itself is then on that coroutine's
//! stack: `gdb -p PID`, then `thread apply all bt`, shows it while it
//! blocks.
//!
//! A program that hangs while its hub still runs (every coroutine parked,
//! for example on a `Queue` nobody fills) is diagnosed with `moss::dump()`:
//! it lists every coroutine of the thread with its state, what it waits
//! on and where it was spawned. Call it from a `moss::signal::handler`
//! (on `SIGUSR1`, say) to see a hung service.
//!
//! # Mechanism
//!
//! moss-io defines the libc functions below as `#[no_mangle] extern "C"`
//! symbols. In the final binary the linker binds every call to those names
//! — std's, other crates', and (through dynamic symbol export) other shared
//! libraries' — to these definitions instead of libc's; the hooks reach
//! libc's own definitions through `dlsym(RTLD_NEXT)`.
//!
//! | group | hooks |
//! |---|---|
//! | data | `read readv write writev recv recvfrom recvmsg send sendto sendmsg sendfile sendfile64 splice` |
//! | sockets and fd state | `socket socketpair connect accept accept4 shutdown close dup dup2 dup3 fcntl ioctl setsockopt getsockopt` |
//! | readiness | `poll select` |
//! | event loops | `epoll_wait epoll_pwait` (coroutines only) |
//! | child processes | `waitpid wait4` (one child, by pidfd) |
//! | sleeping | `nanosleep clock_nanosleep usleep sleep` |
//! | names | `getaddrinfo` |
//! | std::sync (x86_64 only) | `syscall` (private `FUTEX_WAIT`/`WAKE`, their `_BITSET` forms, `REQUEUE`, `CMP_REQUEUE`, `WAKE_OP`) |
//! | thread joins | `pthread_join` |
//!
//! **Linking.** An archive member nothing references is silently dropped by
//! the linker, and with it the hooks. A reference to a hook's own name does
//! not help where another linked library already defines that name weakly
//! (AddressSanitizer's interceptors of `waitpid`, `read`, ...): the weak
//! definition satisfies it, and the member holding the hook stays out. So
//! each hooks module has a Rust-named `addresses` function listing its
//! hooks, which only that module's object defines, and [`patch_all`] calls
//! every one of them: any binary that calls it links all the hooks (moss's
//! tests check that `dlsym(RTLD_DEFAULT)` finds each ahead of libc's).
//! Binaries that never call it usually get them too (rustc keeps exported
//! symbols), which is why the unpatched path must be, and is, exact.
//!
//! # Three regimes
//!
//! * **Not patched** (before `patch_all`, in any binary that links moss-io):
//!   every hook is one relaxed atomic load plus the real call — same
//!   results, same errno.
//! * **Patched, thread without a hub**: the hooks never create a hub. fds
//!   are passed straight through, except a socket some hub thread made
//!   non-blocking: there a blocking call is emulated with `poll(2)` so the
//!   thread still sees blocking semantics (and the emulated timeouts).
//! * **Patched, thread with a hub** (a coroutine, or a root that has used
//!   moss): sockets, pipes and ttys (fd 3 and up) become cooperative
//!   (kernel fd
//!   non-blocking, the user's `O_NONBLOCK` kept virtual, `SO_RCVTIMEO`/
//!   `SO_SNDTIMEO` emulated with deadlines, expiring with `EAGAIN` as Linux
//!   does). A call that would block parks: a coroutine suspends; the root
//!   runs the hub until the fd is ready (gevent's main greenlet), so a root
//!   can be the client of a server coroutine on its own thread. Sleeps park
//!   on hub timers; `poll`/`select` wait on a temporary epoll registered
//!   with the hub; `getaddrinfo` runs on a helper thread.
//!
//! # std::sync and thread joins
//!
//! On Linux, std's `Mutex`, `Condvar`, `RwLock`, `Once`, `OnceLock`,
//! `LazyLock`, `Barrier` and thread parking (`mpsc` channels,
//! `thread::park`, `thread::scope`) wait and wake through libc's
//! `syscall(SYS_futex, ...)`. After `patch_all`, a private futex wait from
//! a context with a hub parks that context on a moss-side wait table (a
//! root runs its hub meanwhile), and a futex wake from any thread wakes
//! those waiters as well as the kernel's. So two coroutines of one hub can share a `std::sync::Mutex`
//! held across a blocking call, wait on a `Condvar`, a `Barrier` or a
//! `OnceLock` being initialised, coroutines can receive from
//! `std::sync::mpsc` channels fed by other threads, and a crate's
//! internal locks and queues (tiny_http's request queue) stop freezing the
//! hub. `std::thread::JoinHandle::join` (`pthread_join`) waits the same
//! way. An uncontended lock never calls the futex, so it costs nothing:
//! a `std::sync::Mutex` lock+unlock runs the same 24 instructions with
//! and without `patch_all` (`moss::sync::Mutex`: 19).
//!
//! Cancellation: a `kill`/`timeout` ends a futex wait as a spurious
//! wake-up; std then waits again (a lock must be taken) and further waits
//! ignore the pending cancellation, which is delivered at the coroutine's
//! next moss blocking point (with the guard held, unwinding releases it).
//! A `pthread_join` likewise keeps waiting. So `kill` of a coroutine in
//! a std wait loop (`Condvar::wait`, `mpsc::Receiver::recv`) returns only
//! once that wait ends on its own; `kill_nowait` and `kill_timeout` do not
//! wait for it.
//!
//! What stays blocking (the thread waits in the kernel, as before):
//!
//! * every futex wait outside a context that can park: threads without a
//!   hub, the hub loop itself, greenlets driven by a coroutine;
//! * shared (process-shared) futexes, PI futexes, `futex_waitv`;
//! * futexes other code waits on without libc's `syscall()`: glibc's own
//!   `pthread_mutex_lock`, `pthread_cond_wait`, `sem_wait`,
//!   `pthread_once`, C libraries built on them, and any inline `syscall`
//!   instruction;
//! * futex words in the waiting thread's thread-local storage: they belong
//!   to the thread, not to a coroutine (parking_lot keeps a per-thread wait
//!   record there, which two coroutines of one thread would share), so a
//!   `parking_lot` lock blocks the thread as without patching;
//! * `pthread_timedjoin_np`/`pthread_clockjoin_np`;
//! * all of it on targets other than x86_64 Linux (where a plain function
//!   cannot stand in for the variadic `syscall`), except `pthread_join`.
//!
//! The wait table keeps one FIFO queue per futex word: waiting, leaving
//! and waking each cost O(1) whatever the number of waiters (thousands of
//! coroutines queued on one std `Mutex` hand it over in linear time), and
//! an entry lives only as long as its wait.
//!
//! Limits: std's thread parker (`mpsc`, `thread::park`) is one word per
//! OS thread; std's `unpark` names the thread, not a coroutine, and takes
//! no system call while the word is not "parked". So coroutines parked in
//! it are not woken precisely: one of them per thread looks at the word
//! every 1–16 ms, and when it finds a token, every coroutine of that
//! thread parked there re-checks its condition (O(k) per hand-off for k
//! of them; moss's channels wake exactly one). Each also re-checks once
//! every 2 s, for a token std handed to the wrong coroutine without a
//! system call. Idle std receivers therefore cost one look per thread
//! every 16 ms plus one re-check per receiver every 2 s: 2000 idle
//! `std::sync::mpsc` receivers on one hub use 0.6% of a core (~2% in a
//! debug build). std's channels never wake a receiver on the sender's own
//! thread, so a blocking `recv` in a coroutine fed by another coroutine of
//! the same thread still waits forever (use `moss::sync::channel`).
//! A coroutine blocked in a lock held by another coroutine of its own
//! thread that never reaches a blocking point still waits forever, as a
//! thread would.
//!
//! The hub's own syscalls never take the cooperative path: `epoll_wait`
//! cooperates only in coroutines (the hub polls on the root), `epoll_ctl`
//! is not hooked, and the hub's eventfd (written by mio's
//! `Waker` through `write`) is neither a socket, a pipe nor a tty, so it
//! stays `Plain`. Regular files stay `Plain` (they are always "ready"), and
//! so do fds 0–2: making them non-blocking would change file descriptions
//! shared with other processes (the shell's terminal).
//!
//! # When no fd can be had (`EMFILE`)
//!
//! A few cooperative waits need a new fd: `poll`/`select` a temporary
//! epoll instance, `waitpid`/`wait4` a pidfd, a second coroutine in
//! `epoll_wait` on one epoll fd a duplicate of it. At the process's fd
//! limit (`EMFILE`, or `ENFILE` system-wide), or if the hub refuses the
//! fd, these calls do not block the thread: they repeat their
//! non-blocking form (a zero-timeout `poll`/`select`/`epoll_wait`,
//! `waitpid` with `WNOHANG`) with naps on hub timers in between, 1 ms
//! doubling to 50 ms, so the hub keeps running the other coroutines. What
//! they wait for is noticed up to one nap late (at most 50 ms); results,
//! timeouts, errno and cancellation are as usual. `pthread_join` does the
//! same with `pthread_tryjoin_np` when no helper thread can be started,
//! and so does hooked I/O on a socket, pipe or tty that the hub refuses
//! (its registration is an `epoll_ctl`, which needs no new fd, so it
//! normally works at the limit too). Only `getaddrinfo` without a helper
//! thread runs inline, blocking the thread for the lookup. The hooks
//! never create a hub, so none of this needs an fd for one.
//!
//! # fork
//!
//! A child made by libc's `fork` (a user's `libc::fork()`, std's `Command`
//! when it forks, as with `pre_exec`, moss's own `Process`) has no hub
//! until it makes a moss call: the hub it inherited is the parent's (its
//! coroutines are the parent's, and its epoll instance is the same kernel
//! object as the parent's), so moss forgets it at the fork and never runs
//! or polls it in the child. Until then the child is a thread without a
//! hub (the regime above): a hooked sleep in a `pre_exec` closure sleeps
//! plainly, and the parent's coroutines never run there. The first moss
//! call (`moss::spawn`, `moss::sleep`, a `moss::net` socket, ...) makes the
//! child's own hub, and from then on the hooks park as usual. A coroutine
//! that forks goes on in the child as the root of that hub; when its
//! function returns there, the child runs the coroutines it spawned and
//! exits (status 0, or 101 after a panic). Children made without libc's
//! fork handlers (a raw `clone` or `syscall(SYS_fork)`) are not detected.
//!
//! # errno and cancellation
//!
//! Every hook leaves errno exactly as the real call did; its own
//! bookkeeping syscalls save and restore errno. A `kill` or `timeout` that
//! fires while a coroutine is inside a hook cannot unwind through the C
//! ABI, so the hooked call fails and the cancellation stays pending until
//! the coroutine's next moss blocking point (`moss::sleep`, `join`, a moss
//! socket, a sync primitive, ...), where it is delivered as usual; `timeout`
//! reports `Elapsed` even if the closure returns first, because the
//! runtime remembers that a raw wait observed it. The errors:
//!
//! * I/O, `connect`, `accept`, `poll`, `select`: -1 with `ECANCELED`
//!   (`io::ErrorKind::Other`, "Operation canceled"). Not `EINTR`: std
//!   retries `EINTR` at once in `read_exact`, `write_all` and
//!   `connect_timeout`, and the retry would fail again immediately, forever.
//! * sleeps: `EINTR` with nothing left to sleep, so std's retry loop ends.
//! * `getaddrinfo`: `EAI_SYSTEM` with errno `ECANCELED`.
//!
//! Code that loops on hooked calls without ever reaching a moss blocking
//! point keeps getting these errors instead of dying: it is up to it to
//! stop on them.
//!
//! # Where a hooked wait differs from a blocked thread
//!
//! In a context with a hub (threads without one are unchanged):
//!
//! | while the call waits | after `patch_all` | a blocked thread on Linux |
//! |---|---|---|
//! | a signal handler runs, with or without `SA_RESTART` | the handler runs; the call keeps waiting (gevent's choice). To end a wait from a signal, kill the coroutine from a `moss::signal` handler, or use `moss::timeout` or `SO_RCVTIMEO` | restarted (`SA_RESTART`) or -1 with `EINTR` |
//! | another coroutine `close`s the fd | -1 with `EBADF` at once | goes on with the old file |
//! | another coroutine `dup2`s/`dup3`s onto the fd | -1 with `EBADF` at once; the new file's data stays for the next reader | goes on with the old file |
//! | `poll` lists one fd in several entries | watched once with the union of their events; each entry gets its own `revents` | the same |
//! | `poll`/`select` reach their timeout | one more zero-timeout check: what is ready then is reported | the same |
//! | `kill`/`timeout` of the coroutine | -1 with `ECANCELED` (see above) | (no equivalent) |
//!
//! # Limits
//!
//! * An fd made cooperative stays non-blocking at the kernel level, also
//!   for a child process that inherits that same end (e.g. a socket passed
//!   as a child's stdio).
//! * fds closed without going through `close`/`dup2`/`dup3` (glibc-internal
//!   calls, raw syscalls) keep stale state until their number is reused by
//!   `socket`/`accept`.
//! * The `O_NONBLOCK` view is per fd number, not per file description.
//! * A blocking hooked call inside a raw `moss::greenlet` started from a
//!   coroutine would have to park the greenlet, which moss forbids: the
//!   runtime's panic cannot unwind through the C hook and aborts. Do not
//!   use patched blocking calls in greenlets.
//! * A coroutine killed inside a hooked call that then returns without
//!   reaching a moss blocking point finishes normally (`join` gives its
//!   value); `timeout` does report `Elapsed` in that case.
//! * `getaddrinfo` uses one short-lived helper thread per concurrent lookup
//!   (no shared pool, so it also works in a forked child).
//! * `epoll_wait`/`epoll_pwait` block the thread on a root (only coroutines
//!   park), and so does `epoll_pwait` with a signal mask. `waitpid`/`wait4`
//!   park only for one child of ours (on its pidfd, or polling without
//!   one); `wait`, `waitid`,
//!   `epoll_pwait2` and file-system calls are not hooked: they block the
//!   thread as before.
//! * A coroutine killed inside `std::process::Child::wait` gets an error
//!   and leaves the child unreaped (a zombie once it exits, as after any
//!   failed wait); `moss::subprocess` reaps dropped children itself.
//! * A futex wait on an unmapped address faults in the hook (the kernel
//!   would return `EFAULT`); null and misaligned addresses go to the
//!   kernel, which reports them.
//! * The hooks and `moss::net` share one registration per fd and hub, so a
//!   socket may go back and forth between std and moss types (and threads).
//!   If the hub refuses to register an fd anyway (other code registered
//!   it with this hub directly), that call polls the fd with growing naps
//!   (see "When no fd can be had").
//! * Reads of datagram and seqpacket sockets and ttys always try the
//!   syscall first; only byte streams (stream sockets, pipes) use the
//!   "drained" hint that skips the `EAGAIN` after a short read.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

/// Defines a hooks module's `addresses`: what [`patch_all`] calls so that
/// the linker keeps the module, and with it its hooks (see "Linking").
macro_rules! hook_addresses {
    ($($hook:ident),+ $(,)?) => {
        /// The addresses of this module's hooks; calling it links them.
        #[inline(never)]
        pub(super) fn addresses() -> Vec<*const ()> {
            vec![$($hook as *const ()),+]
        }
    };
}

mod fdtable;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod futex_table;
mod hooks_dns;
mod hooks_epoll;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod hooks_futex;
mod hooks_io;
mod hooks_poll;
mod hooks_sock;
mod hooks_thread;
mod hooks_time;
mod hooks_wait;
mod real;
mod user;

use std::sync::atomic::{AtomicBool, Ordering};

static PATCHED: AtomicBool = AtomicBool::new(false);

/// Whether `patch_all` ran (one relaxed load: the hooks' fast path).
#[inline(always)]
pub(crate) fn patched() -> bool {
    PATCHED.load(Ordering::Relaxed)
}

/// Makes blocking libc calls cooperative in every coroutine of every thread
/// (and on the root of every thread that has a hub). Idempotent; there is
/// no unpatch. See the [module docs](self) for what changes and what not.
///
/// ```
/// moss::monkey::patch_all();
/// assert!(moss::monkey::is_patched());
/// moss::monkey::patch_all(); // idempotent
/// ```
pub fn patch_all() {
    for addresses in [
        hooks_io::addresses,
        hooks_sock::addresses,
        hooks_poll::addresses,
        hooks_time::addresses,
        hooks_dns::addresses,
        hooks_epoll::addresses,
        hooks_wait::addresses,
        hooks_thread::addresses,
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        hooks_futex::addresses,
    ] {
        std::hint::black_box(addresses());
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    hooks_futex::init();
    real::resolve_all();
    PATCHED.store(true, Ordering::Release);
}

/// Whether [`patch_all`] has been called in this process.
pub fn is_patched() -> bool {
    PATCHED.load(Ordering::Acquire)
}
