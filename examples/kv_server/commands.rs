//! The commands: argument checks and replies as Redis 7 gives them, over
//! the shared [`Store`].
//!
//! PING ECHO GET SET (EX PX NX XX KEEPTTL) DEL EXISTS INCR DECR INCRBY
//! DECRBY MGET MSET EXPIRE PEXPIRE (NX XX GT LT) TTL PTTL FLUSHALL DBSIZE
//! QUIT, and CONFIG GET for the two settings benchmark tools ask about.
//! Error texts are Redis's, byte for byte (the tests compare them with a
//! real redis-server where one is installed).

use std::time::{SystemTime, UNIX_EPOCH};

use super::resp::{self, Args, parse_i64};
use super::store::{ExpireCond, IncrError, SetOptions, Store, Ttl};

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Send the replies so far, then close (QUIT).
    Close,
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Runs one command, appending its reply to `out`.
pub fn execute(store: &Store, a: Args<'_>, out: &mut Vec<u8>) -> Next {
    let mut lower = [0u8; 16];
    let name = a.get(0);
    let cmd = match lower.get_mut(..name.len()) {
        Some(l) => {
            l.copy_from_slice(name);
            l.make_ascii_lowercase();
            &*l
        }
        None => b"",
    };
    let n = a.len();
    // (name, arity): Redis's convention, -k means "at least k".
    let arity_ok = |arity: isize| {
        if arity >= 0 {
            n == arity as usize
        } else {
            n >= arity.unsigned_abs()
        }
    };
    macro_rules! arity {
        ($name:literal, $arity:expr) => {
            if !arity_ok($arity) {
                resp::error(
                    out,
                    concat!("ERR wrong number of arguments for '", $name, "' command"),
                );
                return Next::Continue;
            }
        };
    }
    match cmd {
        b"get" => {
            arity!("get", 2);
            store.get_into(a.get(1), out);
        }
        b"set" => {
            arity!("set", -3);
            set(store, a, out);
        }
        b"ping" => {
            arity!("ping", -1);
            match n {
                1 => resp::simple(out, "PONG"),
                2 => resp::bulk(out, a.get(1)),
                _ => resp::error(out, "ERR wrong number of arguments for 'ping' command"),
            }
        }
        b"echo" => {
            arity!("echo", 2);
            resp::bulk(out, a.get(1));
        }
        b"del" => {
            arity!("del", -2);
            let k = a.iter_from(1).filter(|k| store.del(k)).count();
            resp::integer(out, k as i64);
        }
        b"exists" => {
            arity!("exists", -2);
            let k = a.iter_from(1).filter(|k| store.exists(k)).count();
            resp::integer(out, k as i64);
        }
        b"incr" => {
            arity!("incr", 2);
            incr(store, a.get(1), Ok(1), out);
        }
        b"decr" => {
            arity!("decr", 2);
            incr(store, a.get(1), Ok(-1), out);
        }
        b"incrby" => {
            arity!("incrby", 3);
            incr(store, a.get(1), parse_i64(a.get(2)).ok_or(NOT_INTEGER), out);
        }
        b"decrby" => {
            arity!("decrby", 3);
            let by = match parse_i64(a.get(2)) {
                None => Err(NOT_INTEGER),
                Some(i64::MIN) => Err("ERR decrement would overflow"),
                Some(v) => Ok(-v),
            };
            incr(store, a.get(1), by, out);
        }
        b"mget" => {
            arity!("mget", -2);
            resp::array(out, n - 1);
            for k in a.iter_from(1) {
                store.get_into(k, out);
            }
        }
        b"mset" => {
            arity!("mset", -3);
            if n.is_multiple_of(2) {
                resp::error(out, "ERR wrong number of arguments for 'mset' command");
                return Next::Continue;
            }
            for i in (1..n).step_by(2) {
                store.set(a.get(i), a.get(i + 1), SetOptions::default());
            }
            resp::simple(out, "OK");
        }
        b"expire" => {
            arity!("expire", -3);
            expire(store, a, 1000, "expire", out);
        }
        b"pexpire" => {
            arity!("pexpire", -3);
            expire(store, a, 1, "pexpire", out);
        }
        b"ttl" => {
            arity!("ttl", 2);
            let t = match store.ttl(a.get(1)) {
                Ttl::Missing => -2,
                Ttl::Persistent => -1,
                Ttl::Millis(ms) => (ms as i64 + 500) / 1000,
            };
            resp::integer(out, t);
        }
        b"pttl" => {
            arity!("pttl", 2);
            let t = match store.ttl(a.get(1)) {
                Ttl::Missing => -2,
                Ttl::Persistent => -1,
                Ttl::Millis(ms) => ms as i64,
            };
            resp::integer(out, t);
        }
        b"flushall" => {
            arity!("flushall", -1);
            let ok = match n {
                1 => true,
                2 => {
                    let m = a.get(1);
                    m.eq_ignore_ascii_case(b"sync") || m.eq_ignore_ascii_case(b"async")
                }
                _ => false,
            };
            if ok {
                store.flush();
                resp::simple(out, "OK");
            } else {
                resp::error(out, SYNTAX);
            }
        }
        b"dbsize" => {
            arity!("dbsize", 1);
            resp::integer(out, store.len() as i64);
        }
        b"quit" => {
            arity!("quit", -1);
            resp::simple(out, "OK");
            return Next::Close;
        }
        b"config" => {
            arity!("config", -2);
            config(a, out);
        }
        _ => unknown(a, out),
    }
    Next::Continue
}

/// `ERR unknown command 'NAME', with args beginning with: 'a' 'b' `, with
/// Redis's 128-byte truncations.
fn unknown(a: Args<'_>, out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown command '".to_vec();
    let name = a.get(0);
    msg.extend_from_slice(&name[..name.len().min(128)]);
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut listed = 0;
    for arg in a.iter_from(1) {
        if listed >= 128 {
            break;
        }
        let take = arg.len().min(128 - listed);
        let before = msg.len();
        msg.push(b'\'');
        msg.extend_from_slice(&arg[..take]);
        msg.extend_from_slice(b"' ");
        listed += msg.len() - before;
    }
    error_bytes(out, &msg);
}

/// [`resp::error`] for a message that may hold any bytes.
fn error_bytes(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(
        msg.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Unix time in ms: Redis checks `now + ttl` against `i64::MAX`, so the
/// same overflow errors need the same base.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn set(store: &Store, a: Args<'_>, out: &mut Vec<u8>) {
    let mut o = SetOptions::default();
    // (the argument, milliseconds per unit)
    let mut expire: Option<(&[u8], i64)> = None;
    let mut i = 3;
    while i < a.len() {
        let opt = a.get(i);
        let next = (i + 1 < a.len()).then(|| a.get(i + 1));
        let is = |s: &str| opt.eq_ignore_ascii_case(s.as_bytes());
        if is("nx") && !o.if_present {
            o.if_missing = true;
        } else if is("xx") && !o.if_missing {
            o.if_present = true;
        } else if is("keepttl") && expire.is_none() {
            o.keep_ttl = true;
        } else if (is("ex") || is("px")) && expire.is_none() && !o.keep_ttl && next.is_some() {
            expire = Some((next.expect("checked"), if is("ex") { 1000 } else { 1 }));
            i += 1;
        } else {
            resp::error(out, SYNTAX);
            return;
        }
        i += 1;
    }
    if let Some((arg, unit)) = expire {
        let Some(v) = parse_i64(arg) else {
            resp::error(out, NOT_INTEGER);
            return;
        };
        match v
            .checked_mul(unit)
            .filter(|&ms| ms > 0 && ms <= i64::MAX - unix_ms())
        {
            Some(ms) => o.ttl_ms = Some(ms as u64),
            None => {
                resp::error(out, "ERR invalid expire time in 'set' command");
                return;
            }
        }
    }
    if store.set(a.get(1), a.get(2), o) {
        resp::simple(out, "OK");
    } else {
        resp::nil(out);
    }
}

fn incr(store: &Store, key: &[u8], by: Result<i64, &str>, out: &mut Vec<u8>) {
    let by = match by {
        Ok(by) => by,
        Err(e) => return resp::error(out, e),
    };
    match store.incr(key, by) {
        Ok(v) => resp::integer(out, v),
        Err(IncrError::NotAnInteger) => resp::error(out, NOT_INTEGER),
        Err(IncrError::Overflow) => resp::error(out, "ERR increment or decrement would overflow"),
    }
}

/// EXPIRE / PEXPIRE key time [NX|XX|GT|LT ...]; `unit` ms per time unit.
fn expire(store: &Store, a: Args<'_>, unit: i64, name: &str, out: &mut Vec<u8>) {
    let mut c = ExpireCond::default();
    for opt in a.iter_from(3) {
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => c.nx = true,
            b"xx" => c.xx = true,
            b"gt" => c.gt = true,
            b"lt" => c.lt = true,
            _ => {
                let mut m = b"ERR Unsupported option ".to_vec();
                m.extend_from_slice(opt);
                return error_bytes(out, &m);
            }
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return resp::error(
            out,
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        );
    }
    if c.gt && c.lt {
        return resp::error(
            out,
            "ERR GT and LT options at the same time are not compatible",
        );
    }
    let Some(v) = parse_i64(a.get(2)) else {
        return resp::error(out, NOT_INTEGER);
    };
    let Some(ms) = v.checked_mul(unit).filter(|&ms| ms <= i64::MAX - unix_ms()) else {
        return resp::error(out, &format!("ERR invalid expire time in '{name}' command"));
    };
    let ms = (ms > 0).then_some(ms as u64);
    resp::integer(out, store.expire(a.get(1), ms, c) as i64);
}

/// CONFIG GET for `save` and `appendonly` (nothing is persisted), which
/// redis-benchmark asks about; other parameters match nothing.
fn config(a: Args<'_>, out: &mut Vec<u8>) {
    let sub = a.get(1);
    if !sub.eq_ignore_ascii_case(b"get") {
        let mut m = b"ERR unknown subcommand '".to_vec();
        m.extend_from_slice(&sub[..sub.len().min(128)]);
        m.extend_from_slice(b"'. Try CONFIG HELP.");
        return error_bytes(out, &m);
    }
    if a.len() < 3 {
        return resp::error(
            out,
            "ERR wrong number of arguments for 'config|get' command",
        );
    }
    let mut pairs: Vec<(&str, &[u8])> = Vec::new();
    for p in a.iter_from(2) {
        for (name, value) in [("save", &b""[..]), ("appendonly", b"no")] {
            if p.eq_ignore_ascii_case(name.as_bytes()) && !pairs.iter().any(|(n, _)| *n == name) {
                pairs.push((name, value));
            }
        }
    }
    resp::array(out, pairs.len() * 2);
    for (name, value) in pairs {
        resp::bulk(out, name.as_bytes());
        resp::bulk(out, value);
    }
}
