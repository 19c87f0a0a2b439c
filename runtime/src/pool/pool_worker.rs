//! The worker side of a [`ProcessPool`](super::ProcessPool): the loop a
//! forked worker runs.
//!
//! A worker reads requests (`[len: u32 LE][trampoline: u64][function: u64]
//! [postcard arguments]`) from the blocking child end of its socket pair,
//! reading ahead in bulk, runs each in order and writes its reply
//! (`[len][status: u8][postcard result or message]`) as soon as the task
//! returns, so the manager always knows which task a dying worker was
//! running. A request shorter than 16 bytes (the manager sends an empty
//! one) or EOF makes it `_exit(0)`. A task that forks, with both processes
//! returning from it, is answered by the worker alone: the child leaves
//! with `_exit(0)` before touching the socket.
//!
//! With an initializer, the worker runs it first and reports on the socket
//! before reading any request: a `READY` frame, or `INIT_FAILED` with the
//! panic message, after which it exits. With `max_tasks_per_child`, it
//! exits after answering that many requests.

use std::os::fd::RawFd;

use std::panic::catch_unwind;

use super::PoolError;
use super::frame::FrameBuf;
use super::process_pool::{Config, REPLY_INIT_FAILED, REPLY_READY, Trampoline, out_with};
use crate::sys::fd;
use crate::sys::process;

/// The loop of a worker process: requests in, replies out, on the blocking
/// child end of its socket pair. Requests are read ahead in bulk (several
/// may be queued); each reply is written as soon as its task returns, so
/// the manager always knows which task a dying worker was running. Never
/// returns.
pub(crate) fn worker_main(sock: RawFd, config: Config) -> ! {
    let me = std::process::id();
    if let Some(init) = config.initializer {
        let report = match catch_unwind(init) {
            Ok(()) => out_with(REPLY_READY, b""),
            Err(p) => {
                let PoolError::Panicked { message } = PoolError::from_panic(&*p) else {
                    unreachable!("from_panic makes Panicked")
                };
                out_with(REPLY_INIT_FAILED, message.as_bytes())
            }
        };
        // A child the initializer forked, returning here, says nothing.
        if std::process::id() != me
            || !write_all(sock, &report)
            || report[super::frame::HEADER] != REPLY_READY
        {
            process::exit_now(0);
        }
    }
    let mut served = 0;
    let mut inbuf = FrameBuf::new();
    loop {
        let body = loop {
            if inbuf.next_len().is_some_and(|l| l < 16) {
                process::exit_now(0); // an exit request (or garbage)
            }
            if let Some(b) = inbuf.frame() {
                break b;
            }
            if !matches!(inbuf.fill(sock), Ok(n) if n > 0) {
                process::exit_now(0);
            }
        };
        let body = &inbuf.buf[body];
        let call = u64::from_le_bytes(body[..8].try_into().expect("8 bytes")) as usize;
        let f = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
        // SAFETY: `call` is a `Trampoline` fn pointer the pool's manager wrote
        // into this private socket, taken in the process this worker was
        // forked from: the same code at the same address.
        let call = unsafe { std::mem::transmute::<usize, Trampoline>(call) };
        let reply = call(f, &body[16..]);
        if std::process::id() != me {
            // The task forked and its child returned here too: only the
            // worker itself may answer on the socket.
            process::exit_now(0);
        }
        if !write_all(sock, &reply) {
            process::exit_now(0);
        }
        served += 1;
        if config.max_tasks_per_child == Some(served) {
            process::exit_now(0); // to be replaced
        }
    }
}

fn write_all(fd: RawFd, buf: &[u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match fd::write(fd, &buf[done..], true) {
            Ok(0) | Err(_) => return false,
            Ok(n) => done += n,
        }
    }
    true
}
