//! The length-prefixed frames of the process protocols: `[len: u32 LE][body]`.
//!
//! [`ProcessPool`](super::ProcessPool) requests and replies and
//! [`ProcessQueue`](super::ProcessQueue) items all travel as frames. The
//! length is a `u32`, so a body of 4 GiB or more cannot be framed: [`encode`]
//! refuses it with `InvalidInput` instead of writing a wrapped length that
//! would desynchronise the stream. Writers build a frame in one buffer
//! (header reserved first, body serialized after it, no copy); readers use
//! [`FrameBuf`] (bulk reads, several frames per read) or [`body_len`] on a
//! header they read themselves.

use std::io;
use std::os::fd::RawFd;

use crate::sys::fd;

/// Bytes of a frame header.
pub(crate) const HEADER: usize = 4;

/// The largest body a frame can carry.
pub(crate) const MAX_BODY: usize = u32::MAX as usize;

/// A buffer whose first [`HEADER`] bytes are reserved for the header, for
/// the caller to append the body to (e.g. with `postcard::to_extend`).
pub(crate) fn start() -> Vec<u8> {
    vec![0; HEADER]
}

/// Writes the header of a buffer made by [`start`] and filled with a body:
/// the frame is then complete. Fails with `InvalidInput` naming `what` if
/// the body is 4 GiB or larger.
pub(crate) fn finish(frame: &mut [u8], what: &str) -> io::Result<()> {
    let body = frame.len() - HEADER;
    frame[..HEADER].copy_from_slice(&encode(body, what)?);
    Ok(())
}

/// The header for a body of `len` bytes; `InvalidInput` naming `what` if
/// `len` does not fit the `u32` length.
pub(crate) fn encode(len: usize, what: &str) -> io::Result<[u8; HEADER]> {
    match u32::try_from(len) {
        Ok(l) => Ok(l.to_le_bytes()),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} of {len} bytes exceeds the {MAX_BODY}-byte frame limit (4 GiB)"),
        )),
    }
}

/// The body length a header announces.
pub(crate) fn body_len(header: [u8; HEADER]) -> usize {
    u32::from_le_bytes(header) as usize
}

/// A receive buffer for frames: `buf[start..end]` is received and unread.
/// Allocated once; grows only for a frame larger than it (zeroing a fresh
/// buffer per read would cost more than the read).
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
        (self.end - self.start >= HEADER).then(|| {
            body_len(
                self.buf[self.start..self.start + HEADER]
                    .try_into()
                    .expect("HEADER bytes"),
            )
        })
    }

    /// The body range of the next complete frame, consumed.
    pub(crate) fn frame(&mut self) -> Option<std::ops::Range<usize>> {
        let len = self.next_len()?;
        if self.end - self.start < HEADER + len {
            return None;
        }
        let body = self.start + HEADER..self.start + HEADER + len;
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
        let need = self.next_len().map_or(HEADER, |l| HEADER + l);
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
        let n = fd::read(fd, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn encode_refuses_bodies_of_4_gib_and_more() {
        assert_eq!(encode(0, "x").unwrap(), [0, 0, 0, 0]);
        assert_eq!(body_len(encode(MAX_BODY, "x").unwrap()), MAX_BODY);
        let e = encode(MAX_BODY + 1, "an item").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("an item of 4294967296 bytes"), "{e}");
        let mut f = start();
        f.extend_from_slice(b"body");
        finish(&mut f, "x").unwrap();
        assert_eq!(f, b"\x04\0\0\0body");
    }

    /// Many complete frames buffered at once (more than the initial buffer)
    /// must never make `fill` return 0 while the writer is alive.
    #[test]
    fn frame_buf_reads_many_buffered_frames_without_false_eof() {
        let (r, w) = fd::pipe(true).unwrap();
        let _ = fd::set_pipe_size(w.as_raw_fd(), 1 << 20);
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let body = vec![i as u8; 5000 + i as usize * 37];
            let mut f = start();
            f.extend_from_slice(&body);
            finish(&mut f, "test frame").unwrap();
            let mut off = 0;
            while off < f.len() {
                off += fd::write(w.as_raw_fd(), &f[off..], false).unwrap();
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
