//! What every stage shares: JSONL data, opening a model folder (runtime engine or trainable candle model), the
//! events sink progress goes through, and the named choices of library enums.

pub mod choice;
pub mod data;
pub mod events;
pub mod model;
pub mod process;
pub mod tsv;

pub use choice::{choices, Choice};
