//! What every example service shares: `--port N --threads N` on the command
//! line, and one `SO_REUSEPORT` listener per hub thread on one port.
//!
//! `--port 0` asks the kernel for a free port once, on the first listener;
//! the other threads bind that same port, so all of them serve one address,
//! which is printed (`NAME: listening on 127.0.0.1:PORT, N thread(s)`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use moss::net::TcpListener;

/// Flags and their values, as given: `--name value` pairs only.
pub struct Args {
    prog: &'static str,
    usage: &'static str,
    pairs: Vec<(String, String)>,
}

impl Args {
    /// Parses `std::env::args()` as `--name value` pairs; `-h`/`--help`
    /// prints `usage` and exits.
    pub fn parse(prog: &'static str, usage: &'static str) -> Args {
        let mut pairs = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                println!("usage: {prog} {usage}");
                std::process::exit(0);
            }
            let Some(name) = a.strip_prefix("--") else {
                Args::fail(prog, usage, &format!("unexpected argument {a:?}"));
            };
            let Some(v) = it.next() else {
                Args::fail(prog, usage, &format!("--{name} needs a value"));
            };
            pairs.push((name.to_string(), v));
        }
        Args { prog, usage, pairs }
    }

    fn fail(prog: &str, usage: &str, msg: &str) -> ! {
        eprintln!("{prog}: {msg}\nusage: {prog} {usage}");
        std::process::exit(2)
    }

    /// The value of `--name` parsed as `T`, or `default`; exits on a bad value.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.pairs.iter().rev().find(|(n, _)| n == name) {
            None => default,
            Some((_, v)) => v.parse().unwrap_or_else(|_| {
                Args::fail(
                    self.prog,
                    self.usage,
                    &format!("bad value {v:?} for --{name}"),
                )
            }),
        }
    }

    /// Exits if a flag outside `known` was given.
    pub fn only(&self, known: &[&str]) {
        if let Some((n, _)) = self
            .pairs
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Args::fail(self.prog, self.usage, &format!("unknown flag --{n}"));
        }
    }
}

/// Listeners for `threads` hubs on `127.0.0.1:port`, all bound with
/// `SO_REUSEPORT` to one port (the kernel's choice when `port` is 0).
/// Each hub thread takes its own with [`Listeners::take`].
pub struct Listeners {
    addr: SocketAddr,
    first: Mutex<Option<TcpListener>>,
}

impl Listeners {
    pub fn bind(port: u16) -> std::io::Result<Listeners> {
        let first = TcpListener::bind_reuseport(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        Ok(Listeners {
            addr: first.local_addr()?,
            first: Mutex::new(Some(first)),
        })
    }

    /// The address every listener serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listener for the calling hub thread: the first caller gets the
    /// one bound in [`bind`](Self::bind), the others bind the same port.
    pub fn take(&self) -> std::io::Result<TcpListener> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match first {
            Some(l) => Ok(l),
            None => TcpListener::bind_reuseport(self.addr),
        }
    }
}
