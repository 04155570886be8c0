//! aarch64: its levels, what the CPU runs of them, and what each plugs into a table over the generic builds.
//! NEON is baseline on aarch64, so the generic builds of the plain loops (`multiversion!`) are already NEON code;
//! the levels differ in their GEMM microkernels.

use crate::isa::Isa;
use crate::ops::Ops;
use crate::{qgemm, sgemm};

/// The levels above `Scalar`, lowest first; each needs the one below.
pub(crate) const LADDER: [Isa; 3] = [Isa::Neon, Isa::Dotprod, Isa::I8mm];

/// The CPU runs `level`'s builds.
pub(crate) fn runs(level: Isa) -> bool {
    match level {
        Isa::Scalar | Isa::Neon => true,
        Isa::Dotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
        Isa::I8mm => runs(Isa::Dotprod) && std::arch::is_aarch64_feature_detected!("i8mm"),
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 | Isa::Amx => false,
    }
}

/// Overwrites the generic entries of `ops` with those of every aarch64 level up to `level`, lowest first.
pub(crate) fn plug(ops: &mut Ops, level: Isa) {
    if level >= Isa::Neon {
        ops.sgemm = sgemm::aarch64::neon::KERNEL;
        ops.sgemm_narrow = sgemm::aarch64::neon::KERNEL;
        ops.qgemm = qgemm::aarch64::neon::KERNELS;
    }
    if level >= Isa::Dotprod {
        ops.qgemm = qgemm::aarch64::dotprod::KERNELS;
    }
    if level >= Isa::I8mm {
        ops.qgemm = qgemm::aarch64::i8mm::KERNELS;
    }
}

#[cfg(test)]
mod tests {
    crate::kernel_tests!(neon, crate::isa::Isa::Neon);
    crate::kernel_tests!(dotprod, crate::isa::Isa::Dotprod);
    crate::kernel_tests!(i8mm, crate::isa::Isa::I8mm);
}
