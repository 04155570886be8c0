//! shrink: data, training, evaluation and the commands behind the `shrink` binary.

pub mod bench;
pub mod data;
pub mod distill;
pub mod embed;
pub mod eval;
pub mod inspect;
pub mod model;
pub mod optim;
pub mod prune;
pub mod progress;
pub mod qat;
pub mod quantize;
pub mod sparsify;
pub mod timing;
pub mod train;
pub mod vocab;
