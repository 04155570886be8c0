//! shrink-kernels: numeric kernels with no model knowledge. Each fast routine has a reference (std or a naive loop)
//! and a test with a named error budget.

pub mod gemm;
pub mod math;
