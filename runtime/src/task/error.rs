//! How a coroutine can end without a value: [`JoinError`], and the
//! [`Cancelled`] payload a delivered cancellation unwinds with.

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::Mutex;

use super::{Cancel, CoroutineId, Header};

/// The unwinding payload of a delivered cancellation (`kill`, `timeout`).
///
/// User code that catches panics may see it; it should resume the unwind.
#[derive(Debug)]
pub struct Cancelled(pub(crate) Cancel);

/// A panic payload made `Sync`, so that `JoinError` can be sent and shared
/// like any error.
pub(crate) struct Payload(Mutex<Box<dyn Any + Send>>);

pub(crate) enum Repr {
    Panic(Payload),
    Killed,
    Spawn(io::Error),
}

/// Why a coroutine did not return a value: it panicked, it was killed, or its
/// stack could not be allocated.
///
/// ```
/// let h = moss::spawn(|| -> u32 { panic!("boom") });
/// let err = h.join().unwrap_err();
/// assert!(err.is_panic());
/// assert!(err.to_string().contains("boom"));
/// ```
pub struct JoinError(Box<ErrorInner>);

struct ErrorInner {
    id: CoroutineId,
    name: Option<String>,
    message: Option<String>,
    repr: Repr,
}

impl JoinError {
    pub(crate) fn new(h: &Header, repr: Repr) -> JoinError {
        JoinError(Box::new(ErrorInner {
            id: h.id,
            name: h.name.as_deref().map(str::to_owned),
            message: None,
            repr,
        }))
    }

    pub(crate) fn from_payload(h: &Header, payload: Box<dyn Any + Send>) -> JoinError {
        if payload.is::<Cancelled>() {
            return JoinError::new(h, Repr::Killed);
        }
        let message = crate::panic_message(&*payload).map(str::to_owned);
        let mut e = JoinError::new(h, Repr::Panic(Payload(Mutex::new(payload))));
        e.0.message = message;
        e
    }

    /// The coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0.repr, Repr::Panic(_))
    }

    /// The coroutine was killed (by [`JoinHandle::kill`](crate::JoinHandle::kill)),
    /// before it started or at a blocking point.
    pub fn is_killed(&self) -> bool {
        matches!(self.0.repr, Repr::Killed)
    }

    /// The id of the coroutine that failed.
    pub fn id(&self) -> CoroutineId {
        self.0.id
    }

    /// The panic payload, to re-raise with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the error is not a panic (check [`is_panic`](Self::is_panic)).
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self.0.repr {
            Repr::Panic(p) => p.0.into_inner().unwrap_or_else(|e| e.into_inner()),
            _ => panic!("JoinError::into_panic called on an error that is not a panic: {self}"),
        }
    }

    /// The payload if it is a panic, or the error back.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, JoinError> {
        if self.is_panic() {
            Ok(self.into_panic())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.name {
            Some(n) => write!(f, "coroutine '{n}' (#{})", self.0.id)?,
            None => write!(f, "coroutine #{}", self.0.id)?,
        }
        match &self.0.repr {
            Repr::Panic(_) => match &self.0.message {
                Some(m) => write!(f, " panicked: {m}"),
                None => write!(f, " panicked"),
            },
            Repr::Killed => write!(f, " was killed"),
            Repr::Spawn(e) => write!(f, " could not start: {e}"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.repr {
            Repr::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
