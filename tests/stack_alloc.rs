//! A stack that cannot be mapped is reported by `Builder::spawn`, not by a
//! crash. Runs in a child process whose address space is limited
//! (RLIMIT_AS), so the limit never affects other tests.

use std::process::Command;

#[test]
fn mmap_failure_is_an_io_error_from_builder_spawn() {
    if std::env::var("MOSS_STACK_ALLOC_CHILD").is_ok() {
        let vm_kib: u64 = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmSize:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap();
        let limit = (vm_kib + 256 * 1024) * 1024;
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit with a valid struct; lowering our own limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        let err = moss::Builder::new()
            .stack_size(1 << 30)
            .spawn(|| ())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "{err}");
        // Small stacks still work.
        assert!(
            moss::Builder::new()
                .stack_size(64 * 1024)
                .spawn(|| 1)
                .unwrap()
                .join()
                .is_ok()
        );
        println!("CHILD-OK");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "mmap_failure_is_an_io_error_from_builder_spawn",
            "--exact",
            "--nocapture",
        ])
        .env("MOSS_STACK_ALLOC_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
