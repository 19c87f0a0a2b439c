//! The cost of the monkey hooks on calls that do not block.
//!
//! Each row pair compares a hooked call (what every binary linking moss
//! gets) with libc's own definition called directly (found with
//! `dlsym(RTLD_NEXT)`, so the difference is exactly the hook):
//!
//! * `clock_nanosleep(CLOCK_THREAD_CPUTIME_ID)`: libc rejects it with
//!   `EINVAL` before any syscall, so this isolates the hook's overhead;
//! * `recv(MSG_DONTWAIT)` on an empty socket (`EAGAIN`): a real syscall;
//! * `recv` on a cooperative socket of a hub thread, with data ready (the
//!   fd-table lookup of the patched fast path);
//! * std's uncontended `Mutex` lock+unlock and an `mpsc` send+recv (no
//!   futex call at all: these must not change), and, on x86_64, `syscall`
//!   itself: `getpid` passed straight through and a `FUTEX_WAKE` that
//!   finds no waiter (the wake path's table check), against libc's;
//! * on the hub thread, the same lock+unlock and send+recv through
//!   `moss::sync::Mutex` and `moss::sync::channel`, the cooperative
//!   equivalents that need no patching.
//!
//! Stages run in order: before `patch_all`, after it on a thread without a
//! hub, after it on a thread with a hub. Run: `cargo bench --bench monkey`.
//!
//! Nanoseconds swing on a shared machine. With `MOSS_BENCH_COUNT=<n>` the
//! binary skips criterion and counts instructions instead (see
//! `benches/common/count.rs`): each std/moss sync row `n` times, in the
//! same stages, under callgrind, printed per row:
//!
//! ```text
//! MOSS_BENCH_COUNT=100000 cargo bench --bench monkey
//! ```

#[path = "common/count.rs"]
mod count;

use std::ffi::c_int;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

type ClockNanosleep = unsafe extern "C" fn(
    libc::clockid_t,
    c_int,
    *const libc::timespec,
    *mut libc::timespec,
) -> c_int;
type Recv = unsafe extern "C" fn(c_int, *mut libc::c_void, usize, c_int) -> isize;
type Syscall = unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long;

fn libc_syscall() -> Syscall {
    // SAFETY: valid pseudo-handle and name; `syscall` has this prototype.
    unsafe {
        let p = libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr());
        assert!(!p.is_null());
        std::mem::transmute::<*mut libc::c_void, Syscall>(p)
    }
}

/// std's synchronisation without contention, and `syscall` itself.
fn sync_rows(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let m = std::sync::Mutex::new(0u64);
    g.bench_function("std Mutex lock+unlock", |b| {
        b.iter(|| *black_box(&m).lock().unwrap() += 1)
    });
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    g.bench_function("std mpsc send+recv", |b| {
        b.iter(|| {
            tx.send(black_box(1)).unwrap();
            rx.recv().unwrap()
        })
    });
    let raw = libc_syscall();
    let word = std::sync::atomic::AtomicU32::new(0);
    let wake = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;
    g.bench_function("syscall(getpid) libc", |b| {
        // SAFETY: getpid takes no arguments.
        b.iter(|| unsafe { raw(black_box(libc::SYS_getpid)) })
    });
    g.bench_function("syscall(getpid) hooked", |b| {
        // SAFETY: as above, through the hook.
        b.iter(|| unsafe { libc::syscall(black_box(libc::SYS_getpid)) })
    });
    g.bench_function("futex wake, no waiter, libc", |b| {
        // SAFETY: a valid futex word.
        b.iter(|| unsafe { raw(libc::SYS_futex, word.as_ptr(), black_box(wake), 1) })
    });
    g.bench_function("futex wake, no waiter, hooked", |b| {
        // SAFETY: a valid futex word, through the hook.
        b.iter(|| unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), black_box(wake), 1) })
    });
}

fn libc_fns() -> (ClockNanosleep, Recv) {
    // SAFETY: valid pseudo-handle and names; the symbols have these C
    // prototypes.
    unsafe {
        let c = libc::dlsym(libc::RTLD_NEXT, c"clock_nanosleep".as_ptr());
        let r = libc::dlsym(libc::RTLD_NEXT, c"recv".as_ptr());
        assert!(!c.is_null() && !r.is_null());
        (
            std::mem::transmute::<*mut libc::c_void, ClockNanosleep>(c),
            std::mem::transmute::<*mut libc::c_void, Recv>(r),
        )
    }
}

fn stage(c: &mut Criterion, name: &str) {
    let (libc_clock, libc_recv) = libc_fns();
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1,
    };
    let (a, _b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    let mut buf = [0u8; 16];
    let mut g = c.benchmark_group(name);
    g.bench_function("clock_nanosleep(EINVAL) libc", |b| {
        // SAFETY: valid pointers; libc returns EINVAL for this clock.
        b.iter(|| unsafe {
            libc_clock(
                black_box(libc::CLOCK_THREAD_CPUTIME_ID),
                0,
                &ts,
                std::ptr::null_mut(),
            )
        })
    });
    g.bench_function("clock_nanosleep(EINVAL) hooked", |b| {
        // SAFETY: as above, through the hook.
        b.iter(|| unsafe {
            libc::clock_nanosleep(
                black_box(libc::CLOCK_THREAD_CPUTIME_ID),
                0,
                &ts,
                std::ptr::null_mut(),
            )
        })
    });
    g.bench_function("recv(EAGAIN) libc", |b| {
        // SAFETY: valid fd and buffer.
        b.iter(|| unsafe {
            libc_recv(
                black_box(fd),
                buf.as_mut_ptr().cast(),
                16,
                libc::MSG_DONTWAIT,
            )
        })
    });
    g.bench_function("recv(EAGAIN) hooked", |b| {
        // SAFETY: valid fd and buffer, through the hook.
        b.iter(|| unsafe {
            libc::recv(
                black_box(fd),
                buf.as_mut_ptr().cast(),
                16,
                libc::MSG_DONTWAIT,
            )
        })
    });
    g.bench_function("recv(EAGAIN) raw syscall", |b| {
        // SAFETY: valid fd and buffer.
        b.iter(|| unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                black_box(fd),
                buf.as_mut_ptr(),
                16,
                libc::MSG_DONTWAIT,
                0,
                0,
            )
        })
    });
    sync_rows(&mut g);
    g.finish();
}

fn cooperative_fast_path(c: &mut Criterion) {
    // A socket of this (hub) thread, with data always ready: the hooked
    // blocking-mode recv takes the cooperative path's first try.
    let (libc_clock, libc_recv) = libc_fns();
    let _ = libc_clock;
    moss::yield_now();
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    b.write_all(&[7u8; 64]).unwrap();
    let mut buf = [0u8; 1];
    let mut g = c.benchmark_group("patched, hub thread, cooperative socket");
    g.bench_function("recv(MSG_PEEK) libc", |bn| {
        // SAFETY: valid fd and buffer.
        bn.iter(|| unsafe { libc_recv(black_box(fd), buf.as_mut_ptr().cast(), 1, libc::MSG_PEEK) })
    });
    g.bench_function("recv(MSG_PEEK) hooked", |bn| {
        // SAFETY: valid fd and buffer, through the hook.
        bn.iter(|| unsafe { libc::recv(black_box(fd), buf.as_mut_ptr().cast(), 1, libc::MSG_PEEK) })
    });
    sync_rows(&mut g);
    let m = moss::sync::Mutex::new(0u64);
    g.bench_function("moss::sync::Mutex lock+unlock", |b| {
        b.iter(|| *black_box(&m).lock() += 1)
    });
    let (tx, rx) = moss::sync::channel::<u64>();
    g.bench_function("moss::sync::channel send+recv", |b| {
        b.iter(|| {
            tx.send(black_box(1)).unwrap();
            rx.recv().unwrap()
        })
    });
    g.finish();
}

/// One counted row: `f` `n` times (see `count`).
fn counted(label: &str, n: u64, f: impl FnMut()) {
    count::counted(label, n, n, f);
}

/// `MOSS_BENCH_COUNT=<n>`: the sync rows of every stage, `n` times each,
/// for instruction counts.
fn count_rows(n: u64) {
    let std_rows = |stage: &str| {
        let m = std::sync::Mutex::new(0u64);
        counted(&format!("{stage}: std Mutex lock+unlock"), n, || {
            *black_box(&m).lock().unwrap() += 1
        });
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        counted(&format!("{stage}: std mpsc send+recv"), n, || {
            tx.send(black_box(1)).unwrap();
            black_box(rx.recv().unwrap());
        });
    };
    std_rows("unpatched");
    moss::monkey::patch_all();
    std_rows("patched, no hub");
    moss::yield_now();
    std_rows("patched, hub thread");
    let m = moss::sync::Mutex::new(0u64);
    counted(
        "patched, hub thread: moss::sync::Mutex lock+unlock",
        n,
        || *black_box(&m).lock() += 1,
    );
    let (tx, rx) = moss::sync::channel::<u64>();
    counted(
        "patched, hub thread: moss::sync::channel send+recv",
        n,
        || {
            tx.send(black_box(1)).unwrap();
            black_box(rx.recv().unwrap());
        },
    );
}

fn all(c: &mut Criterion) {
    if let Some(n) = count::count_mode() {
        if !count::callgrind_table("monkey") {
            count_rows(n);
        }
        return;
    }
    stage(c, "unpatched");
    moss::monkey::patch_all();
    stage(c, "patched, no hub");
    cooperative_fast_path(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = all
}
criterion_main!(benches);
