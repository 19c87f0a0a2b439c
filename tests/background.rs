//! Background coroutines (`Builder::background`): `run` and `wait` do not
//! wait for them, in every other way they are ordinary coroutines.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn background<T: 'static>(f: impl FnOnce() -> T + 'static) -> moss::JoinHandle<T> {
    moss::Builder::new()
        .name("bg")
        .background(true)
        .spawn(f)
        .unwrap()
}

#[test]
fn run_returns_while_a_background_coroutine_waits_forever() {
    util::on_thread(LIMIT, || {
        let bg = background(|| moss::sleep(Duration::MAX));
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        moss::run(|| {
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(20));
                d.set(true);
            });
        });
        assert!(done.get(), "run waited for the foreground coroutine");
        assert!(!bg.is_finished());
        // Still an ordinary coroutine: it can be killed and joined.
        bg.kill();
        assert!(bg.join().unwrap_err().is_killed());
    });
}

#[test]
fn run_waits_for_foreground_coroutines_a_background_one_spawns() {
    util::on_thread(LIMIT, || {
        let out = Rc::new(Cell::new(0));
        let o = out.clone();
        let bg = background(move || {
            moss::sleep(Duration::from_millis(5));
            // A foreground coroutine started by a background one counts,
            // and outlives the one `run` itself waits for.
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(60));
                o.set(7);
            });
            moss::sleep(Duration::MAX);
        });
        moss::run(|| moss::spawn(|| moss::sleep(Duration::from_millis(20))));
        assert_eq!(out.get(), 7);
        bg.kill();
    });
}

#[test]
fn wait_in_a_coroutine_ignores_background_coroutines() {
    util::on_thread(LIMIT, || {
        let bg = background(|| moss::sleep(Duration::MAX));
        let fg = moss::spawn(|| moss::sleep(Duration::from_millis(20)));
        let fg_id = fg.id();
        let waiter = moss::spawn(move || {
            moss::wait();
            fg.is_finished()
        });
        assert!(waiter.join().unwrap(), "wait returned before #{fg_id}");
        assert!(!bg.is_finished());
        bg.kill();
    });
}

#[test]
fn wait_in_a_background_coroutine_waits_for_the_foreground_ones() {
    util::on_thread(LIMIT, || {
        let fg = moss::spawn(|| moss::sleep(Duration::from_millis(20)));
        let fg_done = Rc::new(fg);
        let f = fg_done.clone();
        let bg = background(move || {
            moss::wait();
            f.is_finished()
        });
        assert!(bg.join().unwrap());
    });
}

#[test]
fn background_coroutines_that_fail_or_never_start_are_uncounted_once() {
    util::on_thread(LIMIT, || {
        // Killed before it started, panicked, killed while parked, returned:
        // each leaves the count exactly once (an underflow would panic in
        // debug builds, a leftover would make `run` return early below).
        let unstarted = background(|| ());
        unstarted.kill();
        let panics = background(|| -> () { panic!("background boom") });
        let parked = background(|| moss::sleep(Duration::MAX));
        let returns = background(|| 5);
        moss::yield_now();
        parked.kill();
        assert!(unstarted.join().unwrap_err().is_killed());
        assert!(panics.join().unwrap_err().is_panic());
        assert!(parked.join().unwrap_err().is_killed());
        assert_eq!(returns.join().unwrap(), 5);
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        moss::run(|| {
            moss::spawn(move || {
                moss::sleep(Duration::from_millis(10));
                d.set(true);
            })
        });
        assert!(done.get());
    });
}

#[test]
fn a_signal_handler_does_not_keep_run_waiting() {
    util::on_thread(LIMIT, || {
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        let handler = moss::signal::handler(moss::signal::SIGUSR2, move || {
            h.set(h.get() + 1);
        })
        .unwrap();
        // Before background coroutines, this `run` never returned: the
        // dispatcher is parked on its doorbell for good.
        moss::run(|| moss::spawn(|| moss::sleep(Duration::from_millis(10))));
        // The handler still works after `run` returned.
        // SAFETY: a signal to this process, caught by moss's catcher.
        unsafe { libc::kill(libc::getpid(), moss::signal::SIGUSR2) };
        util::until("the handler to run", Duration::from_secs(10), || {
            hits.get() > 0
        });
        drop(handler);
    });
}
