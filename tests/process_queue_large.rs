//! ProcessQueue with items larger than a pipe buffer, in a test binary of
//! its own: no other test of this process forks (and so inherits this
//! queue's pipes) while its frames are in flight.

mod util;

use std::sync::Arc;
use std::time::Duration;

use moss::pool::{Process, ProcessQueue};
use util::Reap;

fn start(f: impl FnOnce() + 'static) -> Reap {
    Reap(Process::new(f).start().unwrap())
}

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
