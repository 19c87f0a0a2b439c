//! Pipes, child processes, `io::copy` (sendfile/splice) and fds that pass
//! straight through (files, eventfds, ...), after `patch_all`.
//!
//! Every test patches first (idempotent; the whole binary is patched) and
//! runs its coroutines on a thread of its own, so each has its own hub.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn io_copy_sendfile_and_splice_wait_cooperatively() {
    util::on_patched_thread(Duration::from_secs(30), || {
        // File -> socket (sendfile): bigger than the socket buffers, so the
        // copy hits EAGAIN until the reader coroutine drains.
        let path =
            std::env::temp_dir().join(format!("moss-monkey-sendfile-{}", std::process::id()));
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let reader = moss::spawn(move || {
            let mut got = Vec::new();
            (&b).read_to_end(&mut got).unwrap();
            got
        });
        let (ticks, tick) = util::ticker();
        let mut f = std::fs::File::open(&path).unwrap();
        let n = std::io::copy(&mut f, &mut &a).unwrap();
        drop(a);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(reader.join().unwrap() == data, "bytes differ");

        // Socket -> pipe (splice): the socket has no data for 100 ms.
        let (c, d) = UnixStream::pair().unwrap();
        let (mut pr, mut pw) = std::io::pipe().unwrap();
        let writer = moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            (&d).write_all(b"spliced bytes").unwrap();
        });
        let before = ticks.get();
        let n = std::io::copy(&mut &c, &mut pw).unwrap();
        assert_eq!(n, 13);
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled during the splice"
        );
        writer.join().unwrap();
        drop(pw);
        let mut s = String::new();
        pr.read_to_string(&mut s).unwrap();
        assert_eq!(s, "spliced bytes");
        tick.kill();
    });
}

#[test]
fn pipes_and_child_output_are_read_cooperatively() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let (ticks, tick) = util::ticker();
        // An anonymous pipe made by this process.
        let (mut r, w) = std::io::pipe().unwrap();
        let writer = moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            (&w).write_all(b"through a pipe").unwrap();
        });
        let before = ticks.get();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through a pipe");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled on the pipe read"
        );
        // SAFETY: valid fd.
        let fl = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(
            fl & libc::O_NONBLOCK,
            0,
            "the user still sees a blocking pipe"
        );
        writer.join().unwrap();

        // A child's stdout, read while the child takes its time; the child
        // (which reads its stdin blocking) is unaffected.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line; sleep 0.2; echo \"got $line\""])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let before = ticks.get();
        moss::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stdin.write_all(b"hello\n").unwrap();
        });
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        assert_eq!(out, "got hello\n");
        assert!(
            ticks.get() - before >= 2,
            "the ticker stalled on the child's stdout"
        );
        assert!(child.wait().unwrap().success());
        tick.kill();
    });
}

#[test]
fn child_processes_still_work() {
    util::on_patched_thread(Duration::from_secs(20), || {
        let out = std::process::Command::new("echo")
            .arg("from the root")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"from the root\n");
        let h = moss::spawn(|| {
            let out = std::process::Command::new("sh")
                .args(["-c", "sleep 0.1; echo from a coroutine"])
                .output()
                .unwrap();
            assert!(out.status.success());
            out.stdout
        });
        assert_eq!(h.join().unwrap(), b"from a coroutine\n");
        let e = std::process::Command::new("/nonexistent/moss-test")
            .status()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    });
}

#[test]
fn other_fds_pass_straight_through_in_coroutines() {
    util::on_patched_thread(Duration::from_secs(20), || {
        moss::spawn(|| {
            // A regular file: plain reads and writes, flags untouched.
            let path =
                std::env::temp_dir().join(format!("moss-monkey-plain-{}", std::process::id()));
            std::fs::write(&path, b"plain file").unwrap();
            let f = std::fs::File::open(&path).unwrap();
            let mut s = String::new();
            (&f).read_to_string(&mut s).unwrap();
            assert_eq!(s, "plain file");
            // SAFETY: raw fcntl syscall on a valid fd (bypasses the hooks).
            let kernel =
                unsafe { libc::syscall(libc::SYS_fcntl, f.as_raw_fd(), libc::F_GETFL) } as i32;
            assert_eq!(
                kernel & libc::O_NONBLOCK,
                0,
                "a regular file was made non-blocking"
            );
            std::fs::remove_file(&path).unwrap();
            // An eventfd (what the hub's waker is): a non-blocking read of an
            // empty one fails at once with EAGAIN, exactly as libc's.
            // SAFETY: plain syscall wrappers on our own eventfd.
            unsafe {
                let e = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
                assert!(e >= 0);
                let mut v = 0u64;
                let t = Instant::now();
                assert_eq!(libc::read(e, (&raw mut v).cast(), 8), -1);
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EAGAIN)
                );
                // Nothing else writes it: a wait would last until the limit.
                assert!(t.elapsed() < Duration::from_secs(1));
                let one = 1u64;
                assert_eq!(libc::write(e, (&raw const one).cast(), 8), 8);
                assert_eq!(libc::read(e, (&raw mut v).cast(), 8), 8);
                assert_eq!(v, 1);
                assert_eq!(libc::close(e), 0);
            }
            // /dev/null takes writes.
            let mut null = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .unwrap();
            null.write_all(&[0u8; 4096]).unwrap();
        })
        .join()
        .unwrap();
    });
}
