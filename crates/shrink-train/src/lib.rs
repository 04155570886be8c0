//! The training stages: one epoch loop and step hook (`train`, `optim`), fine-tuning, distillation, QAT,
//! unstructured (`sparsify`) and structured (`prune`) pruning.

pub mod distill;
pub mod finetune;
pub mod optim;
pub mod prune;
pub mod qat;
pub mod sparsify;
pub mod train;
