//! pipe() / Connection: multiprocessing.Pipe between processes.

mod util;

use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moss::pool::{Connection, ProcessEvent, pipe};
use serde::{Deserialize, Serialize};

use util::{Reap, start};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Msg {
    Hello(String),
    Numbers(Vec<i64>),
    Stop,
}

#[test]
fn both_ends_send_and_receive_in_one_process() {
    let (a, b) = pipe::<Msg>().unwrap();
    a.send(&Msg::Hello("from a".into())).unwrap();
    b.send(&Msg::Numbers(vec![1, -2, 3])).unwrap();
    assert_eq!(b.recv().unwrap(), Msg::Hello("from a".into()));
    assert_eq!(a.recv().unwrap(), Msg::Numbers(vec![1, -2, 3]));
    // Unit-like messages have an empty body.
    let (c, d) = pipe::<()>().unwrap();
    c.send(&()).unwrap();
    d.recv().unwrap();
}

#[test]
fn a_child_answers_every_message_in_order() {
    let _wd = util::watchdog("echo child", Duration::from_secs(60));
    let (parent, child) = pipe::<Msg>().unwrap();
    let p = start(move || {
        loop {
            match child.recv().unwrap() {
                Msg::Stop => break,
                Msg::Numbers(v) => child
                    .send(&Msg::Numbers(v.iter().map(|x| x * 2).collect()))
                    .unwrap(),
                m => child.send(&m).unwrap(),
            }
        }
    });
    for i in 0..1000i64 {
        parent.send(&Msg::Numbers(vec![i, i + 1])).unwrap();
        assert_eq!(parent.recv().unwrap(), Msg::Numbers(vec![2 * i, 2 * i + 2]));
    }
    parent.send(&Msg::Stop).unwrap();
    assert_eq!(p.0.join().unwrap(), 0);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_16_mib_message_each_way_between_processes() {
    let _wd = util::watchdog("huge payloads", Duration::from_secs(240));
    const LEN: usize = 16 << 20;
    let (parent, child) = pipe::<Vec<u8>>().unwrap();
    let p = start(move || {
        let got = child.recv().unwrap();
        assert!(got == pattern(LEN, 1), "the child got a different payload");
        child.send(&pattern(LEN, 2)).unwrap();
    });
    // Sending and receiving at once from two coroutines of this hub: the
    // message is far larger than the socket buffer.
    let tx = Rc::new(parent);
    let t2 = tx.clone();
    let sender = moss::spawn(move || t2.send(&pattern(LEN, 1)).unwrap());
    let back = tx.recv().unwrap();
    sender.join().unwrap();
    assert_eq!(back.len(), LEN);
    assert!(back == pattern(LEN, 2));
    assert_eq!(p.0.join().unwrap(), 0);
}

#[test]
fn recv_timeout_and_poll() {
    let (a, b) = pipe::<u32>().unwrap();
    let t = Instant::now();
    let e = b.recv_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        b.recv_timeout(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert!(!b.poll(Duration::ZERO));
    assert!(!b.poll(Duration::from_millis(20)));
    a.send(&7).unwrap();
    assert!(b.poll(Duration::ZERO));
    assert!(b.poll(Duration::from_secs(1)));
    assert_eq!(b.recv_timeout(Duration::ZERO).unwrap(), 7);
    // poll waits for a message sent later, from another coroutine.
    let a = Rc::new(a);
    let a2 = a.clone();
    let h = moss::spawn(move || {
        moss::sleep(Duration::from_millis(30));
        a2.send(&8).unwrap();
    });
    assert!(b.poll(Duration::from_secs(30)));
    assert_eq!(b.recv().unwrap(), 8);
    h.join().unwrap();
}

#[test]
fn a_dropped_end_is_end_of_file_and_a_broken_pipe() {
    let (a, b) = pipe::<u32>().unwrap();
    a.send(&1).unwrap();
    drop(a);
    assert_eq!(b.recv().unwrap(), 1, "what was sent before still arrives");
    assert!(b.poll(Duration::ZERO), "end of file polls ready");
    let e = b.recv().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    assert_eq!(b.send(&2).unwrap_err().kind(), ErrorKind::BrokenPipe);
}

#[test]
fn a_child_that_exits_closes_its_end() {
    // Isolated: a child forked by another test would hold our end open.
    util::isolated(
        "a_child_that_exits_closes_its_end",
        Duration::from_secs(60),
        || {
            let (parent, child) = pipe::<u32>().unwrap();
            let p = start(move || child.send(&5).unwrap());
            assert_eq!(parent.recv().unwrap(), 5);
            let e = parent.recv().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
            assert_eq!(p.0.join().unwrap(), 0);
        },
    );
}

#[test]
fn a_waiting_recv_killed_or_timed_out_loses_nothing() {
    let (a, b) = pipe::<String>().unwrap();
    let b = Rc::new(b);
    let b2 = b.clone();
    let waiter = moss::spawn(move || b2.recv());
    util::until_parked(waiter.id());
    waiter.kill();
    assert!(waiter.join().unwrap_err().is_killed());
    assert!(moss::timeout(Duration::from_millis(20), || b.recv()).is_err());
    a.send(&"intact".to_string()).unwrap();
    assert_eq!(b.recv().unwrap(), "intact");
}

fn signal(p: &Reap, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
    // unreaped child.
    assert_eq!(unsafe { libc::kill(p.0.pid() as i32, sig) }, 0);
}

/// A child sending `first` then `then` on `a`, stopped (SIGSTOP) once the
/// first part of `first` is in the socket: the receiver will be in the
/// middle of `first` until the child is continued.
fn stalled_sender(
    a: Connection<Vec<u8>>,
    b: &Connection<Vec<u8>>,
    first: Vec<u8>,
    then: Vec<u8>,
) -> Reap {
    let p = start(move || {
        a.send(&first).unwrap();
        a.send(&then).unwrap();
    });
    util::until("the first bytes", Duration::from_secs(60), || {
        b.poll(Duration::ZERO)
    });
    signal(&p, libc::SIGSTOP);
    p
}

#[test]
fn a_recv_killed_in_the_middle_of_a_message_keeps_it_for_the_next_recv() {
    let _wd = util::watchdog("kill mid-recv", Duration::from_secs(120));
    const LEN: usize = 8 << 20;
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    let b = Rc::new(b);
    let p = stalled_sender(a, &b, pattern(LEN, 9), pattern(10, 10));
    let b2 = b.clone();
    let receiver = moss::spawn(move || b2.recv());
    util::until_parked(receiver.id()); // it has read what was there: mid-message
    assert!(!b.poll(Duration::ZERO));
    receiver.kill();
    assert!(
        receiver.join().unwrap_err().is_killed(),
        "the kill lands at once"
    );
    signal(&p, libc::SIGCONT);
    let first = b.recv().unwrap();
    assert_eq!(first.len(), LEN);
    assert!(first == pattern(LEN, 9), "the rescued message is whole");
    assert_eq!(b.recv().unwrap(), pattern(10, 10));
    assert_eq!(p.0.join().unwrap(), 0);
}

#[test]
fn a_sender_killed_in_the_middle_of_a_message_is_an_error_for_the_reader() {
    let _wd = util::watchdog("sender dies mid-message", Duration::from_secs(120));
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    let b = Rc::new(b);
    let p = stalled_sender(a, &b, pattern(8 << 20, 1), pattern(1, 1));
    let b2 = b.clone();
    let receiver = moss::spawn(move || b2.recv());
    util::until_parked(receiver.id());
    p.0.kill().unwrap();
    p.0.join().unwrap();
    // End of file in the middle (or, if another process still holds the
    // sending end, the dead sender noticed within a slice): an error.
    let e = receiver.join().unwrap().unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe),
        "{e}"
    );
    // The direction is unusable from now on, for everyone.
    assert_eq!(b.recv().unwrap_err().kind(), ErrorKind::BrokenPipe);
}

/// Bytes process `pid` has read with read(2) and friends (`/proc/PID/io`).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_reader_killed_in_the_middle_of_a_message_is_an_error_for_the_sender() {
    let _wd = util::watchdog("reader dies mid-message", Duration::from_secs(120));
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    // The parent keeps the reading end open too: the sender cannot learn
    // of the death from a closed socket, only from the dead reader.
    let b = Arc::new(b);
    let reading = Arc::new(ProcessEvent::new().unwrap());
    let (r2, b2) = (reading.clone(), b.clone());
    let p = start(move || {
        r2.set();
        let _ = b2.recv();
    });
    assert!(reading.wait_timeout(Duration::from_secs(30)));
    let before = bytes_read(p.0.pid());
    let a = Rc::new(a);
    let a2 = a.clone();
    let sender = moss::spawn(move || a2.send(&pattern(32 << 20, 5)));
    util::until_parked(sender.id()); // the socket is full
    // Without running the hub (so the sender writes no more), wait for the
    // child to take some of what is there: it is then in the middle.
    let t = Instant::now();
    while bytes_read(p.0.pid()) < before + 64 * 1024 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the child never read"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    p.0.kill().unwrap();
    p.0.join().unwrap();
    let e = sender.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
    assert_eq!(a.send(&vec![1]).unwrap_err().kind(), ErrorKind::BrokenPipe);
}

#[test]
fn a_send_killed_in_the_middle_of_a_message_still_delivers_it() {
    let _wd = util::watchdog("kill mid-send", Duration::from_secs(120));
    const LEN: usize = 8 << 20;
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    let a = Rc::new(a);
    let a2 = a.clone();
    let sender = moss::spawn(move || a2.send(&pattern(LEN, 3)));
    util::until_parked(sender.id()); // the socket buffer is full: mid-message
    sender.kill();
    assert!(
        sender.join().unwrap_err().is_killed(),
        "the kill lands at once"
    );
    // A second send waits for the first message to be finished (by the
    // coroutine it was handed to), which needs a reader: this thread.
    let a3 = a.clone();
    let second = moss::spawn(move || a3.send(&pattern(5, 4)));
    let got = b.recv().unwrap();
    assert!(
        got == pattern(LEN, 3),
        "the killed send's message arrives whole"
    );
    assert_eq!(b.recv().unwrap(), pattern(5, 4));
    second.join().unwrap().unwrap();
}

#[test]
fn many_coroutines_and_processes_sending_on_one_end_never_interleave() {
    let _wd = util::watchdog("many senders", Duration::from_secs(240));
    let (a, b) = pipe::<(u32, u32, Vec<u8>)>().unwrap();
    let a = Arc::new(a);
    // Two children and four coroutines of this process send on `a` at once,
    // messages larger than the socket buffer among them.
    let children: Vec<Reap> = (0..2u32)
        .map(|c| {
            let a = a.clone();
            start(move || {
                for i in 0..20u32 {
                    let len = if i % 5 == 0 { 300_000 } else { 100 };
                    a.send(&(c, i, pattern(len, i as u8))).unwrap();
                }
            })
        })
        .collect();
    let hs: Vec<_> = (2..6u32)
        .map(|c| {
            let a = a.clone();
            moss::spawn(move || {
                for i in 0..20u32 {
                    let len = if i % 4 == 0 { 400_000 } else { 50 };
                    a.send(&(c, i, pattern(len, i as u8))).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 6];
    for _ in 0..6 * 20 {
        let (c, i, data) = b.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(i, next[c as usize], "sender {c} out of order");
        assert!(
            data == pattern(data.len(), i as u8),
            "a message was mixed with another"
        );
        next[c as usize] += 1;
    }
    moss::join_all(hs).into_iter().for_each(|r| r.unwrap());
    for c in &children {
        assert_eq!(c.0.join().unwrap(), 0);
    }
}

#[test]
fn bad_messages_are_errors_not_panics() {
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    impl<'de> Deserialize<'de> for Unserializable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom("refused"))
        }
    }
    let (a, b): (Connection<Unserializable>, _) = pipe().unwrap();
    let e = a.send(&Unserializable).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("cannot serialize the message"),
        "{e}"
    );
    drop(b);

    // A message that does not decode as T is consumed; the next one works.
    let (a, b) = pipe::<Even>().unwrap();
    a.send(&Even(3)).unwrap();
    a.send(&Even(4)).unwrap();
    let e = b.recv().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(
        e.to_string().contains("cannot deserialize the message"),
        "{e}"
    );
    assert_eq!(b.recv().unwrap(), Even(4));
}

/// Serializes any number, deserializes only even ones.
#[derive(Serialize, Debug, PartialEq)]
struct Even(u32);

impl<'de> Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 0 {
            Ok(Even(n))
        } else {
            Err(serde::de::Error::custom("odd"))
        }
    }
}
