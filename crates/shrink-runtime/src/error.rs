//! What a caller of the engine can act on, as one enum to match: the API returns `anyhow::Error`s, and these come
//! back out of them with `err.downcast_ref::<shrink_runtime::Error>()` (also under any context a caller adds).
//! A model folder that cannot be read is described in text naming the file and tensor; a name the on-disk contract
//! does not know is a `shrink_format::Error`.

use crate::engine::NonFinite;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The call's arguments: an empty or oversized batch, ids and mask of the wrong length, an id outside the
    /// vocabulary, a mask value other than 0 or 1.
    #[error("{0}")]
    Input(String),
    /// A batch whose buffers overflow or need more memory than the machine has free.
    #[error("{0}")]
    Memory(String),
    /// More worker threads than `max_threads()`.
    #[error("{0}")]
    Threads(String),
    /// Logits asked of a model without a classification head (the folder named).
    #[error("{0}: this model has no classification head (fine-tune it with `shrink finetune` first)")]
    NoHead(String),
    /// NaN or infinity in an output.
    #[error(transparent)]
    NonFinite(#[from] NonFinite),
}
