//! shrink-kernels: numeric kernels with no model knowledge. Each fast routine has a reference (std, a naive loop or
//! its own scalar build) and a test with a named error budget.

pub mod activation;
pub mod dropout;
pub mod epilogue;
pub mod gemm;
pub mod isa;
pub mod math;
pub mod qgemm;
pub mod sgemm;
