//! Turning a raw syscall's return value into an `io::Result`, and retrying
//! on `EINTR`: the one place where moss reads `errno` after a call.
//!
//! Contract: [`cvt`] maps the C convention "-1 and `errno`" to
//! `Err(io::Error::last_os_error())` and leaves every other value alone;
//! [`cvt_r`] does the same and repeats the call while it fails with `EINTR`
//! (a signal handler ran meanwhile). Calls whose retry would be wrong
//! (`close`, which must never be retried on Linux) use [`cvt`].

use std::io;

/// The integer types raw syscalls return.
pub trait SysRet: Copy {
    /// Whether the value is the C error marker `-1`.
    fn is_error(self) -> bool;
}

macro_rules! sys_ret {
    ($($t:ty)*) => {$(
        impl SysRet for $t {
            #[inline]
            fn is_error(self) -> bool {
                self == -1
            }
        }
    )*};
}

sys_ret!(i32 i64 isize);

/// `Ok(r)`, or the calling thread's `errno` as an error if `r` is `-1`.
#[inline]
pub fn cvt<T: SysRet>(r: T) -> io::Result<T> {
    if r.is_error() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs `call` until it does not fail with `EINTR`, then [`cvt`]s its result.
#[inline]
pub fn cvt_r<T: SysRet>(mut call: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvt_passes_values_and_reads_errno_on_minus_one() {
        assert_eq!(cvt(5i32).unwrap(), 5);
        assert_eq!(cvt(0isize).unwrap(), 0);
        // SAFETY: close of an fd number that is not open has no effect
        // beyond EBADF.
        let e = cvt(unsafe { libc::close(-1) }).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn cvt_r_retries_eintr_only() {
        let mut calls = 0;
        let r = cvt_r(|| {
            calls += 1;
            if calls < 3 {
                // SAFETY: writes the calling thread's errno slot.
                unsafe { *libc::__errno_location() = libc::EINTR };
                -1i32
            } else {
                7
            }
        });
        assert_eq!((r.unwrap(), calls), (7, 3));
        let mut calls = 0;
        let r = cvt_r(|| {
            calls += 1;
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = libc::EAGAIN };
            -1i64
        });
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(calls, 1);
    }
}
