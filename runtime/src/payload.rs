//! Reading a panic payload as text.

use std::any::Any;

/// The message of a panic payload, as std's panic hook prints it: the text
/// of `panic!("...")` (a `&'static str`) or of a formatted `panic!` (a
/// `String`); `None` for any other payload (`std::panic::panic_any`).
///
/// For the payloads `catch_unwind`, [`JoinError::into_panic`](crate::JoinError::into_panic)
/// or a thread's `join` return.
///
/// ```
/// let p = std::panic::catch_unwind(|| panic!("code {}", 7)).unwrap_err();
/// assert_eq!(moss::panic_message(&*p), Some("code 7"));
/// let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
/// assert_eq!(moss::panic_message(&*p), None);
/// ```
pub fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}
