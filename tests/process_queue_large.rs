//! ProcessQueue with items larger than a pipe buffer, in a test binary of
//! its own: no other test of this process forks (and so inherits this
//! queue's pipes) while its frames are in flight.

mod util;

use std::sync::Arc;
use std::time::Duration;

use moss::pool::ProcessQueue;
use util::start;

#[test]
fn items_larger_than_a_pipe_buffer_arrive_whole() {
    let big = |seed: u8| -> Vec<u8> {
        (0..3_000_000u32)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect()
    };
    let q = Arc::new(ProcessQueue::<Vec<u8>>::new(2).unwrap());
    let child = {
        let q = q.clone();
        start(move || {
            for seed in [3u8, 5, 7] {
                q.put(big(seed));
            }
        })
    };
    for seed in [3u8, 5, 7] {
        let v = q.get_timeout(Duration::from_secs(60)).unwrap();
        assert!(
            v == big(seed),
            "item for seed {seed} corrupted (len {})",
            v.len()
        );
    }
    assert_eq!(child.0.join().unwrap(), 0);
}

/// A put that finds the data pipe full of earlier items (its slot free,
/// nobody reading) has written nothing: `put_timeout` gives the item back
/// at its deadline instead of waiting for a reader forever, and the queue
/// goes on whole. (Each frame is a quarter of a MiB, so whole frames fill
/// the pipe exactly.)
#[test]
fn put_timeout_on_a_full_pipe_ends_at_its_deadline() {
    const NAME: &str = "put_timeout_on_a_full_pipe_ends_at_its_deadline";
    if !util::in_child(NAME) {
        return util::passes_in_child(NAME);
    }
    // Frame: 4 bytes of length, 3 of postcard's length, the bytes.
    let item = |k: u8| vec![k; (1 << 18) - 7];
    let q = ProcessQueue::<Vec<u8>>::new(64).unwrap();
    let mut put = 0u8;
    let t = std::time::Instant::now();
    loop {
        match q.put_timeout(item(put), Duration::from_millis(300)) {
            Ok(()) => put += 1,
            Err(full) => {
                assert!(full.0 == item(put), "the item comes back");
                break;
            }
        }
        assert!(put < 64, "the pipe never filled");
    }
    println!("{put} items filled the pipe in {:?}", t.elapsed());
    assert!(put >= 1);
    assert_eq!(q.len(), usize::from(put));
    for k in 0..put {
        let v = q.get_timeout(Duration::from_secs(10)).unwrap();
        assert!(v == item(k), "item {k} whole");
    }
    assert!(q.is_empty());
    q.put_timeout(item(99), Duration::from_secs(10)).unwrap();
    assert!(q.get_timeout(Duration::from_secs(10)).unwrap() == item(99));
}
