//! Counting a server's user-space instructions with valgrind's callgrind:
//! the server runs under [`wrapper`], the benchmark zeroes its counters
//! after a warm-up ([`zero`]) and reads them after a fixed load ([`dump`]).
//! Instruction counts do not depend on the machine's load, unlike every
//! wall-clock number. Shared by echo_bench and service_bench.
// Each benchmark includes this file and uses a part of it.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// The valgrind command line that runs a server under callgrind, writing
/// its profile to `out` (`%p` becomes the pid).
pub fn wrapper(out: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "-q".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={out}"),
    ]
}

/// Zeroes the counters of the callgrind run `pid`.
pub fn zero(pid: u32) {
    control("-z", pid);
}

/// Dumps the counters of the callgrind run `pid` (writing `out.pid.N`) and
/// returns the instructions counted since the last zero.
pub fn dump(pid: u32, out: &str) -> u64 {
    control("-d", pid);
    let dir = std::path::Path::new(out).parent().expect("a directory");
    let prefix = std::path::Path::new(out)
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .replace("%p", &pid.to_string());
    let mut dumps: Vec<_> = std::fs::read_dir(dir)
        .expect("read the profile directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{prefix}.")))
        })
        .collect();
    dumps.sort();
    let last = dumps.last().expect("callgrind wrote a dump");
    let text = std::fs::read_to_string(last).expect("read the dump");
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a summary line in the dump")
}

fn control(flag: &str, pid: u32) {
    let out = Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run callgrind_control");
    assert!(
        out.status.success(),
        "callgrind_control {flag} {pid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the profiles callgrind wrote for `pattern` (`...%p`), or, with
/// `keep`, says where they are (read them with callgrind_annotate).
pub fn keep_or_remove(keep: bool, pattern: &str) {
    if keep {
        eprintln!("  profiles kept: {}*", pattern.replace("%p", ""));
        return;
    }
    let path = std::path::Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = name.to_string_lossy().replace("%p", "");
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
