//! The hooks behave exactly like libc before `patch_all`, and on threads
//! without a hub after it: same results, same errno, same blocking.
//!
//! One test function, because `patch_all` is process-global: the same
//! checks run before and after patching, in order.

use std::ffi::c_int;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

mod util;

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// Calls a raw libc function and returns (result, errno).
macro_rules! raw {
    ($e:expr) => {{
        // SAFETY: test calls with valid or deliberately invalid (but
        // harmless: bad fd numbers, null with zero length) arguments.
        let r = unsafe { $e };
        (r, errno())
    }};
}

fn errno_checks(stage: &str) {
    let mut buf = [0u8; 4];
    assert_eq!(
        raw!(libc::read(-1, buf.as_mut_ptr().cast(), 4)),
        (-1, libc::EBADF),
        "{stage}: read"
    );
    assert_eq!(
        raw!(libc::write(-1, buf.as_ptr().cast(), 4)),
        (-1, libc::EBADF),
        "{stage}: write"
    );
    assert_eq!(
        raw!(libc::recv(-1, buf.as_mut_ptr().cast(), 4, 0)),
        (-1, libc::EBADF),
        "{stage}: recv"
    );
    assert_eq!(
        raw!(libc::send(-1, buf.as_ptr().cast(), 4, 0)),
        (-1, libc::EBADF),
        "{stage}: send"
    );
    assert_eq!(raw!(libc::close(-1)), (-1, libc::EBADF), "{stage}: close");
    assert_eq!(raw!(libc::dup(-1)), (-1, libc::EBADF), "{stage}: dup");
    assert_eq!(
        raw!(libc::dup2(-1, 100)),
        (-1, libc::EBADF),
        "{stage}: dup2"
    );
    assert_eq!(
        raw!(libc::fcntl(-1, libc::F_GETFL)),
        (-1, libc::EBADF),
        "{stage}: fcntl"
    );
    assert_eq!(
        raw!(libc::shutdown(-1, libc::SHUT_RDWR)),
        (-1, libc::EBADF),
        "{stage}: shutdown"
    );
    assert_eq!(
        raw!(libc::socket(12345, libc::SOCK_STREAM, 0)),
        (-1, libc::EAFNOSUPPORT),
        "{stage}: socket"
    );
    // A file is not a socket.
    let f = std::fs::File::open("/proc/self/stat").unwrap();
    assert_eq!(
        raw!(libc::recv(f.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0)),
        (-1, libc::ENOTSOCK),
        "{stage}"
    );
    assert_eq!(
        raw!(libc::accept(
            f.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut()
        )),
        (-1, libc::ENOTSOCK)
    );
    // Invalid sleeps.
    let bad = libc::timespec {
        tv_sec: 0,
        tv_nsec: 2_000_000_000,
    };
    assert_eq!(
        raw!(libc::nanosleep(&bad, std::ptr::null_mut())),
        (-1, libc::EINVAL),
        "{stage}: nanosleep"
    );
    // SAFETY: valid pointers; clock_nanosleep returns the error number.
    let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &bad, std::ptr::null_mut()) };
    assert_eq!(r, libc::EINVAL, "{stage}: clock_nanosleep");
    // errno survives a successful call untouched by hook bookkeeping.
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = libc::E2BIG };
    let (a, b) = UnixStream::pair().unwrap();
    (&a).write_all(b"x").unwrap();
    let (n, e) = raw!(libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), 4));
    assert_eq!(
        (n, e),
        (1, libc::E2BIG),
        "{stage}: errno after a successful read"
    );
    // A refused connection.
    let e = TcpStream::connect(util::refused_addr()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{stage}: connect");
}

fn blocking_checks(stage: &str) {
    // A blocking read waits for a writer on another thread.
    let (mut a, b) = UnixStream::pair().unwrap();
    let t = Instant::now();
    let w = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        (&b).write_all(b"late").unwrap();
        b
    });
    let mut buf = [0u8; 4];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"late");
    assert!(
        t.elapsed() >= Duration::from_millis(90),
        "{stage}: read did not block"
    );
    let b = w.join().unwrap();

    // Non-blocking mode reports WouldBlock; F_GETFL reports it.
    a.set_nonblocking(true).unwrap();
    assert_eq!(
        a.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "{stage}"
    );
    // SAFETY: valid fd.
    let fl = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFL) };
    assert_ne!(fl & libc::O_NONBLOCK, 0, "{stage}: F_GETFL");
    a.set_nonblocking(false).unwrap();
    // SAFETY: valid fd.
    let fl = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(fl & libc::O_NONBLOCK, 0, "{stage}: F_GETFL");

    // A read timeout expires with WouldBlock after the timeout.
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(Duration::from_millis(100)));
    let t = Instant::now();
    assert_eq!(
        a.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "{stage}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(90),
        "{stage}: timeout too short"
    );
    drop(b);
    assert_eq!(a.read(&mut buf).unwrap(), 0, "{stage}: EOF");

    // Sleeps sleep.
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    assert!(t.elapsed() >= Duration::from_millis(100), "{stage}: sleep");

    // poll and select time out after their timeout.
    let (p, _q) = UnixStream::pair().unwrap();
    let mut pfd = libc::pollfd {
        fd: p.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let t = Instant::now();
    assert_eq!(raw!(libc::poll(&mut pfd, 1, 60)).0, 0, "{stage}: poll");
    assert!(
        t.elapsed() >= Duration::from_millis(55),
        "{stage}: poll returned early"
    );
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 60_000,
    };
    // SAFETY: a zeroed fd_set is a valid empty set.
    let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
    // SAFETY: fd < FD_SETSIZE.
    unsafe { libc::FD_SET(p.as_raw_fd(), &mut set) };
    let t = Instant::now();
    let (n, _) = raw!(libc::select(
        p.as_raw_fd() + 1,
        &mut set,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        &mut tv
    ));
    assert_eq!(n, 0, "{stage}: select");
    assert!(
        t.elapsed() >= Duration::from_millis(55),
        "{stage}: select returned early"
    );

    // Name resolution and a TCP round trip.
    let addrs: Vec<_> = ("localhost", 80).to_socket_addrs().unwrap().collect();
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
        "{stage}: {addrs:?}"
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut v = [0u8; 5];
        s.read_exact(&mut v).unwrap();
        s.write_all(&v).unwrap();
    });
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.write_all(b"hello").unwrap();
    let mut v = [0u8; 5];
    c.read_exact(&mut v).unwrap();
    assert_eq!(&v, b"hello");
    srv.join().unwrap();
}

#[test]
fn hooks_are_exact_before_and_after_patching_on_threads_without_a_hub() {
    errno_checks("before patch_all");
    blocking_checks("before patch_all");
    // A thread with a hub, before patching: still plain libc.
    std::thread::spawn(|| {
        moss::yield_now();
        errno_checks("hub thread before patch_all");
        blocking_checks("hub thread before patch_all");
    })
    .join()
    .unwrap();

    assert!(!moss::monkey::is_patched());
    moss::monkey::patch_all();
    moss::monkey::patch_all();
    assert!(moss::monkey::is_patched());

    errno_checks("after patch_all, no hub");
    blocking_checks("after patch_all, no hub");
    std::thread::spawn(|| {
        errno_checks("after patch_all, other thread");
        blocking_checks("after patch_all, other thread");
    })
    .join()
    .unwrap();
}

#[test]
fn the_hooks_are_linked_and_exported() {
    // Calling patch_all (elsewhere in this binary) links every hook; the
    // symbols the binary binds to are ours, libc's come next.
    // All of them, `waitpid` and `wait4` too: nothing else in the binary
    // uses their module, and where another library defines the names
    // weakly (AddressSanitizer's interceptors) only `patch_all` links it.
    for name in [
        c"read",
        c"readv",
        c"write",
        c"writev",
        c"recv",
        c"recvfrom",
        c"recvmsg",
        c"send",
        c"sendto",
        c"sendmsg",
        c"sendfile",
        c"sendfile64",
        c"splice",
        c"socket",
        c"socketpair",
        c"connect",
        c"accept",
        c"accept4",
        c"shutdown",
        c"close",
        c"dup",
        c"dup2",
        c"dup3",
        c"fcntl",
        c"ioctl",
        c"setsockopt",
        c"getsockopt",
        c"poll",
        c"select",
        c"nanosleep",
        c"clock_nanosleep",
        c"usleep",
        c"sleep",
        c"getaddrinfo",
        c"epoll_wait",
        c"epoll_pwait",
        c"waitpid",
        c"wait4",
        c"pthread_join",
    ] {
        // SAFETY: valid pseudo-handles and NUL-terminated names.
        let (ours, next) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()),
                libc::dlsym(libc::RTLD_NEXT, name.as_ptr()),
            )
        };
        assert!(!ours.is_null() && !next.is_null(), "{name:?}");
        assert_ne!(ours, next, "{name:?} is not interposed");
    }
    // SAFETY: only the address is taken.
    let recv_here = libc::recv as *const () as usize;
    // SAFETY: valid pseudo-handle and name.
    let recv_default = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"recv".as_ptr()) } as usize;
    assert_eq!(
        recv_here, recv_default,
        "the binary's recv is the exported hook"
    );
}
