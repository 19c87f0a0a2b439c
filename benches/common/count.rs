//! Instruction counts of a bench's rows under valgrind's callgrind, for
//! figures that do not swing with the machine's load as nanoseconds do.
//!
//! With `MOSS_BENCH_COUNT=<n>` a bench that supports it skips criterion and
//! runs each counted row `n` times inside [`instr_count_loop`], printing
//! one line per row (`ROW <divisor> <label>`) before it. Under callgrind with
//! `--zero-before`/`--dump-after` on that function, each row's instructions
//! land in a dump of their own. [`callgrind_table`] does all of it: run
//! outside valgrind, it starts the bench binary again under callgrind and
//! prints each row's instructions divided by its divisor:
//!
//! ```text
//! MOSS_BENCH_COUNT=100000 cargo bench --bench core
//! ```
// Each bench includes this file and uses a part of it.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Set in the child that runs under callgrind.
const CHILD: &str = "MOSS_BENCH_COUNT_CHILD";

/// The `MOSS_BENCH_COUNT` of this run, if set.
pub fn count_mode() -> Option<u64> {
    std::env::var("MOSS_BENCH_COUNT").ok()?.parse().ok()
}

/// Announces a row (its instructions will be divided by `per`), then
/// runs `f` `n` times in [`instr_count_loop`].
pub fn counted(label: &str, per: u64, n: u64, f: impl FnMut()) {
    println!("ROW {per} {label}");
    instr_count_loop(n, f);
}

/// Runs `f` `n` times; under callgrind (see the module docs) the
/// instructions of one call of this function are those of one row.
#[inline(never)]
pub fn instr_count_loop(n: u64, mut f: impl FnMut()) {
    for _ in 0..n {
        f();
    }
}

/// In the callgrind child: false (the caller runs its rows). Otherwise
/// runs this binary under callgrind with the same arguments, prints each
/// row's instructions per `per` and returns true. `bench` is the bench's
/// crate name (the prefix of the function callgrind watches).
pub fn callgrind_table(bench: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let n = count_mode().expect("MOSS_BENCH_COUNT is set");
    let out = std::env::temp_dir().join(format!("moss_bench_{bench}.{}.cg", std::process::id()));
    let out_s = out.to_string_lossy().into_owned();
    let f = format!("{bench}::count::instr_count_loop");
    let exe = std::env::current_exe().expect("current_exe");
    let run = Command::new("valgrind")
        .args(["-q", "--tool=callgrind"])
        .arg(format!("--zero-before={f}"))
        .arg(format!("--dump-after={f}"))
        .arg(format!("--callgrind-out-file={out_s}"))
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output();
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            eprintln!("MOSS_BENCH_COUNT needs valgrind (apt-get install valgrind): {e}");
            std::process::exit(2);
        }
    };
    assert!(
        run.status.success(),
        "the bench failed under callgrind: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<(u64, String)> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("ROW ")?.splitn(2, ' ');
            Some((w.next()?.parse().ok()?, w.next()?.to_string()))
        })
        .collect();
    // Dumps are numbered from 1 in the order they were made.
    let prefix = format!("{}.", out.file_name().expect("a name").to_string_lossy());
    let dir = out.parent().expect("a directory");
    let mut dumps: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("read the temp directory")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            Some((rest.parse().ok()?, e.path()))
        })
        .collect();
    dumps.sort();
    assert_eq!(
        dumps.len(),
        rows.len(),
        "one callgrind dump per row (is {f} the function's name?)"
    );
    println!("instructions per operation (callgrind, {n} iterations per row):");
    for ((_, path), (per, label)) in dumps.iter().zip(&rows) {
        let text = std::fs::read_to_string(path).expect("read a dump");
        let total: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.trim().parse().ok())
            .expect("a totals line in the dump");
        println!("  {:>9.1}  {label}", total as f64 / *per as f64);
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) || e.path() == out {
            let _ = std::fs::remove_file(e.path());
        }
    }
    true
}
