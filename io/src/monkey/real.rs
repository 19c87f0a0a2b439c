//! The real libc functions behind the hooks, and errno access.
//!
//! Each hooked symbol is looked up once with `dlsym(RTLD_NEXT, name)`: the
//! next definition after the object that defines the hook (the executable, or
//! the shared library moss is linked into), which is libc's. The pointer is
//! cached in an `AtomicPtr`; a hook pays one relaxed load and an indirect
//! call. [`resolve_all`] fills every cache at `patch_all` time, so the lazy
//! path only runs for hooked calls made before patching (where the hooks
//! still have to behave exactly like libc).
//!
//! `fcntl`, `ioctl` and `syscall` are variadic in C. The hooks receive their optional
//! third argument as one pointer-sized integer (see `hooks_sock.rs`), and
//! forward it to the real variadic function through a variadic function
//! pointer type, which Rust calls with the C variadic convention.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Looks up `name` in the objects after ours, caching the result in `slot`.
/// Aborts if the symbol does not exist: a hook cannot do anything sensible
/// without the function it stands in for.
#[cold]
fn resolve(slot: &AtomicPtr<c_void>, name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT is a valid pseudo-handle.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if p.is_null() {
        let msg = b"moss::monkey: dlsym(RTLD_NEXT) cannot find a hooked libc function\n";
        // SAFETY: writing a static buffer to stderr with the raw syscall (the
        // `write` symbol may be the hook itself); then abort.
        unsafe {
            libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len());
            libc::abort();
        }
    }
    slot.store(p, Ordering::Relaxed);
    p
}

/// Declares `pub(crate) fn NAME() -> unsafe extern "C" fn(ARGS) -> RET`
/// returning libc's definition.
macro_rules! real_fns {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty;)*) => {
        $(
            #[inline(always)]
            pub(crate) fn $name() -> unsafe extern "C" fn($($arg),*) -> $ret {
                static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
                let mut p = SLOT.load(Ordering::Relaxed);
                if p.is_null() {
                    let name = concat!(stringify!($name), "\0");
                    p = resolve(&SLOT, CStr::from_bytes_with_nul(name.as_bytes()).unwrap_or_default());
                }
                // SAFETY: `p` is libc's definition of this symbol, whose C
                // prototype is the function pointer type written here.
                unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(p) }
            }
        )*

        /// Resolves every real function now (called by `patch_all`).
        pub(crate) fn resolve_all() {
            $( std::hint::black_box($name()); )*
            std::hint::black_box(fcntl());
            std::hint::black_box(ioctl());
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            std::hint::black_box(syscall());
        }
    };
}

use libc::{
    addrinfo, c_char, c_uint, c_ulong, clockid_t, fd_set, iovec, msghdr, nfds_t, pollfd, size_t,
    sockaddr, socklen_t, ssize_t, timespec, timeval, useconds_t,
};

real_fns! {
    read: fn(c_int, *mut c_void, size_t) -> ssize_t;
    readv: fn(c_int, *const iovec, c_int) -> ssize_t;
    write: fn(c_int, *const c_void, size_t) -> ssize_t;
    writev: fn(c_int, *const iovec, c_int) -> ssize_t;
    recv: fn(c_int, *mut c_void, size_t, c_int) -> ssize_t;
    recvfrom: fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
    recvmsg: fn(c_int, *mut msghdr, c_int) -> ssize_t;
    send: fn(c_int, *const c_void, size_t, c_int) -> ssize_t;
    sendto: fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t;
    sendmsg: fn(c_int, *const msghdr, c_int) -> ssize_t;
    socket: fn(c_int, c_int, c_int) -> c_int;
    socketpair: fn(c_int, c_int, c_int, *mut c_int) -> c_int;
    connect: fn(c_int, *const sockaddr, socklen_t) -> c_int;
    accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    shutdown: fn(c_int, c_int) -> c_int;
    close: fn(c_int) -> c_int;
    dup: fn(c_int) -> c_int;
    dup2: fn(c_int, c_int) -> c_int;
    dup3: fn(c_int, c_int, c_int) -> c_int;
    setsockopt: fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
    getsockopt: fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
    poll: fn(*mut pollfd, nfds_t, c_int) -> c_int;
    select: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int;
    nanosleep: fn(*const timespec, *mut timespec) -> c_int;
    clock_nanosleep: fn(clockid_t, c_int, *const timespec, *mut timespec) -> c_int;
    usleep: fn(useconds_t) -> c_int;
    sleep: fn(c_uint) -> c_uint;
    getaddrinfo: fn(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int;
    sendfile: fn(c_int, c_int, *mut libc::off_t, size_t) -> ssize_t;
    sendfile64: fn(c_int, c_int, *mut libc::off64_t, size_t) -> ssize_t;
    splice: fn(c_int, *mut libc::loff_t, c_int, *mut libc::loff_t, size_t, c_uint) -> ssize_t;
    epoll_wait: fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int;
    epoll_pwait: fn(c_int, *mut libc::epoll_event, c_int, c_int, *const libc::sigset_t) -> c_int;
    waitpid: fn(libc::pid_t, *mut c_int, c_int) -> libc::pid_t;
    wait4: fn(libc::pid_t, *mut c_int, c_int, *mut libc::rusage) -> libc::pid_t;
    pthread_join: fn(libc::pthread_t, *mut *mut c_void) -> c_int;
}

/// libc's `fcntl(int, int, ...)`.
#[inline(always)]
pub(crate) fn fcntl() -> unsafe extern "C" fn(c_int, c_int, ...) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    let mut p = SLOT.load(Ordering::Relaxed);
    if p.is_null() {
        p = resolve(&SLOT, c"fcntl");
    }
    // SAFETY: `p` is libc's `fcntl`, whose C prototype this is.
    unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int, c_int, ...) -> c_int>(p)
    }
}

/// libc's `ioctl(int, unsigned long, ...)`.
#[inline(always)]
pub(crate) fn ioctl() -> unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    let mut p = SLOT.load(Ordering::Relaxed);
    if p.is_null() {
        p = resolve(&SLOT, c"ioctl");
    }
    // SAFETY: `p` is libc's `ioctl`, whose C prototype this is.
    unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int>(p)
    }
}

/// libc's `syscall(long, ...)`.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn syscall() -> unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    let mut p = SLOT.load(Ordering::Relaxed);
    if p.is_null() {
        p = resolve(&SLOT, c"syscall");
    }
    // SAFETY: `p` is libc's `syscall`, whose C prototype this is.
    unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long>(
            p,
        )
    }
}

/// The calling thread's errno.
#[inline(always)]
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
#[inline(always)]
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// Runs `f` and restores errno afterwards: for bookkeeping syscalls a hook
/// makes on the side, which must not leak into the caller's errno.
pub(crate) fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    let e = errno();
    let v = f();
    set_errno(e);
    v
}
