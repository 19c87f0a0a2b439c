//! Which backend a new hub uses: [`set_backend`], else `MOSS_IO`, else
//! epoll.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::hub::Hub;

/// The kernel interface a hub's I/O goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Readiness (`epoll`): try the syscall, wait for readiness, retry.
    /// The default.
    Epoll,
    /// Completion (`io_uring`): `moss::net` operations are submitted to a
    /// ring per hub and the coroutine parks until they complete. Falls
    /// back to epoll where io_uring cannot be set up.
    Uring,
}

/// 0: not set (read `MOSS_IO`), else `Backend as u8 + 1`.
static CHOSEN: AtomicU8 = AtomicU8::new(0);
static FELL_BACK: AtomicBool = AtomicBool::new(false);

/// Chooses the backend of the hubs created from now on (threads that have
/// not made a moss call yet), overriding `MOSS_IO`. Hubs that exist keep
/// theirs.
///
/// ```
/// use moss::reactor::{Backend, set_backend};
/// set_backend(Backend::Uring);
/// let b = std::thread::spawn(moss::reactor::backend).join().unwrap();
/// // io_uring where the kernel allows it, epoll otherwise.
/// assert!(b == Backend::Uring || b == Backend::Epoll);
/// set_backend(Backend::Epoll);
/// ```
pub fn set_backend(b: Backend) {
    CHOSEN.store(b as u8 + 1, Ordering::Relaxed);
}

/// The backend this thread's hub runs on (creating the hub if needed):
/// the chosen one, or epoll after a fallback.
pub fn backend() -> Backend {
    if Hub::current().reactor.ring.is_some() {
        Backend::Uring
    } else {
        Backend::Epoll
    }
}

/// The backend a new hub should try.
pub(super) fn chosen() -> Backend {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Backend::Epoll,
        2 => Backend::Uring,
        _ => from_env(),
    }
}

/// `MOSS_IO`, read once: `uring` or `io_uring` selects io_uring; anything
/// else (unset, `epoll`) epoll. An unknown value is reported once.
fn from_env() -> Backend {
    // Fork-safe: a child forked while another thread reads it reads its own.
    static ENV: crate::sys::atfork::ForkSafeOnceLock<Backend> =
        crate::sys::atfork::ForkSafeOnceLock::new();
    *ENV.get_or_init(|| match std::env::var("MOSS_IO").as_deref() {
        Ok("uring" | "io_uring") => Backend::Uring,
        Ok("epoll" | "") | Err(_) => Backend::Epoll,
        Ok(other) => {
            eprintln!("moss: MOSS_IO={other:?} is not a backend (epoll, uring): using epoll");
            Backend::Epoll
        }
    })
}

/// A hub could not set up its ring: it runs on epoll; said once per
/// process.
pub(super) fn fell_back(e: &std::io::Error) {
    if !FELL_BACK.swap(true, Ordering::Relaxed) {
        eprintln!("moss: io_uring is unavailable ({e}): using epoll");
    }
}
