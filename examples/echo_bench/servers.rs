//! The echo servers under comparison. Each kind is one enum variant and one
//! function that serves an already bound std listener until the process is
//! told to stop (its stdin closes).

use std::io::{Read, Write};
use std::net::TcpListener;

/// A server implementation in the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// moss: one coroutine per connection, one hub.
    Moss,
    /// The same moss server on the io_uring backend (`MOSS_IO=uring`).
    MossUring,
    /// `MossUring` with the ring set up with `IORING_SETUP_COOP_TASKRUN`
    /// (`MOSS_URING_SETUP=coop`); only on request (`--servers`).
    MossUringCoop,
    /// `MossUring` with `IORING_SETUP_SINGLE_ISSUER` and
    /// `IORING_SETUP_DEFER_TASKRUN` (`MOSS_URING_SETUP=defer`); only on
    /// request.
    MossUringDefer,
    /// `MossUring` with sends on `send(2)` (`MOSS_URING_SETUP=sendsys`);
    /// only on request.
    MossUringSendSys,
    /// `MossUring` with receives that arm their poll at once
    /// (`IORING_RECVSEND_POLL_FIRST`, `MOSS_URING_SETUP=pollfirst`); only
    /// on request.
    MossUringPollFirst,
    /// moss after `monkey::patch_all()`: the plain std::net code of `Std`,
    /// one coroutine per connection on one hub instead of one thread.
    Monkey,
    /// tokio current-thread runtime: one task per connection.
    Tokio,
    /// std: one OS thread per connection, blocking I/O.
    Std,
    /// The floor: one thread, a level-triggered epoll loop calling libc
    /// directly (one `read` and one `write` per message), no runtime.
    Raw,
}

impl Kind {
    /// Every kind, in table order (moss first: the ratios are against it).
    pub const ALL: &'static [Kind] = &[
        Kind::Moss,
        Kind::MossUring,
        Kind::Monkey,
        Kind::Tokio,
        Kind::Std,
        Kind::Raw,
    ];

    /// Kinds measured only when `--servers` names them.
    const EXTRA: &'static [Kind] = &[
        Kind::MossUringCoop,
        Kind::MossUringDefer,
        Kind::MossUringSendSys,
        Kind::MossUringPollFirst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Moss => "moss",
            Kind::MossUring => "moss (io_uring)",
            Kind::MossUringCoop => "moss (io_uring, coop)",
            Kind::MossUringDefer => "moss (io_uring, defer)",
            Kind::MossUringSendSys => "moss (io_uring, send(2))",
            Kind::MossUringPollFirst => "moss (io_uring, pollfirst)",
            Kind::Monkey => "moss (patched std::net)",
            Kind::Tokio => "tokio-current-thread",
            Kind::Std => "std-thread-per-conn",
            Kind::Raw => "raw epoll loop",
        }
    }

    /// The short name used on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Moss => "moss",
            Kind::MossUring => "moss-uring",
            Kind::MossUringCoop => "moss-uring-coop",
            Kind::MossUringDefer => "moss-uring-defer",
            Kind::MossUringSendSys => "moss-uring-sendsys",
            Kind::MossUringPollFirst => "moss-uring-pollfirst",
            Kind::Monkey => "monkey",
            Kind::Tokio => "tokio",
            Kind::Std => "std",
            Kind::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .chain(Kind::EXTRA)
            .copied()
            .find(|k| k.key() == s)
    }

    /// Serves `l` forever (the caller exits the process to stop).
    pub fn serve(self, l: TcpListener, buf: usize) {
        match self {
            Kind::Moss => serve_moss(l, buf),
            Kind::MossUring => serve_moss_uring(l, buf, ""),
            Kind::MossUringCoop => serve_moss_uring(l, buf, "coop"),
            Kind::MossUringDefer => serve_moss_uring(l, buf, "defer"),
            Kind::MossUringSendSys => serve_moss_uring(l, buf, "sendsys"),
            Kind::MossUringPollFirst => serve_moss_uring(l, buf, "pollfirst"),
            Kind::Monkey => serve_monkey(l, buf),
            Kind::Tokio => serve_tokio(l, buf),
            Kind::Std => serve_std(l, buf),
            Kind::Raw => serve_raw(l, buf),
        }
    }
}

/// `serve_moss` on io_uring, the ring set up with `setup` (see
/// `MOSS_URING_SETUP` in the README).
fn serve_moss_uring(l: TcpListener, buf: usize, setup: &str) {
    if !setup.is_empty() {
        // SAFETY: this server process has a single thread so far (its hub
        // is made below), so nothing reads the environment meanwhile.
        unsafe { std::env::set_var("MOSS_URING_SETUP", setup) };
    }
    moss::reactor::set_backend(moss::reactor::Backend::Uring);
    assert_eq!(
        moss::reactor::backend(),
        moss::reactor::Backend::Uring,
        "io_uring is unavailable here"
    );
    serve_moss(l, buf)
}

fn serve_moss(l: TcpListener, buf: usize) {
    let l = moss::net::TcpListener::from(l);
    loop {
        match l.accept() {
            Ok((mut s, _)) => {
                moss::spawn(move || {
                    let _ = s.set_nodelay(true);
                    let mut b = vec![0u8; buf];
                    while let Ok(n @ 1..) = s.read(&mut b) {
                        if s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(_) => moss::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

fn serve_monkey(l: TcpListener, buf: usize) {
    moss::monkey::patch_all();
    moss::yield_now(); // this thread gets a hub: the root's accept yields to the coroutines
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        moss::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut b = vec![0u8; buf];
            while let Ok(n @ 1..) = s.read(&mut b) {
                if s.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn serve_tokio(l: TcpListener, buf: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut b = vec![0u8; buf];
                while let Ok(n @ 1..) = s.read(&mut b).await {
                    if s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn serve_std(l: TcpListener, buf: usize) {
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut b = vec![0u8; buf];
            while let Ok(n @ 1..) = s.read(&mut b) {
                if s.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// Fails loudly: the raw loop has no error handling to speak of.
fn check(r: libc::c_int, what: &str) -> libc::c_int {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r
}

/// `epoll_ctl(op)` of `fd` for `events`, with the fd as the event's data.
fn epoll_ctl(ep: libc::c_int, op: libc::c_int, fd: libc::c_int, events: u32) {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `ev` is a valid epoll_event for the call's duration.
    check(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }, "epoll_ctl");
}

/// The floor: what echoing costs with no runtime at all. Level-triggered,
/// so each readable event is one `read`, each message one `write`; a write
/// that does not complete (never, for small messages) parks the rest and
/// waits for `EPOLLOUT` before reading that connection again.
fn serve_raw(l: TcpListener, buf: usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    l.set_nonblocking(true).expect("non-blocking listener");
    let lfd = l.as_raw_fd();
    // SAFETY: plain syscall; the new fd is owned below.
    let ep = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    );
    // SAFETY: `ep` is a fresh fd nothing else owns.
    let _ep_owner = unsafe { OwnedFd::from_raw_fd(ep) };
    epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32);
    // Unsent bytes per connection fd.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut b = vec![0u8; buf];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: `events` has room for `len` entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as libc::c_int;
            if fd == lfd {
                loop {
                    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                    // SAFETY: no address wanted (null pointers are allowed).
                    let c = unsafe {
                        libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), flags)
                    };
                    if c < 0 {
                        break;
                    }
                    let one: libc::c_int = 1;
                    // SAFETY: `one` is a valid c_int option value.
                    unsafe {
                        libc::setsockopt(
                            c,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    if pending.len() <= c as usize {
                        pending.resize_with(c as usize + 1, Vec::new);
                    }
                    epoll_ctl(ep, libc::EPOLL_CTL_ADD, c, libc::EPOLLIN as u32);
                }
                continue;
            }
            let out = &mut pending[fd as usize];
            let (data, reading) = if out.is_empty() {
                // SAFETY: `b` is valid for `b.len()` bytes of writes.
                let r = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
                if r <= 0 {
                    let eagain = r < 0
                        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
                    if !eagain {
                        // SAFETY: our connection fd; closing removes it from the set.
                        unsafe { libc::close(fd) };
                    }
                    continue;
                }
                (&b[..r as usize], true)
            } else {
                (&out[..], false)
            };
            // SAFETY: `data` is valid for `data.len()` bytes of reads.
            let w = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            let sent = if w < 0 { 0 } else { w as usize };
            if w < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
                out.clear();
                // SAFETY: as above.
                unsafe { libc::close(fd) };
                continue;
            }
            if sent == data.len() {
                if !reading {
                    out.clear();
                    epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32);
                }
                continue;
            }
            *out = data[sent..].to_vec();
            if reading {
                epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLOUT as u32);
            }
        }
    }
}
