//! `StreamServer`: gevent's StreamServer — a coroutine per connection.
//!
//! ```text
//!  start() ─────────▶ accept loop (a coroutine) ──accept──▶ handler(stream, peer) in a new coroutine
//!  serve_forever():    start() if needed, then     │ pauses while the connection limit is reached
//!                      wait until stop()           │ backs off 10 ms → 1 s on EMFILE/ENFILE/ENOBUFS
//!
//!  stop(timeout): stop accepting; close the listener; wait for handlers
//!                 until the timeout; kill the rest; give them 50 ms at
//!                 most to unwind; return, naming the handlers still running
//! ```
//!
//! Everything lives on one thread's hub (the handle is `Clone` but not
//! `Send`, so the handler need not be `Send` either). For several cores, run
//! one server per thread with [`moss::run_per_core`](moss_runtime::run_per_core) on listeners bound with
//! [`TcpListener::bind_reuseport`].
//!
//! A handler that panics ends its own connection only: the panic is logged
//! (the standard panic hook prints it, moss adds the peer address) and the
//! server keeps serving. See [`StreamServer`] for how handlers end, and the
//! `chat_server` example in moss's repository (`cargo run --example
//! chat_server`) for a complete server: a broadcast chat with a writer
//! coroutine per client and a clean shutdown on Ctrl-C.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use moss_runtime::park::{self, Unparker};
use moss_runtime::{Cancelled, CoroutineId, JoinHandle};

use crate::net::{TcpListener, TcpStream, ToSocketAddrs};

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long `stop` waits for killed handlers to unwind (at most its
/// timeout again).
const KILL_GRACE: Duration = Duration::from_millis(50);

type Handler = dyn Fn(TcpStream, SocketAddr);

/// A TCP server running `handler(stream, peer)` in a new coroutine for
/// every connection (gevent's `StreamServer`). The handle is cheap to
/// clone; all clones control the same server.
///
/// * [`serve_forever`](Self::serve_forever) serves until [`stop`](Self::stop)
///   (gevent's `serve_forever`);
/// * [`start`](Self::start) serves in the background and returns at once
///   (gevent's `start`): the server runs whenever this thread blocks in a
///   moss call (in a coroutine, or on the thread's root);
/// * [`stop`](Self::stop) stops accepting and ends the handlers still
///   running, waiting for them up to a timeout.
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use moss::server::StreamServer;
///
/// let server = StreamServer::bind("127.0.0.1:0", |mut s, _peer| {
///     let mut b = [0; 5];
///     s.read_exact(&mut b).unwrap();
///     s.write_all(&b).unwrap();
/// })
/// .unwrap();
/// server.start().unwrap(); // accepts while this thread waits below
///
/// let mut c = moss::net::TcpStream::connect(server.local_addr()).unwrap();
/// c.write_all(b"hello").unwrap();
/// let mut b = [0; 5];
/// c.read_exact(&mut b).unwrap(); // the hub runs the handler meanwhile
/// assert_eq!(&b, b"hello");
///
/// assert!(server.stop(Duration::from_secs(1)).is_empty());
/// ```
///
/// # Small writes: buffer them, or set `TCP_NODELAY`
///
/// Every write on a [`TcpStream`] is a `send` of its own, and usually a TCP
/// segment of its own. `write!` and `writeln!` write each piece of their
/// format string (each literal, each argument) separately, so an unbuffered
/// `writeln!(stream, "{key} {value}")` sends several small segments, and so
/// does a reply written in several calls. With Nagle's algorithm (on by
/// default) a small segment waits until the previous one is acknowledged,
/// and the peer delays that acknowledgement (about 40 ms on Linux): a
/// request/response protocol can then stall about 40 ms per request. Write
/// each reply through a [`std::io::BufWriter`] and `flush` it once (one
/// segment, one system call), or call
/// [`set_nodelay(true)`](TcpStream::set_nodelay) on the stream (each write
/// is still a system call of its own):
///
/// ```
/// use std::io::{BufRead, BufReader, BufWriter, Write};
/// use std::time::Duration;
/// use moss::server::StreamServer;
///
/// let server = StreamServer::bind("127.0.0.1:0", |stream, _peer| {
///     let mut out = BufWriter::new(&stream);
///     for line in BufReader::new(&stream).lines() {
///         let Ok(name) = line else { break };
///         writeln!(out, "hello, {name}!").unwrap(); // three pieces, buffered
///         if out.flush().is_err() {
///             break; // one segment sent per reply
///         }
///     }
/// })
/// .unwrap();
/// server.start().unwrap();
///
/// let c = moss::net::TcpStream::connect(server.local_addr()).unwrap();
/// c.set_nodelay(true).unwrap(); // the client's choice: no Nagle delay either
/// (&c).write_all(b"moss\n").unwrap();
/// let mut reply = String::new();
/// BufReader::new(&c).read_line(&mut reply).unwrap();
/// assert_eq!(reply, "hello, moss!\n");
/// server.stop(Duration::from_secs(1));
/// ```
///
/// # How a handler ends
///
/// A handler ends when it returns; dropping its [`TcpStream`] closes the
/// connection. [`stop`](Self::stop) ends the handlers that are still
/// running at its timeout by *killing* them: the kill unwinds the handler
/// from the moss call it is blocked in (a read, a sleep, a lock), running
/// destructors on the way, as gevent raises `GreenletExit` in a greenlet.
/// A panic ends a handler the same way. So cleanup that must happen however
/// the handler ends (leaving a chat room, unregistering a client, flushing
/// a log) belongs in a `Drop` guard, Rust's `finally`; code after the
/// handler's loop does not run when it is killed:
///
/// ```
/// use std::cell::Cell;
/// use std::io::Read;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use moss::server::StreamServer;
///
/// /// Counts a client as online while its handler runs, however it ends.
/// struct Online(Rc<Cell<usize>>);
/// impl Drop for Online {
///     fn drop(&mut self) {
///         self.0.set(self.0.get() - 1); // also when the handler is killed
///     }
/// }
///
/// let online = Rc::new(Cell::new(0));
/// let counter = online.clone();
/// let server = StreamServer::bind("127.0.0.1:0", move |mut stream, _peer| {
///     counter.set(counter.get() + 1);
///     let _online = Online(counter.clone());
///     let _ = stream.read(&mut [0; 1]); // a client that says nothing: waits here
///     println!("not reached when killed");
/// })
/// .unwrap();
/// server.start().unwrap();
/// let _client = moss::net::TcpStream::connect(server.local_addr()).unwrap();
/// while online.get() == 0 {
///     moss::sleep(Duration::from_millis(1));
/// }
/// server.stop(Duration::from_millis(10)); // kills the handler in its read
/// while online.get() > 0 {
///     moss::sleep(Duration::from_millis(1));
/// }
/// ```
///
/// Coroutines a handler spawns are *detached*, as in gevent: they are not
/// killed with it. To tie them to the handler, spawn them through a
/// [`Group`](moss_runtime::pool::Group) and hold its
/// [`kill_on_drop`](moss_runtime::pool::Group::kill_on_drop) guard: they are
/// killed when the handler ends, however it ends. The `chat_server`
/// example does this for each client's writer coroutine.
///
/// The handle belongs to the thread that made it (its handler need not be
/// `Send`):
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>() {}
/// assert_send::<moss::server::StreamServer>();
/// ```
#[derive(Clone)]
pub struct StreamServer {
    inner: Rc<Inner>,
}

struct Inner {
    listener: RefCell<Option<Rc<TcpListener>>>,
    local_addr: SocketAddr,
    handler: Box<Handler>,
    max_connections: Cell<Option<usize>>,
    handlers: RefCell<HashMap<u64, Conn>>,
    next_id: Cell<u64>,
    stopped: Cell<bool>,
    /// The accept loop's coroutine, from `start` until `serve_forever`
    /// collects its result (or `stop`).
    acceptor: RefCell<Option<JoinHandle<()>>>,
    /// The acceptor's result, once it ended (`None` while it runs).
    result: RefCell<Option<io::Result<()>>>,
    /// A `serve_forever` is waiting.
    serving: Cell<bool>,
    /// Waiters: serve_forever (acceptor ended), the acceptor (room under
    /// the limit), stop (handlers finished).
    serve_waiter: RefCell<Option<Unparker>>,
    room_waiter: RefCell<Option<Unparker>>,
    idle_waiter: RefCell<Option<Unparker>>,
}

/// A running handler.
struct Conn {
    /// `None` once `stop` has handed it to a killer coroutine.
    handle: Option<JoinHandle<()>>,
    id: CoroutineId,
    peer: SocketAddr,
}

/// A connection handler that [`StreamServer::stop`] could not end within
/// its timeout: it was killed and is still running (it may be in a
/// destructor that blocks, or it caught the cancellation and went on). It
/// still counts in [`StreamServer::connections`] until it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    /// The handler's coroutine.
    pub id: CoroutineId,
    /// The client it serves.
    pub peer: SocketAddr,
}

fn wake(slot: &RefCell<Option<Unparker>>) {
    if let Some(u) = slot.borrow_mut().take() {
        u.unpark();
    }
}

impl StreamServer {
    /// Binds a listener on `addr` (see [`TcpListener::bind`]) for `handler`.
    /// Nothing is accepted until [`start`](Self::start) or
    /// [`serve_forever`](Self::serve_forever); connections that arrive
    /// before wait in the listen backlog.
    pub fn bind<A, F>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        StreamServer::from_listener(TcpListener::bind(addr)?, handler)
    }

    /// A server on an existing listener (for example one bound with
    /// [`TcpListener::bind_reuseport`] on each thread of
    /// [`run_per_core`](moss_runtime::run_per_core)).
    pub fn from_listener<F>(listener: TcpListener, handler: F) -> io::Result<StreamServer>
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        let local_addr = listener.local_addr()?;
        Ok(StreamServer {
            inner: Rc::new(Inner {
                listener: RefCell::new(Some(Rc::new(listener))),
                local_addr,
                handler: Box::new(handler),
                max_connections: Cell::new(None),
                handlers: RefCell::new(HashMap::new()),
                next_id: Cell::new(0),
                stopped: Cell::new(false),
                acceptor: RefCell::new(None),
                result: RefCell::new(None),
                serving: Cell::new(false),
                serve_waiter: RefCell::new(None),
                room_waiter: RefCell::new(None),
                idle_waiter: RefCell::new(None),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Caps the number of concurrent connections: while `limit` handlers
    /// run, accepting pauses (new clients wait in the listen backlog).
    /// `None` (the default) means no cap; `Some(0)` is treated as 1.
    pub fn set_max_connections(&self, limit: Option<usize>) {
        self.inner.max_connections.set(limit.map(|n| n.max(1)));
        wake(&self.inner.room_waiter);
    }

    /// The number of connections being handled now (handlers that a
    /// `stop` killed count until they have ended).
    pub fn connections(&self) -> usize {
        self.inner.handlers.borrow().len()
    }

    /// Starts accepting in the background and returns at once (gevent's
    /// `start`): a coroutine of this thread accepts connections and spawns
    /// their handlers until [`stop`](Self::stop). It runs whenever this
    /// thread blocks in a moss call, so after `start` the caller goes on
    /// with other work, for example waiting for a signal:
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use moss::server::StreamServer;
    /// use moss::signal;
    ///
    /// let server = StreamServer::bind("127.0.0.1:7000", |_stream, _peer| { /* ... */ })?;
    /// server.start()?;
    /// signal::wait(&[signal::SIGINT, signal::SIGTERM])?; // serves meanwhile
    /// server.stop(Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// The accept loop keeps `moss::run` and `moss::wait` waiting until
    /// the server is stopped. If `accept` fails with an error that is not
    /// transient (see [`serve_forever`](Self::serve_forever)), the loop
    /// ends: a waiting `serve_forever` returns the error; otherwise it is
    /// printed to stderr and the next `serve_forever` returns it.
    ///
    /// # Errors
    /// `ErrorKind::NotConnected` once the server was stopped;
    /// `ErrorKind::AlreadyExists` if it is already accepting.
    pub fn start(&self) -> io::Result<()> {
        let inner = &self.inner;
        let Some(listener) = inner.listener.borrow().clone() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server was stopped",
            ));
        };
        if inner.acceptor.borrow().is_some() && inner.result.borrow().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the server is already serving",
            ));
        }
        // A previous accept loop that failed on its own was reported when
        // it ended (nobody waited for it); this one replaces it.
        *inner.result.borrow_mut() = None;
        let me = self.inner.clone();
        let acceptor = moss_runtime::Builder::new()
            .name("moss::server acceptor")
            .spawn(move || {
                let _done = AcceptorDone(me.clone());
                let r = me.accept_loop(&listener);
                match &r {
                    Err(e) if !me.serving.get() => {
                        eprintln!("moss::server {}: stopped accepting: {e}", me.local_addr)
                    }
                    _ => {}
                }
                *me.result.borrow_mut() = Some(r);
            })?;
        *inner.acceptor.borrow_mut() = Some(acceptor);
        Ok(())
    }

    /// Accepts connections until [`stop`](Self::stop), running the handler
    /// of each in its own coroutine ([`start`](Self::start) if the server
    /// is not accepting yet, then wait). Returns `Ok(())` after `stop`, or
    /// the error of a failed `accept` that is not transient. Resource
    /// exhaustion (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) pauses accepting
    /// for 10 ms, doubling up to 1 s, while existing connections go on;
    /// errors about one connection (`ECONNABORTED`, `EPERM`, ...) are
    /// skipped.
    ///
    /// If the caller is killed (or its `timeout` fires) while it waits,
    /// accepting stops with it; a later `start` or `serve_forever` resumes.
    ///
    /// # Errors
    /// `ErrorKind::NotConnected` once the server was stopped;
    /// `ErrorKind::AlreadyExists` if another `serve_forever` is waiting.
    pub fn serve_forever(&self) -> io::Result<()> {
        let inner = &self.inner;
        if inner.serving.get() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the server is already serving",
            ));
        }
        if inner.acceptor.borrow().is_some() {
            // Started: collect the result of an accept loop that already
            // ended on its own, or wait for the running one below.
            if let Some(r) = inner.result.borrow_mut().take() {
                inner.acceptor.borrow_mut().take();
                return r;
            }
        } else {
            self.start()?;
        }
        inner.serving.set(true);
        // If the caller is cancelled while serving, take the acceptor down.
        let guard = KillAcceptor(self.inner.clone());
        loop {
            let r = inner.result.borrow_mut().take();
            if let Some(r) = r {
                inner.acceptor.borrow_mut().take();
                drop(guard); // finds no acceptor left to kill
                return r;
            }
            *inner.serve_waiter.borrow_mut() = Some(park::unparker());
            park::park_cancellable(None, "StreamServer::serve_forever");
        }
    }

    /// Stops accepting (the listening socket is closed; a waiting
    /// [`serve_forever`](Self::serve_forever) returns `Ok(())`), waits up to
    /// `timeout` for running handlers to finish, kills the rest and gives
    /// them 50 ms (no more than `timeout`) to unwind, then returns, naming
    /// the handlers that have not ended yet: one that catches the
    /// cancellation and goes on, or blocks in a destructor. Those keep
    /// running, and counting in [`connections`](Self::connections), until
    /// they end. `stop(Duration::ZERO)` kills every handler and returns at
    /// once. A handler may call `stop`; it does not wait for itself.
    ///
    /// A killed handler unwinds from its blocking call: its `Drop` guards
    /// run, the code after that call does not (see [how a handler
    /// ends](StreamServer#how-a-handler-ends)). Coroutines the handlers
    /// spawned are not stopped, unless they were tied to their handler with
    /// [`Group::kill_on_drop`](moss_runtime::pool::Group::kill_on_drop).
    ///
    /// ```
    /// use std::time::Duration;
    /// use moss::server::StreamServer;
    ///
    /// let server = StreamServer::bind("127.0.0.1:0", |_s, _peer| {}).unwrap();
    /// assert!(server.stop(Duration::from_millis(100)).is_empty());
    /// ```
    pub fn stop(&self, timeout: Duration) -> Vec<Unfinished> {
        let inner = &self.inner;
        inner.stopped.set(true);
        let acceptor = inner.acceptor.borrow_mut().take();
        if let Some(a) = acceptor {
            // Leaves its result (Ok) for serve_forever; see AcceptorDone.
            a.kill();
        }
        inner.listener.borrow_mut().take();
        wake(&inner.room_waiter);
        let me = moss_runtime::current().id();
        let kill_at = Instant::now().checked_add(timeout);
        inner.wait_for_handlers(me, kill_at);
        let to_kill: Vec<JoinHandle<()>> = inner
            .handlers
            .borrow_mut()
            .values_mut()
            .filter(|c| c.id != me)
            .filter_map(|c| c.handle.take())
            .collect();
        for h in to_kill {
            // `kill` waits for the end, which may never come: each waits in
            // a coroutine of its own, and stop only for the grace period.
            moss_runtime::spawn(move || h.kill());
        }
        inner.wait_for_handlers(me, Some(Instant::now() + timeout.min(KILL_GRACE)));
        inner
            .handlers
            .borrow()
            .values()
            .filter(|c| c.id != me)
            .map(|c| Unfinished {
                id: c.id,
                peer: c.peer,
            })
            .collect()
    }
}

impl Inner {
    /// Waits until no handler but `me` runs, or `until`.
    fn wait_for_handlers(&self, me: CoroutineId, until: Option<Instant>) {
        while self.handlers.borrow().values().any(|c| c.id != me) {
            if until.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            *self.idle_waiter.borrow_mut() = Some(park::unparker());
            park::park_cancellable(until, "StreamServer::stop");
        }
    }

    fn accept_loop(self: &Rc<Inner>, listener: &TcpListener) -> io::Result<()> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.stopped.get() {
                return Ok(());
            }
            while self
                .max_connections
                .get()
                .is_some_and(|m| self.handlers.borrow().len() >= m)
                && !self.stopped.get()
            {
                *self.room_waiter.borrow_mut() = Some(park::unparker());
                park::park_cancellable(None, "StreamServer: connection limit");
            }
            if self.stopped.get() {
                return Ok(());
            }
            match listener.accept() {
                Ok((s, peer)) => {
                    backoff = BACKOFF_MIN;
                    self.spawn_handler(s, peer)?;
                }
                Err(e) if is_exhaustion(&e) => {
                    if backoff == BACKOFF_MIN {
                        eprintln!(
                            "moss::server {}: accept failed ({e}); pausing, retrying with back-off",
                            self.local_addr
                        );
                    }
                    moss_runtime::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn_handler(self: &Rc<Inner>, s: TcpStream, peer: SocketAddr) -> io::Result<()> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let me = self.clone();
        let h = moss_runtime::spawn(move || {
            let _done = HandlerDone(me.clone(), id);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| (me.handler)(s, peer))) {
                if p.is::<Cancelled>() {
                    resume_unwind(p);
                }
                eprintln!(
                    "moss::server {}: the handler for {peer} panicked: {}",
                    me.local_addr,
                    moss_runtime::panic_message(&*p).unwrap_or("(non-string panic payload)")
                );
            }
        });
        let conn = Conn {
            id: h.id(),
            handle: Some(h),
            peer,
        };
        self.handlers.borrow_mut().insert(id, conn);
        Ok(())
    }
}

/// Resource exhaustion: pause accepting, keep serving.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Errors about one connection (or a signal), not about the listener.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT
        )
    )
}

/// Removes a finished handler and wakes whoever waits for room or idleness.
struct HandlerDone(Rc<Inner>, u64);

impl Drop for HandlerDone {
    fn drop(&mut self) {
        let h = self.0.handlers.borrow_mut().remove(&self.1);
        drop(h);
        wake(&self.0.room_waiter);
        wake(&self.0.idle_waiter);
    }
}

/// Records `Ok(())` if the acceptor was killed before storing a result, and
/// wakes serve_forever.
struct AcceptorDone(Rc<Inner>);

impl Drop for AcceptorDone {
    fn drop(&mut self) {
        let mut r = self.0.result.borrow_mut();
        if r.is_none() {
            *r = Some(Ok(()));
        }
        drop(r);
        wake(&self.0.serve_waiter);
    }
}

/// Ends serve_forever's wait; kills the acceptor if serve_forever unwinds
/// (its caller was cancelled).
struct KillAcceptor(Rc<Inner>);

impl Drop for KillAcceptor {
    fn drop(&mut self) {
        self.0.serving.set(false);
        let a = self.0.acceptor.borrow_mut().take();
        if let Some(a) = a {
            a.kill();
        }
    }
}

impl fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("local_addr", &self.inner.local_addr)
            .field("connections", &self.connections())
            .field("stopped", &self.inner.stopped.get())
            .finish()
    }
}
