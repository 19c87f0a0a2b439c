//! RESP2, the Redis protocol: a resumable request parser and the reply
//! encoders.
//!
//! A request is either a multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what
//! client libraries send) or an inline command (`PING\r\n`, what a person
//! types and what `redis-benchmark`'s PING_INLINE sends).
//!
//! The parser works on the connection's read buffer from the first byte of
//! the pending command. Arguments are ranges into that buffer (no copy),
//! except for inline commands, whose quoting may rewrite bytes: those land
//! in a scratch buffer. A partial command keeps the arguments parsed so far,
//! so a big pipeline or a value arriving in many reads is scanned once.
//!
//! Limits, each checked before anything is allocated for it: a multibulk of
//! at most [`MAX_ARGS`] arguments, a bulk of at most the configured
//! `max_bulk` bytes, and header or inline lines of at most [`MAX_LINE`]
//! bytes. Breaking one is a protocol error: Redis's message, then the
//! connection closes (the stream cannot be resynchronised).

use std::fmt;

/// Longest inline command or `*N` / `$N` line (Redis's PROTO_INLINE_MAX_SIZE).
pub const MAX_LINE: usize = 64 * 1024;
/// Most arguments in one multibulk (Redis accepts up to INT_MAX, but grows
/// its argument array as they arrive; so do we, from a smaller bound).
pub const MAX_ARGS: usize = 1024 * 1024;

/// A request the parser cannot make sense of. The message is Redis's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// What one call to [`Parser::parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command of this many bytes; its arguments are in the parser.
    Command(usize),
    /// An empty command (an empty inline line, `*0`, `*-1`) of this many
    /// bytes: Redis skips it without a reply.
    Empty(usize),
    /// More bytes are needed: the command needs a buffer of at least this
    /// many bytes to make progress.
    Incomplete(usize),
}

/// Where the arguments of the last command live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Buffer,
    Scratch,
}

/// The resumable RESP2 request parser of one connection.
pub struct Parser {
    max_bulk: usize,
    /// `(start, end)` of each argument, in the buffer or in `scratch`.
    ranges: Vec<(usize, usize)>,
    source: Source,
    scratch: Vec<u8>,
    /// The multibulk being parsed: its argument count, and the offset of
    /// the next unparsed byte. `None` between commands.
    multibulk: Option<(usize, usize)>,
}

/// The arguments of one parsed command.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    src: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Argument `i` (0 is the command name).
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (s, e) = self.ranges[i];
        &self.src[s..e]
    }

    /// Arguments `from..`.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = &'a [u8]> + 'a {
        let src = self.src;
        self.ranges[from..].iter().map(move |&(s, e)| &src[s..e])
    }
}

impl Parser {
    pub fn new(max_bulk: usize) -> Parser {
        Parser {
            max_bulk,
            ranges: Vec::new(),
            source: Source::Buffer,
            scratch: Vec::new(),
            multibulk: None,
        }
    }

    /// Parses the command at the start of `buf`. After
    /// [`Parsed::Command`], [`args`](Self::args) gives its arguments (with
    /// the same `buf`) until the next call. After [`Parsed::Incomplete`],
    /// call again with the same bytes and more appended.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        if self.multibulk.is_none() {
            let Some(&first) = buf.first() else {
                return Ok(Parsed::Incomplete(1));
            };
            self.ranges.clear();
            if first != b'*' {
                return self.inline(buf);
            }
            let Some(lf) = find_lf(buf, 1) else {
                return if buf.len() > MAX_LINE {
                    Err(perr("too big mbulk count string"))
                } else {
                    Ok(Parsed::Incomplete(buf.len() + 1))
                };
            };
            let n = match line_number(buf, 1, lf) {
                Some(n) if n <= MAX_ARGS as i64 => n,
                _ => return Err(perr("invalid multibulk length")),
            };
            if n <= 0 {
                return Ok(Parsed::Empty(lf + 1));
            }
            self.source = Source::Buffer;
            self.ranges.reserve((n as usize).min(1024));
            self.multibulk = Some((n as usize, lf + 1));
        }
        let (argc, mut pos) = self.multibulk.expect("set above");
        while self.ranges.len() < argc {
            let Some(&b) = buf.get(pos) else {
                self.multibulk = Some((argc, pos));
                return Ok(Parsed::Incomplete(pos + 1));
            };
            if b != b'$' {
                self.multibulk = None;
                return Err(perr(format!("expected '$', got '{}'", b as char)));
            }
            let Some(lf) = find_lf(buf, pos + 1) else {
                self.multibulk = Some((argc, pos));
                return if buf.len() - pos > MAX_LINE {
                    self.multibulk = None;
                    Err(perr("too big bulk count string"))
                } else {
                    Ok(Parsed::Incomplete(buf.len() + 1))
                };
            };
            let len = match line_number(buf, pos + 1, lf) {
                Some(n) if n >= 0 && n as u64 <= self.max_bulk as u64 => n as usize,
                _ => {
                    self.multibulk = None;
                    return Err(perr("invalid bulk length"));
                }
            };
            let start = lf + 1;
            let end = start + len;
            if buf.len() < end + 2 {
                self.multibulk = Some((argc, pos));
                return Ok(Parsed::Incomplete(end + 2));
            }
            if &buf[end..end + 2] != b"\r\n" {
                self.multibulk = None;
                return Err(perr("expected CRLF after a bulk string"));
            }
            self.ranges.push((start, end));
            pos = end + 2;
        }
        self.multibulk = None;
        Ok(Parsed::Command(pos))
    }

    /// The arguments of the command the last [`parse`](Self::parse) found
    /// at the start of `buf`.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Args<'a> {
        let src = match self.source {
            Source::Buffer => buf,
            Source::Scratch => &self.scratch,
        };
        Args {
            src,
            ranges: &self.ranges,
        }
    }

    /// An inline command: one line, split like `redis-cli` input (spaces
    /// separate arguments; double quotes with `\n`, `\xHH`... escapes and
    /// single quotes group them).
    fn inline(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(nl) = buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') else {
            return if buf.len() > MAX_LINE {
                Err(perr("too big inline request"))
            } else {
                Ok(Parsed::Incomplete(buf.len() + 1))
            };
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.scratch.clear();
        self.source = Source::Scratch;
        split_args(line, &mut self.scratch, &mut self.ranges)
            .ok_or_else(|| perr("unbalanced quotes in request"))?;
        if self.ranges.is_empty() {
            Ok(Parsed::Empty(nl + 1))
        } else {
            Ok(Parsed::Command(nl + 1))
        }
    }
}

/// The offset of the first `\n` at or after `from`, looking no further
/// than [`MAX_LINE`] bytes.
fn find_lf(buf: &[u8], from: usize) -> Option<usize> {
    let end = buf.len().min(from.saturating_add(MAX_LINE));
    let i = buf.get(from..end)?.iter().position(|&b| b == b'\n')?;
    Some(from + i)
}

/// The number on a `*N` / `$N` line: the bytes before the `\n` at `lf`,
/// which must end in `\r`.
fn line_number(buf: &[u8], from: usize, lf: usize) -> Option<i64> {
    parse_i64(buf[from..lf].strip_suffix(b"\r")?)
}

/// A decimal `i64` as Redis's `string2ll` reads it: an optional `-`, no `+`,
/// no spaces, no leading zeros, nothing else; `None` on overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    if neg {
        if v <= i64::MAX as u64 + 1 {
            Some((v as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Splits an inline line into arguments the way Redis's `sdssplitargs`
/// does. Writes the bytes to `out` and their ranges to `ranges`; `None` on
/// unbalanced quotes (or a closing quote not followed by a space).
///
/// `sdssplitargs` reads a C string, so a NUL byte ends the line there.
fn split_args(line: &[u8], out: &mut Vec<u8>, ranges: &mut Vec<(usize, usize)>) -> Option<()> {
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    // C's isspace.
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let mut i = 0;
    loop {
        while i < line.len() && space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(());
        }
        let start = out.len();
        let (mut dq, mut sq) = (false, false);
        loop {
            let Some(&c) = line.get(i) else {
                if dq || sq {
                    return None;
                }
                break;
            };
            if dq {
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3]))
                {
                    out.push(h * 16 + l);
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    out.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must end the argument.
                    if line.get(i + 1).is_some_and(|&b| !space(b)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                }
            } else if sq {
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    i += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&b| !space(b)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                }
            } else {
                match c {
                    // Each of these is a space, skipped by the loop above.
                    b' ' | b'\n' | b'\r' | b'\t' => break,
                    b'"' => dq = true,
                    b'\'' => sq = true,
                    _ => out.push(c),
                }
            }
            i += 1;
        }
        ranges.push((start, out.len()));
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

// ------------------------------------------------------------------ replies

/// `+s\r\n`
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-msg\r\n`, with any CR or LF in `msg` turned into a space (as Redis
/// does), so a reply can never break the framing.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_i64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_i64(out, b.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The null bulk string, `$-1\r\n`.
pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*n\r\n`, the header of an array of `n` replies.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_i64(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
pub fn push_i64(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(p: &Parser, buf: &[u8]) -> Vec<Vec<u8>> {
        let a = p.args(buf);
        (0..a.len()).map(|i| a.get(i).to_vec()).collect()
    }

    #[test]
    fn multibulk_in_every_split() {
        let msg = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        for cut in 0..msg.len() {
            let mut p = Parser::new(1 << 20);
            assert!(matches!(p.parse(&msg[..cut]), Ok(Parsed::Incomplete(n)) if n > cut));
            assert_eq!(p.parse(msg), Ok(Parsed::Command(msg.len())));
            assert_eq!(args(&p, msg), [&b"SET"[..], b"k", b"hello"]);
        }
    }

    #[test]
    fn limits_and_errors() {
        let mut p = Parser::new(512);
        let e = |p: &mut Parser, b: &[u8]| p.parse(b).unwrap_err().to_string();
        assert_eq!(
            e(&mut p, b"*1\r\n$1000000000000\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n$513\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n$-1\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(&mut p, b"*99999999999\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            e(&mut p, b"*x\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n+x\r\n"),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n$1\r\nabc"),
            "Protocol error: expected CRLF after a bulk string"
        );
        assert_eq!(
            e(&mut p, b"SET \"a\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            e(&mut p, &vec![b'a'; MAX_LINE + 2]),
            "Protocol error: too big inline request"
        );
        let mut long = b"*".to_vec();
        long.extend(vec![b'1'; MAX_LINE + 2]);
        assert_eq!(
            e(&mut p, &long),
            "Protocol error: too big mbulk count string"
        );
        assert_eq!(p.parse(b"*0\r\n"), Ok(Parsed::Empty(4)));
        assert_eq!(p.parse(b"*-1\r\n"), Ok(Parsed::Empty(5)));
    }

    #[test]
    fn inline_quoting() {
        let mut p = Parser::new(512);
        let b = b"set  \"a b\\x41\\n\" 'it\\'s'\r\nrest";
        assert_eq!(p.parse(b), Ok(Parsed::Command(26)));
        assert_eq!(args(&p, b), [&b"set"[..], b"a bA\n", b"it's"]);
        assert_eq!(p.parse(b"   \r\n"), Ok(Parsed::Empty(5)));
        assert_eq!(p.parse(b"PING\n"), Ok(Parsed::Command(5)));
        assert!(p.parse(b"\"a\"b\r\n").is_err());
        // A NUL ends the line, as in C (it once looped forever here).
        assert_eq!(p.parse(b"SET a\0b c\r\n"), Ok(Parsed::Command(11)));
        assert_eq!(args(&p, b""), [&b"SET"[..], b"a"]);
        assert_eq!(p.parse(b"\0\r\n"), Ok(Parsed::Empty(3)));
    }

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut v = Vec::new();
        push_i64(&mut v, i64::MIN);
        assert_eq!(v, b"-9223372036854775808");
    }
}
