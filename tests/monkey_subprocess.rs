//! After `patch_all`, unmodified `std::process` code yields in coroutines:
//! `Child::wait`, `status`, `output` and `wait_with_output` park instead of
//! blocking the hub.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod util;

fn patched_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    util::on_patched_thread(Duration::from_secs(60), f)
}

#[test]
fn fifty_std_sleep_processes_overlap() {
    patched_thread(|| {
        let (ticks, tk) = util::ticker();
        let t = Instant::now();
        let hs: Vec<_> = (0..50)
            .map(|_| moss::spawn(|| Command::new("sleep").arg("0.2").status().unwrap()))
            .collect();
        for r in moss::join_all(hs) {
            assert!(r.unwrap().success());
        }
        let el = t.elapsed();
        // Serially: 50 x 200 ms = 10 s.
        assert!(el < Duration::from_secs(4), "waits did not overlap: {el:?}");
        assert!(
            ticks.get() >= 5,
            "the hub was blocked: {} ticks",
            ticks.get()
        );
        tk.kill();
    });
}

#[test]
fn std_wait_with_output_of_big_pipes_yields() {
    patched_thread(|| {
        let (ticks, tk) = util::ticker();
        let n = 4 << 20;
        let hs: Vec<_> = (0..4)
            .map(|_| {
                moss::spawn(move || {
                    let mut c = Command::new("sh")
                        .args(["-c", &format!("head -c {n} /dev/zero >&2 & cat; wait")])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    let mut stdin = c.stdin.take().unwrap();
                    let w = moss::spawn(move || stdin.write_all(&vec![7u8; n]));
                    let out = c.wait_with_output().unwrap();
                    w.join().unwrap().unwrap();
                    (out.status.success(), out.stdout.len(), out.stderr.len())
                })
            })
            .collect();
        for r in moss::join_all(hs) {
            assert_eq!(r.unwrap(), (true, n, n));
        }
        assert!(ticks.get() >= 1, "the hub was blocked");
        tk.kill();
    });
}

#[test]
fn a_killed_std_wait_fails_with_ecanceled_and_other_waits_pass_through() {
    patched_thread(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = moss::spawn(move || {
            let mut c = Command::new("sleep").arg("30").spawn().unwrap();
            let e = c.wait().unwrap_err();
            tx.send((e.raw_os_error(), c.id())).unwrap();
            // The cancellation is delivered at the next moss call.
            moss::sleep(Duration::from_secs(60));
            drop(c);
        });
        util::until_parked(h.id());
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        let (errno, pid) = rx.recv().unwrap();
        assert_eq!(errno, Some(libc::ECANCELED));
        // SAFETY: plain syscalls on our own child, whose pid nothing else reaps.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            let mut st = 0;
            assert_eq!(libc::waitpid(pid as i32, &mut st, 0), pid as i32);
        }
        // Not our child: ECHILD at once, from the real call.
        // SAFETY: a null status pointer is allowed.
        let r = unsafe { libc::waitpid(1, std::ptr::null_mut(), 0) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
        // try_wait (WNOHANG) never waits.
        let mut c = Command::new("sleep").arg("0.2").spawn().unwrap();
        assert!(c.try_wait().unwrap().is_none());
        assert!(c.wait().unwrap().success());
    });
}
