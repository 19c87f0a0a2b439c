//! `examples/echo_server --port 0` prints the address it really listens on
//! (the port the kernel chose), and that address echoes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

mod util;

/// The example binary `cargo test` built next to this test's own.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds the examples with the tests \
         (with --test alone, run `cargo build --examples` first)",
        path.display()
    );
    path
}

/// Kills and reaps the server however the test ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_0_prints_the_port_it_listens_on() {
    let _wd = util::watchdog("echo_server --port 0", Duration::from_secs(60));
    let mut child = Reap(
        Command::new(example("echo_server"))
            .args(["--port", "0", "--threads", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "echo_server: 127.0.0.1:PORT, 2 thread(s), 4096-byte buffers"
    let addr = line
        .strip_prefix("echo_server: ")
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().expect(&line);
    assert_ne!(addr.port(), 0, "{line}");
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"hello, port 0").unwrap();
    let mut got = [0u8; 13];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello, port 0");
}
