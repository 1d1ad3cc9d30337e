//! Turning a panic inside a plugin into an error value, so nothing unwinds across `extern "C"`.

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
};

/// Runs `f`, returning its error or a panic as a message.
pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(format!("panicked: {}", payload_message(&*payload))),
    }
}

fn payload_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string payload"
    }
}
