//! shrink: data, training, evaluation and the commands behind the `shrink` binary.

pub mod bench;
pub mod data;
pub mod embed;
pub mod eval;
pub mod inspect;
pub mod model;
pub mod optim;
pub mod prune;
pub mod progress;
pub mod quantize;
pub mod timing;
pub mod train;
