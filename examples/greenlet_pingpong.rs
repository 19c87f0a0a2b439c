//! Two greenlets switching back and forth, as in the greenlet notes:
//! `gr1.switch()` runs test1 until it switches to test2, and so on; each
//! switch resumes the other exactly where it left off.
//!
//! Run: `cargo run --example greenlet_pingpong`

use std::cell::RefCell;
use std::rc::Rc;

use moss::greenlet::Greenlet;

fn main() {
    let gr2: Rc<RefCell<Option<Greenlet<&'static str>>>> = Rc::default();
    let g2 = gr2.clone();
    let gr1 = Greenlet::new(move |msg| {
        println!("test1: {msg}");
        let reply = g2.borrow().clone().unwrap().switch("ping 1");
        println!("test1: {reply}");
        let reply = g2.borrow().clone().unwrap().switch("ping 2");
        println!("test1: {reply}");
        "test1 finished"
    });
    let g1 = gr1.clone();
    *gr2.borrow_mut() = Some(Greenlet::new(move |msg| {
        println!("test2: {msg}");
        let reply = g1.switch("pong 1");
        println!("test2: {reply}");
        g1.switch("pong 2")
    }));
    let last = gr1.switch("start");
    println!("main: {last}");
}
