//! The C API of shrink-runtime (`libshrink.so` / `libshrink.a`, header `include/shrink.h`): load a model folder,
//! then embed or classify texts, or run the raw forward pass on token ids, into buffers the caller owns.
//!
//! Every function that can fail returns a status (0 or a negative `shrink_status`) or a NULL / 0 sentinel, and
//! sets this thread's last error (`shrink_last_error_code`, `shrink_last_error_message`). No panic crosses into C:
//! each body runs in `status::catch` (so build with the default `panic = "unwind"`). A handle may be used from
//! several threads; its calls serialize on a mutex.

mod args;
mod model;
mod run;
mod status;

use std::ffi::c_char;

pub use model::{
    shrink_embedding_dim, shrink_free, shrink_hidden_size, shrink_label_name, shrink_load, shrink_num_labels, Model,
};
pub use run::{shrink_classify, shrink_embed, shrink_forward};
pub use status::{shrink_last_error_code, shrink_last_error_message, Status};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library's version, such as "0.1.0": a static string, never NULL.
#[no_mangle]
pub extern "C" fn shrink_version() -> *const c_char {
    VERSION.as_ptr().cast()
}
