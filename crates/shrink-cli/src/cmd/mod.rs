//! One file per subcommand: its flags and a `run` that hands them to one library call and prints the result.

pub mod attention;
pub mod attention_transfer;
pub mod bench;
pub mod compress;
pub mod convert;
pub mod data;
pub mod distill;
pub mod embed;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod generate;
pub mod importance;
pub mod inspect;
pub mod local;
pub mod prune;
pub mod qat;
pub mod quantize;
pub mod report;
pub mod run;
pub mod sensitivity;
pub mod sparsify;
pub mod trial;
pub mod trim_vocab;
