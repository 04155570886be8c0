//! The training stages: one trainer and one hook trait (`train`, `optim`) over one example type (`example`), one
//! teacher cache (`distill::teacher`), fine-tuning, distillation, QAT, unstructured (`sparsify`) and structured
//! (`prune`) pruning.

pub mod attention_transfer;
pub mod distill;
pub mod example;
pub mod finetune;
pub mod optim;
pub mod prune;
pub mod qat;
pub mod sparsify;
pub mod train;
