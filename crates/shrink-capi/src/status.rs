//! Status codes, the thread's last error, and `catch`: the one wrapper every fallible entry point runs its body in,
//! so that an error or a panic becomes a code and a message instead of unwinding into C.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use shrink_runtime::Error;

/// What a call returned: `SHRINK_STATUS_OK` (0) or a negative code; `shrink_last_error_message` says more.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A NULL or misaligned pointer, a text that is blank or not UTF-8, an empty batch, a token id outside the vocabulary or
    /// a mask value other than 0 and 1, a thread count out of range, a label index past the last label.
    InvalidArgument = -1,
    /// The model folder is missing, unreadable, or not a model shrink can run.
    Load = -2,
    /// An output buffer holds fewer values than the call writes; the message says how many it needs.
    BufferTooSmall = -3,
    /// `shrink_classify` on a model without a classification head.
    NoHead = -4,
    /// The batch needs more memory than the machine has free.
    OutOfMemory = -5,
    /// NaN or infinity in an output (the message names the text); nothing was written.
    NonFinite = -6,
    /// Any other failure inside the engine; the message says what.
    Runtime = -7,
    /// A bug: the library panicked. A model handle it panicked in refuses further calls (free it and load again).
    Panic = -8,
}

/// Why a call failed, on its way to the thread's last error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Status,
    pub message: String,
}

impl Failure {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// An engine error: its typed kind decides the status, `untyped` covers the rest (a folder that does not load,
    /// a tokenizer failure).
    pub fn engine(err: anyhow::Error, untyped: Status) -> Self {
        let status = match err.downcast_ref::<Error>() {
            Some(Error::Input(_) | Error::Threads(_)) => Status::InvalidArgument,
            Some(Error::Memory(_)) => Status::OutOfMemory,
            Some(Error::NoHead(_)) => Status::NoHead,
            Some(Error::NonFinite(_)) => Status::NonFinite,
            None => untyped,
        };
        Self::new(status, format!("{err:#}"))
    }
}

thread_local! {
    static LAST: RefCell<(Status, CString)> = RefCell::new((Status::Ok, CString::default()));
}

/// Runs an entry point's body: records its outcome as this thread's last error (OK and "" on success) and turns a
/// panic into `Status::Panic` with the panic's message.
pub(crate) fn catch<T>(body: impl FnOnce() -> Result<T, Failure>) -> Result<T, Status> {
    // Unwind safety: the only state a panic can leave half-updated is an engine, and its mutex is poisoned then.
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(Failure::new(Status::Panic, format!("internal error (a bug in shrink, please report it): {}", panic_text(&*payload))))
    });
    match outcome {
        Ok(value) => {
            record(Status::Ok, "");
            Ok(value)
        }
        Err(failure) => {
            record(failure.status, &failure.message);
            Err(failure.status)
        }
    }
}

/// `catch` for a body with no result: the status code C gets back.
pub(crate) fn status(body: impl FnOnce() -> Result<(), Failure>) -> i32 {
    catch(body).err().map_or(Status::Ok as i32, |s| s as i32)
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

fn record(status: Status, message: &str) {
    // C reads the message as a NUL-terminated string: an inner NUL would cut it short.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // try_with: a call made while this thread's locals are being destroyed records nothing rather than panic.
    let _ = LAST.try_with(|last| *last.borrow_mut() = (status, text));
}

/// The status of the last call on this thread: `SHRINK_STATUS_OK` after a success. Every function but
/// `shrink_version`, `shrink_last_error_code` and `shrink_last_error_message` sets it.
#[no_mangle]
pub extern "C" fn shrink_last_error_code() -> i32 {
    // Not through `catch`, which would reset what it reads; nothing here can panic.
    LAST.try_with(|last| last.borrow().0 as i32).unwrap_or(Status::Ok as i32)
}

/// What went wrong in the last call on this thread, in English; "" after a success. Never NULL. The text belongs to
/// the library and stays valid until the next call on this thread (other than `shrink_last_error_code` and this).
#[no_mangle]
pub extern "C" fn shrink_last_error_message() -> *const c_char {
    LAST.try_with(|last| last.borrow().1.as_ptr()).unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn message() -> String {
        unsafe { CStr::from_ptr(shrink_last_error_message()) }.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_panic_becomes_the_panic_code_with_its_message() {
        assert_eq!(status(|| panic!("kaboom {}", 7)), Status::Panic as i32);
        assert_eq!(shrink_last_error_code(), Status::Panic as i32);
        assert!(message().contains("kaboom 7"), "{}", message());
        assert_eq!(catch(|| -> Result<(), Failure> { std::panic::panic_any(3u8) }), Err(Status::Panic));
        assert!(message().ends_with("(no message)"), "{}", message());
    }

    #[test]
    fn success_clears_the_last_error_and_inner_nuls_are_kept_visible() {
        assert_eq!(status(|| Err(Failure::new(Status::Runtime, "a\0b"))), Status::Runtime as i32);
        assert_eq!(message(), "a\\0b");
        assert_eq!(status(|| Ok(())), 0);
        assert_eq!((shrink_last_error_code(), message().as_str()), (0, ""));
    }

    #[test]
    fn engine_errors_map_by_kind() {
        let of = |e: anyhow::Error| Failure::engine(e, Status::Load).status;
        assert_eq!(of(Error::Input("x".into()).into()), Status::InvalidArgument);
        assert_eq!(of(Error::Threads("x".into()).into()), Status::InvalidArgument);
        assert_eq!(of(Error::Memory("x".into()).into()), Status::OutOfMemory);
        assert_eq!(of(anyhow::Error::from(Error::NoHead("m".into())).context("classifying")), Status::NoHead);
        assert_eq!(of(anyhow::anyhow!("config.json: missing")), Status::Load);
    }
}
