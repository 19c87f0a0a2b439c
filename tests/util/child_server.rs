//! An example's server run in a child process of the test binary: the test
//! case runs the example when `in_child`, the example prints "listening on
//! ADDR" once it accepts, and the parent connects to it, signals it and
//! reads the rest of its output.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout};

/// The child; killed and reaped on drop if the test fails before it exits.
pub struct ChildServer(pub Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildServer {
    /// Starts the test `case` in a child (see `spawn_child`) and waits for
    /// its "listening on ADDR" line: the server, its stdout after that line,
    /// and ADDR.
    pub fn start(case: &str) -> (ChildServer, BufReader<ChildStdout>, SocketAddr) {
        let mut child = super::spawn_child(case);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let server = ChildServer(child);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the server exited early"
            );
            // libtest's "test NAME ... " may precede it on the same line.
            if let Some(i) = line.find("listening on ") {
                let a = line[i + "listening on ".len()..].trim();
                return (server, out, a.parse().unwrap());
            }
        }
    }

    /// Sends SIGTERM to the child.
    pub fn sigterm(&self) {
        // SAFETY: a plain syscall, signalling our own child (not yet reaped:
        // `self` reaps it only on drop or through `self.0`).
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) }, 0);
    }
}

/// The rest of the child's stdout, until it closes.
pub fn rest(mut out: BufReader<ChildStdout>) -> String {
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    s
}
