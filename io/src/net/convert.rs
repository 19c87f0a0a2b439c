//! `From` conversions to and from the std types, the fd traits and `Debug`,
//! generated alike for every moss socket type by one macro.
//!
//! Into moss: the fd becomes non-blocking (a user-set non-blocking mode is
//! kept as moss's flag) and `SO_RCVTIMEO`/`SO_SNDTIMEO` become moss's
//! timeouts. Back to std: the fd is deregistered from this thread's hub and
//! made blocking again (unless moss's flag is set), and moss's timeouts are
//! written to the kernel socket, so a round trip changes nothing.

macro_rules! std_conversions {
    ($moss:ident, $std:ty) => {
        impl From<$std> for $moss {
            /// Takes over a std socket, switching its fd to non-blocking mode.
            /// Its `SO_RCVTIMEO`/`SO_SNDTIMEO` become moss's timeouts, and a
            /// socket the user had set non-blocking stays so (operations
            /// return `WouldBlock` instead of waiting).
            fn from(s: $std) -> $moss {
                let sock = socket2::SockRef::from(&s);
                let (r, w) = (
                    sock.read_timeout().ok().flatten(),
                    sock.write_timeout().ok().flatten(),
                );
                // fcntl cannot fail on the valid fd a std socket owns; if it
                // did, a moss socket in blocking mode would stall the hub.
                let inner = Evented::new(s)
                    .unwrap_or_else(|e| panic!("moss: cannot make a socket non-blocking: {e}"));
                let _ = inner.set_read_timeout(r);
                let _ = inner.set_write_timeout(w);
                $moss { inner }
            }
        }

        impl From<$moss> for $std {
            /// Gives the socket back in blocking mode (unless moss's
            /// non-blocking flag was set), with moss's timeouts as
            /// `SO_RCVTIMEO`/`SO_SNDTIMEO`.
            fn from(s: $moss) -> $std {
                let (r, w) = (s.inner.read_timeout(), s.inner.write_timeout());
                let io = s.inner.into_inner();
                let sock = socket2::SockRef::from(&io);
                let _ = sock.set_read_timeout(r);
                let _ = sock.set_write_timeout(w);
                io
            }
        }

        impl AsRawFd for $moss {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.get().as_raw_fd()
            }
        }

        impl AsFd for $moss {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.get().as_fd()
            }
        }

        impl IntoRawFd for $moss {
            /// Releases the fd, in blocking mode like the `From` conversion.
            fn into_raw_fd(self) -> RawFd {
                self.inner.into_inner().into_raw_fd()
            }
        }

        impl FromRawFd for $moss {
            /// # Safety
            /// `fd` must be an open socket of the right kind that nothing
            /// else owns (as for the std type).
            unsafe fn from_raw_fd(fd: RawFd) -> $moss {
                // SAFETY: the caller guarantees the std type's contract.
                <$moss>::from(unsafe { <$std>::from_raw_fd(fd) })
            }
        }

        impl From<OwnedFd> for $moss {
            fn from(fd: OwnedFd) -> $moss {
                <$moss>::from(<$std>::from(fd))
            }
        }

        impl fmt::Debug for $moss {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($moss))
                    .field("fd", &self.as_raw_fd())
                    .finish()
            }
        }
    };
}

pub(crate) use std_conversions;
