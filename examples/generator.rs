//! The notes' first kind of coroutine, a generator (`yield` / `next()`),
//! built from a greenlet: the body `switch`es each value to its parent
//! (the consumer), which resumes it for the next one.
//!
//! Run: `cargo run --example generator`

use moss::greenlet::{self, Greenlet};

/// An iterator whose items are produced by a body running on its own stack.
struct Generator<T: 'static> {
    g: Greenlet<Option<T>>,
}

impl<T: 'static> Generator<T> {
    /// `body` gets a `yield_` function; calling it hands a value to `next()`.
    fn new(body: impl FnOnce(&dyn Fn(T)) + 'static) -> Generator<T> {
        let g = Greenlet::new(move |_: Option<T>| {
            let consumer = greenlet::current::<Option<T>>().parent().expect("a parent");
            body(&|v| {
                consumer.switch(Some(v));
            });
            None // finished: `next()` returns None
        });
        Generator { g }
    }
}

impl<T: 'static> Iterator for Generator<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.g.is_dead() {
            None
        } else {
            self.g.switch(None)
        }
    }
}

fn fibonacci(limit: u64) -> Generator<u64> {
    Generator::new(move |yield_| {
        let (mut a, mut b) = (0, 1);
        while a < limit {
            yield_(a);
            (a, b) = (b, a + b);
        }
    })
}

fn main() {
    let fib: Vec<u64> = fibonacci(100).collect();
    println!("fibonacci below 100: {fib:?}");

    // Producer/consumer with a generator: the consumer pulls, the producer
    // runs exactly as far as needed.
    let producer = Generator::new(|yield_| {
        for i in 1..=3 {
            println!("  producer: making item {i}");
            yield_(format!("item {i}"));
        }
        println!("  producer: done");
    });
    for item in producer {
        println!("consumer: got {item}");
    }
}
