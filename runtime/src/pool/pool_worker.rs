//! The worker side of a [`ProcessPool`](super::ProcessPool): the loop a
//! forked worker runs, and the frame buffer both sides read with.
//!
//! A worker reads requests (`[len: u32 LE][trampoline: u64][function: u64]
//! [postcard arguments]`) from the blocking child end of its socket pair,
//! reading ahead in bulk, runs each in order and writes its reply
//! (`[len][status: u8][postcard result or message]`) as soon as the task
//! returns, so the manager always knows which task a dying worker was
//! running. A request shorter than 16 bytes (the manager sends an empty
//! one) or EOF makes it `_exit(0)`.

use std::io;
use std::os::fd::RawFd;

use super::process_pool::Trampoline;
use crate::sys::fork;

/// A receive buffer for `[len: u32][body]` frames: `buf[start..end]` is
/// received and unread. Allocated once; grows only for a frame larger than
/// it (zeroing a fresh buffer per read would cost more than the read).
pub(crate) struct FrameBuf {
    pub(crate) buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameBuf {
    pub(crate) fn new() -> FrameBuf {
        FrameBuf {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// The length of the next frame's body, if its header is buffered.
    pub(crate) fn next_len(&self) -> Option<usize> {
        (self.end - self.start >= 4).then(|| {
            u32::from_le_bytes(
                self.buf[self.start..self.start + 4]
                    .try_into()
                    .expect("4 bytes"),
            ) as usize
        })
    }

    /// The body range of the next complete frame, consumed.
    pub(crate) fn frame(&mut self) -> Option<std::ops::Range<usize>> {
        let len = self.next_len()?;
        if self.end - self.start < 4 + len {
            return None;
        }
        let body = self.start + 4..self.start + 4 + len;
        self.start = body.end;
        Some(body)
    }

    /// One `read` into free space (made by compacting or growing); 0 only
    /// at EOF.
    pub(crate) fn fill(&mut self, fd: RawFd) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let need = self.next_len().map_or(4, |l| 4 + l);
        if self.buf.len() - self.start < need.max(4096) || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Room for the pending frame, and never an empty read buffer (a
        // zero-length read would look like EOF).
        let want = (self.start + need).max(self.end + 4096);
        if self.buf.len() < want {
            self.buf.resize(want.max(2 * self.buf.len()), 0);
        }
        let n = fork::read(fd, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

/// The loop of a worker process: requests in, replies out, on the blocking
/// child end of its socket pair. Requests are read ahead in bulk (several
/// may be queued); each reply is written as soon as its task returns, so
/// the manager always knows which task a dying worker was running. Never
/// returns.
pub(crate) fn worker_main(sock: RawFd) -> ! {
    let mut inbuf = FrameBuf::new();
    let mut frame = Vec::new();
    loop {
        let body = loop {
            if inbuf.next_len().is_some_and(|l| l < 16) {
                fork::exit_now(0); // an exit request (or garbage)
            }
            if let Some(b) = inbuf.frame() {
                break b;
            }
            if !matches!(inbuf.fill(sock), Ok(n) if n > 0) {
                fork::exit_now(0);
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
        frame.clear();
        frame.extend_from_slice(&(reply.len() as u32).to_le_bytes());
        frame.extend_from_slice(&reply);
        if !write_all(sock, &frame) {
            fork::exit_now(0);
        }
    }
}

fn write_all(fd: RawFd, buf: &[u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match fork::write(fd, &buf[done..], true) {
            Ok(0) | Err(_) => return false,
            Ok(n) => done += n,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// Many complete frames buffered at once (more than the initial buffer)
    /// must never make `fill` return 0 while the writer is alive.
    #[test]
    fn frame_buf_reads_many_buffered_frames_without_false_eof() {
        let (r, w) = fork::pipe(true).unwrap();
        let _ = fork::set_pipe_size(w.as_raw_fd(), 1 << 20);
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let body = vec![i as u8; 5000 + i as usize * 37];
            let mut f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&body);
            let mut off = 0;
            while off < f.len() {
                off += fork::write(w.as_raw_fd(), &f[off..], false).unwrap();
            }
            sent.push(body);
        }
        let mut fb = FrameBuf::new();
        loop {
            match fb.fill(r.as_raw_fd()) {
                Ok(n) => assert!(n > 0, "false EOF with {} bytes buffered", fb.end - fb.start),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut got = Vec::new();
        while let Some(b) = fb.frame() {
            got.push(fb.buf[b].to_vec());
        }
        assert_eq!(got, sent);
    }
}
