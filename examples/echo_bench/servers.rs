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
    /// moss after `monkey::patch_all()`: the plain std::net code of `Std`,
    /// one coroutine per connection on one hub instead of one thread.
    Monkey,
    /// tokio current-thread runtime: one task per connection.
    Tokio,
    /// std: one OS thread per connection, blocking I/O.
    Std,
}

impl Kind {
    /// Every kind, in table order (moss first: the ratios are against it).
    pub const ALL: &'static [Kind] = &[Kind::Moss, Kind::Monkey, Kind::Tokio, Kind::Std];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Moss => "moss",
            Kind::Monkey => "moss (patched std::net)",
            Kind::Tokio => "tokio-current-thread",
            Kind::Std => "std-thread-per-conn",
        }
    }

    /// The short name used on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Moss => "moss",
            Kind::Monkey => "monkey",
            Kind::Tokio => "tokio",
            Kind::Std => "std",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.key() == s)
    }

    /// Serves `l` forever (the caller exits the process to stop).
    pub fn serve(self, l: TcpListener, buf: usize) {
        match self {
            Kind::Moss => serve_moss(l, buf),
            Kind::Monkey => serve_monkey(l, buf),
            Kind::Tokio => serve_tokio(l, buf),
            Kind::Std => serve_std(l, buf),
        }
    }
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
