//! A `StreamServer` on a thread of its own (its own hub), which a test on
//! another thread drives with ordinary clients, asks how many connections
//! are open, and stops.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use moss::server::StreamServer;

enum Cmd {
    Connections(mpsc::Sender<usize>),
    Stop,
}

/// The server thread; stopping it (or dropping it) stops the server and
/// joins the thread.
pub struct ServerThread {
    pub addr: SocketAddr,
    cmds: moss::sync::Sender<Cmd>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Starts a thread that builds a server with `make` and serves it with
/// `serve` (e.g. `|s| s.serve_forever()`), both on that thread's hub.
pub fn server_thread<M, S>(make: M, serve: S) -> ServerThread
where
    M: FnOnce() -> StreamServer + Send + 'static,
    S: FnOnce(&StreamServer) -> io::Result<()> + Send + 'static,
{
    let (cmds, rx) = moss::sync::channel::<Cmd>();
    let (addr_tx, addr_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("test server".into())
        .spawn(move || {
            moss::run(move || {
                let server = make();
                addr_tx
                    .send(server.local_addr())
                    .expect("test thread waits");
                let ctl = server.clone();
                moss::spawn(move || {
                    while let Ok(cmd) = rx.recv() {
                        match cmd {
                            Cmd::Connections(tx) => {
                                let _ = tx.send(ctl.connections());
                            }
                            Cmd::Stop => {
                                ctl.stop(Duration::from_secs(5));
                                return;
                            }
                        }
                    }
                });
                serve(&server)
            })
        })
        .expect("spawn the server thread");
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server thread reports its address");
    ServerThread {
        addr,
        cmds,
        thread: Some(thread),
    }
}

impl ServerThread {
    /// The connections the server is handling now.
    pub fn connections(&self) -> usize {
        let (tx, rx) = mpsc::channel();
        self.cmds
            .send(Cmd::Connections(tx))
            .expect("the server thread is alive");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the server thread answers (is its hub stuck?)")
    }

    /// Waits (up to `limit`) until the server handles exactly `n`
    /// connections; panics with the last count otherwise.
    pub fn until_connections(&self, n: usize, limit: Duration) {
        let t = Instant::now();
        loop {
            let c = self.connections();
            if c == n {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "the server still has {c} connections, not {n}, after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (handlers get 5 s, then are killed) and returns
    /// what serving returned.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner().expect("not stopped yet")
    }

    fn stop_inner(&mut self) -> Option<io::Result<()>> {
        let t = self.thread.take()?;
        let _ = self.cmds.send(Cmd::Stop);
        let _wd = super::watchdog("stopping the test server", Duration::from_secs(60));
        Some(t.join().expect("the server thread panicked"))
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop_inner();
        }
    }
}
