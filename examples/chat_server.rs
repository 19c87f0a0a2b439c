//! A broadcast chat: every line a client sends goes to every connected
//! client. A [`StreamServer`] runs one handler coroutine per client; each
//! client also gets a writer coroutine that drains its own outbox, so a slow
//! client never holds up the others (one that falls too far behind is
//! disconnected).
//!
//! ```sh
//! cargo run --example chat_server -- --port 7002
//! nc 127.0.0.1 7002        # in two or more terminals: type lines
//! ```
//!
//! Ctrl-C (or SIGTERM) shuts it down cleanly: new clients are turned away,
//! every client gets `* server shutting down` and then end-of-file, and
//! the process exits 0.
//!
//! What it shows:
//! * cleanup that must run however a handler ends (it returns, fails, or
//!   is killed by [`StreamServer::stop`]) lives in a `Drop` guard
//!   (`Leave`), Rust's `finally`;
//! * coroutines a handler spawns are detached unless tied to it: the
//!   writer is spawned through a [`Group`] whose
//!   [`kill_on_drop`](Group::kill_on_drop) guard kills it when the handler
//!   ends;
//! * [`StreamServer::start`] serves in the background while `main` waits
//!   for a signal with [`signal::wait`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use moss::net::TcpStream;
use moss::pool::Group;
use moss::server::StreamServer;
use moss::signal;
use moss::sync::{Receiver, Sender, TrySendError, bounded};

/// Lines that may wait for one client before it counts as too slow and is
/// disconnected.
const OUTBOX: usize = 256;

/// How long a leaving client's writer may take to send what is queued.
const FLUSH: Duration = Duration::from_secs(2);

/// The connected clients, shared by the handlers of one thread (`Rc`: a
/// server's coroutines all run on the thread that made it).
#[derive(Default)]
struct Room {
    clients: RefCell<HashMap<SocketAddr, Client>>,
    closing: Cell<bool>,
}

struct Client {
    /// Lines for this client's writer coroutine.
    outbox: Sender<Rc<str>>,
    /// A handle on its socket, to end its handler's read at shutdown.
    socket: TcpStream,
}

impl Room {
    /// Queues `line` for every client, without waiting: a client whose
    /// outbox is full is disconnected.
    fn broadcast(&self, line: &str) {
        let line: Rc<str> = format!("{line}\n").into();
        let mut too_slow = Vec::new();
        for (peer, c) in self.clients.borrow().iter() {
            if let Err(TrySendError::Full(_)) = c.outbox.try_send(line.clone()) {
                too_slow.push(*peer);
            }
        }
        for peer in too_slow {
            let gone = self.clients.borrow_mut().remove(&peer);
            if let Some(c) = gone {
                // Its writer and its handler's read both end on this.
                let _ = c.socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// Ends every client's read: each handler then finishes as if its
    /// client had hung up, and its writer sends what is still queued.
    fn close_all(&self) {
        for c in self.clients.borrow().values() {
            let _ = c.socket.shutdown(Shutdown::Read);
        }
    }
}

/// Takes a client out of the room when its handler ends, however it ends.
struct Leave {
    room: Rc<Room>,
    peer: SocketAddr,
}

impl Drop for Leave {
    fn drop(&mut self) {
        // Dropping its `Client` closes the writer's outbox.
        let was_in = self.room.clients.borrow_mut().remove(&self.peer).is_some();
        if was_in && !self.room.closing.get() {
            self.room.broadcast(&format!("* {} left", self.peer));
        }
    }
}

/// The handler: one coroutine per client.
fn serve_client(room: &Rc<Room>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    if room.closing.get() {
        return (&stream).write_all(b"* server shutting down\n");
    }
    let (outbox, inbox) = bounded(OUTBOX);
    // The writer dies with this handler, however the handler ends.
    let children = Group::new();
    let _kill_children = children.kill_on_drop();
    let writer = {
        let socket = stream.try_clone()?;
        children.spawn(move || write_lines(socket, inbox))
    };
    let client = Client {
        outbox,
        socket: stream.try_clone()?,
    };
    room.clients.borrow_mut().insert(peer, client);
    let leave = Leave {
        room: room.clone(),
        peer,
    };
    room.broadcast(&format!("* {peer} joined"));

    let read = read_lines(room, stream, peer);

    // The client hung up (or its read was ended): leave the room, then let
    // the writer send what is queued, within reason. If this handler is
    // killed instead, `leave` and `_kill_children` still run.
    drop(leave);
    let _ = writer.join_timeout(FLUSH);
    read
}

fn read_lines(room: &Room, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    for line in BufReader::new(stream).lines() {
        let line = line?;
        room.broadcast(&format!("{peer}: {}", line.trim_end()));
        // A read that finds data returns without waiting, so a client that
        // sends fast would keep this coroutine running and the writers
        // waiting until every outbox is full: let them run.
        moss::yield_now();
    }
    Ok(())
}

/// The writer: sends the client's lines until its outbox is closed.
fn write_lines(mut socket: TcpStream, inbox: Receiver<Rc<str>>) {
    for line in inbox {
        if socket.write_all(line.as_bytes()).is_err() {
            return;
        }
    }
}

/// Serves on `127.0.0.1:port` until SIGINT or SIGTERM. Prints `listening
/// on ADDR` once ready and `stopped` at the end.
pub fn run(port: u16) -> io::Result<()> {
    let room = Rc::new(Room::default());
    let server = {
        let room = room.clone();
        StreamServer::bind(("127.0.0.1", port), move |stream, peer| {
            if let Err(e) = serve_client(&room, stream, peer) {
                eprintln!("chat_server: {peer}: {e}");
            }
        })?
    };
    server.start()?; // accepts in the background while we wait below
    println!("chat_server: listening on {}", server.local_addr());

    let sig = signal::wait(&[signal::SIGINT, signal::SIGTERM])?;
    println!(
        "chat_server: signal {sig}, shutting down {} client(s)",
        server.connections()
    );
    room.closing.set(true);
    room.broadcast("* server shutting down");
    room.close_all();
    // Handlers finish on their own now; any still running after 5 s are
    // killed (their `Leave` and `kill_on_drop` guards run).
    let killed = server.stop(Duration::from_secs(5));
    println!(
        "chat_server: stopped ({} handler(s) still unwinding)",
        killed.len()
    );
    Ok(())
}

#[allow(dead_code)] // the tests include this file as a module and call `run`
fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port = match (args.next().as_deref(), args.next()) {
        (None, _) => 7002,
        (Some("--port"), Some(p)) => p.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    run(port)
}

fn usage() -> ! {
    eprintln!("usage: chat_server [--port N]   (0: any free port)");
    std::process::exit(2)
}
