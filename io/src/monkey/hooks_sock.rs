//! Socket life-cycle and fd-state hooks: `socket`, `socketpair`, `connect`,
//! `accept`, `accept4`, `shutdown`, `close`, `dup`, `dup2`, `dup3`,
//! `fcntl`, `ioctl`, `setsockopt`, `getsockopt`.
//!
//! * `socket`/`socketpair`/`accept*` on a thread with a hub create the fd
//!   non-blocking (`SOCK_NONBLOCK`, no extra syscall) and record it as
//!   cooperative, remembering whether the *user* asked for `SOCK_NONBLOCK`.
//! * `connect` on a blocking-view cooperative socket: `EINPROGRESS` → wait
//!   writable (bounded by `SO_SNDTIMEO`, expiring with `EINPROGRESS` as
//!   Linux does) → the result from `SO_ERROR`.
//! * `fcntl(F_GETFL)` reports the user's `O_NONBLOCK`; `F_SETFL` and
//!   `ioctl(FIONBIO)` record it and keep the kernel fd non-blocking;
//!   `F_DUPFD*`/`dup*` copy the fd's state; `close` and the target of
//!   `dup2`/`dup3` reset it (waking this thread's waiters on it).
//! * `setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)` is passed to the kernel (so
//!   `getsockopt` stays exact and needs no emulation) and recorded for the
//!   emulated deadlines.
//! * `shutdown` and `getsockopt` are plain pass-through: the kernel already
//!   wakes epoll waiters on shutdown.
//!
//! # Variadic functions
//!
//! `fcntl(int, int, ...)` and `ioctl(int, unsigned long, ...)` are variadic
//! in C. The hooks declare a fixed third parameter of pointer size (`usize`).
//! On the x86_64 and aarch64 Linux ABIs a variadic integer or pointer
//! argument is passed exactly like a fixed one (the next integer register),
//! so the hook reads what the caller passed; when the caller passed nothing
//! (`F_GETFL`) the register holds garbage that neither we nor the kernel
//! read. The value is forwarded to libc's variadic definition as a variadic
//! argument. Commands taking a pointer receive it bit-for-bit.

use std::ffi::{c_int, c_ulong, c_void};
use std::time::Instant;

use libc::{sockaddr, socklen_t};
use moss_runtime::park;
use moss_runtime::reactor::Interest;

use super::fdtable;
use super::hooks_io::wait_errno_or;
use super::{patched, real, user};

/// `SOCK_STREAM`, with or without the `SOCK_NONBLOCK`/`SOCK_CLOEXEC` flags.
fn is_stream(ty: c_int) -> bool {
    ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) == libc::SOCK_STREAM
}

/// Hook for `socket(2)`.
///
/// # Safety
/// As `socket(2)` (no pointer arguments).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if !patched() || !park::can_park() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::socket()(domain, ty, protocol) };
    }
    // SAFETY: as above, with SOCK_NONBLOCK added.
    let fd = unsafe { real::socket()(domain, ty | libc::SOCK_NONBLOCK, protocol) };
    if fd >= 0 {
        fdtable::reset(fd);
        fdtable::adopt(fd, ty & libc::SOCK_NONBLOCK != 0, None, None, is_stream(ty));
    }
    fd
}

/// Hook for `socketpair(2)`.
///
/// # Safety
/// As `socketpair(2)`: `sv` points at two ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    if !patched() || !park::can_park() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::socketpair()(domain, ty, protocol, sv) };
    }
    // SAFETY: as above, with SOCK_NONBLOCK added.
    let r = unsafe { real::socketpair()(domain, ty | libc::SOCK_NONBLOCK, protocol, sv) };
    if r == 0 {
        for i in 0..2 {
            // SAFETY: on success the kernel filled both ints of `sv`.
            let fd = unsafe { *sv.add(i) };
            fdtable::reset(fd);
            fdtable::adopt(fd, ty & libc::SOCK_NONBLOCK != 0, None, None, is_stream(ty));
        }
    }
    r
}

/// Hook for `connect(2)`.
///
/// # Safety
/// As `connect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarded with the caller's arguments and contract.
    let op = || unsafe { real::connect()(fd, addr, len) };
    if !patched() {
        return op();
    }
    let st = fdtable::state_for_io(fd);
    if !st.blocking_coop() {
        return op();
    }
    let deadline =
        fdtable::timeout(fd, Interest::Writable).and_then(|t| Instant::now().checked_add(t));
    let saved = real::errno();
    let mut r = op();
    // A full backlog of a Unix socket: a blocking connect waits and retries.
    while r < 0 && real::errno() == libc::EAGAIN {
        if let Some(e) = wait_errno_or(fd, st, Interest::Writable, deadline, libc::EAGAIN) {
            real::set_errno(e);
            return -1;
        }
        r = op();
    }
    if r == 0 {
        real::set_errno(saved);
        return 0;
    }
    if real::errno() != libc::EINPROGRESS {
        return r;
    }
    loop {
        if let Some(e) = wait_errno_or(fd, st, Interest::Writable, deadline, libc::EINPROGRESS) {
            real::set_errno(e);
            return -1;
        }
        // Readiness may be stale: the connection is done once writable or failed.
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { real::poll()(&mut p, 1, 0) } == 0 {
            continue;
        }
        let mut err: c_int = 0;
        let mut l = size_of::<c_int>() as socklen_t;
        // SAFETY: `err`/`l` are valid out-pointers of the sizes given.
        let g = unsafe {
            real::getsockopt()(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut l,
            )
        };
        if g != 0 {
            return -1;
        }
        if err != 0 {
            real::set_errno(err);
            return -1;
        }
        real::set_errno(saved);
        return 0;
    }
}

fn accept_common(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    let st = fdtable::state_for_io(fd);
    // SAFETY: forwarded with the caller's arguments and contract (the
    // hooks' callers), SOCK_NONBLOCK added on the cooperative path.
    let op = |fl: c_int| unsafe { real::accept4()(fd, addr, len, fl) };
    let deadline =
        fdtable::timeout(fd, Interest::Readable).and_then(|t| Instant::now().checked_add(t));
    let hub = park::can_park();
    let saved = real::errno();
    loop {
        let nfd = op(flags | if hub { libc::SOCK_NONBLOCK } else { 0 });
        if nfd >= 0 {
            fdtable::reset(nfd);
            if hub {
                fdtable::adopt(
                    nfd,
                    flags & libc::SOCK_NONBLOCK != 0,
                    fdtable::timeout(fd, Interest::Readable),
                    fdtable::timeout(fd, Interest::Writable),
                    st.is_stream(),
                );
            }
            real::set_errno(saved);
            return nfd;
        }
        if real::errno() != libc::EAGAIN {
            return -1;
        }
        if let Some(e) = wait_errno_or(fd, st, Interest::Readable, deadline, libc::EAGAIN) {
            real::set_errno(e);
            return -1;
        }
    }
}

/// Hook for `accept(2)`.
///
/// # Safety
/// As `accept(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !patched() || !fdtable::state_for_io(fd).blocking_coop() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::accept()(fd, addr, len) };
    }
    accept_common(fd, addr, len, 0)
}

/// Hook for `accept4(2)`.
///
/// # Safety
/// As `accept4(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if !patched() || !fdtable::state_for_io(fd).blocking_coop() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::accept4()(fd, addr, len, flags) };
    }
    accept_common(fd, addr, len, flags)
}

/// Hook for `shutdown(2)` (pass-through).
///
/// # Safety
/// As `shutdown(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    // SAFETY: forwarded unchanged.
    unsafe { real::shutdown()(fd, how) }
}

/// Hook for `close(2)`.
///
/// # Safety
/// As `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if patched() {
        fdtable::reset(fd);
    }
    // SAFETY: forwarded unchanged.
    unsafe { real::close()(fd) }
}

/// Hook for `dup(2)`.
///
/// # Safety
/// As `dup(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarded unchanged.
    let r = unsafe { real::dup()(fd) };
    if r >= 0 && patched() {
        fdtable::copy(fd, r);
    }
    r
}

/// Hook for `dup2(2)`.
///
/// # Safety
/// As `dup2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if patched() && old != new {
        fdtable::reset(new);
    }
    // SAFETY: forwarded unchanged.
    let r = unsafe { real::dup2()(old, new) };
    if r >= 0 && patched() && old != new {
        fdtable::copy(old, new);
    }
    r
}

/// Hook for `dup3(2)`.
///
/// # Safety
/// As `dup3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if patched() && old != new {
        fdtable::reset(new);
    }
    // SAFETY: forwarded unchanged.
    let r = unsafe { real::dup3()(old, new, flags) };
    if r >= 0 && patched() {
        fdtable::copy(old, new);
    }
    r
}

/// Hook for `fcntl(2)`; the variadic argument is taken as one pointer-sized
/// integer (see the module docs).
///
/// # Safety
/// As `fcntl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: forwarded with the caller's arguments and contract.
    let real = |cmd: c_int, arg: usize| unsafe { real::fcntl()(fd, cmd, arg) };
    if !patched() {
        return real(cmd, arg);
    }
    match cmd {
        libc::F_GETFL => {
            let r = real(cmd, arg);
            let st = fdtable::get(fd);
            if r < 0 || !st.is_coop() {
                return r;
            }
            (r & !libc::O_NONBLOCK)
                | if st.user_nonblock() {
                    libc::O_NONBLOCK
                } else {
                    0
                }
        }
        libc::F_SETFL if fdtable::get(fd).is_coop() => {
            let r = real(cmd, arg | libc::O_NONBLOCK as usize);
            if r == 0 {
                fdtable::set_user_nonblock(fd, arg as c_int & libc::O_NONBLOCK != 0);
            }
            r
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let r = real(cmd, arg);
            if r >= 0 {
                fdtable::copy(fd, r);
            }
            r
        }
        _ => real(cmd, arg),
    }
}

/// Hook for `ioctl(2)`; the variadic argument is taken as one pointer-sized
/// integer (see the module docs).
///
/// # Safety
/// As `ioctl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: usize) -> c_int {
    if patched()
        && request == libc::FIONBIO
        && arg != 0
        && fdtable::get(fd).is_coop()
        // An invalid pointer goes to the real call, which reports EFAULT.
        && let Ok(on) = user::read(arg as *const c_int)
    {
        let on = on != 0;
        let one: c_int = 1;
        // SAFETY: FIONBIO with a valid pointer to an int.
        let r = unsafe { real::ioctl()(fd, request, &raw const one) };
        if r == 0 {
            fdtable::set_user_nonblock(fd, on);
        }
        return r;
    }
    // SAFETY: forwarded unchanged.
    unsafe { real::ioctl()(fd, request, arg) }
}

/// Hook for `setsockopt(2)`.
///
/// # Safety
/// As `setsockopt(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: forwarded unchanged.
    let r = unsafe { real::setsockopt()(fd, level, name, val, len) };
    if r == 0
        && patched()
        && level == libc::SOL_SOCKET
        && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO)
        && len as usize >= size_of::<libc::timeval>()
    {
        // SAFETY: the kernel accepted `val` as a timeval of `len` bytes.
        let tv = unsafe { std::ptr::read_unaligned(val.cast::<libc::timeval>()) };
        fdtable::set_timeout(fd, name, fdtable::timeval_to_duration(&tv));
    }
    r
}

/// Hook for `getsockopt(2)` (pass-through: the kernel holds the real values).
///
/// # Safety
/// As `getsockopt(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded unchanged.
    unsafe { real::getsockopt()(fd, level, name, val, len) }
}

hook_addresses!(
    socket, socketpair, connect, accept, accept4, shutdown, close, dup, dup2, dup3, fcntl, ioctl,
    setsockopt, getsockopt
);
