//! The dispatch table: one `Ops` per level, built once, generic-first: every entry starts as the portable build,
//! then the architecture's `plug` (`crate::x86::plug`, `crate::aarch64::plug`) overwrites the entries the level and the detected CPU
//! features have. Kernels are called through it once per row, tile or GEMM call, never per element.
//!
//! A new architecture adds a `plug` of its own under its `cfg` in `build` and its levels to `crate::isa`; callers
//! never change.

use std::sync::OnceLock;

use crate::isa::{self, Isa};
use crate::{bf16, qgemm, sgemm};

/// The kernels of one level. Every pointer in it runs on this CPU (the `unsafe` at each call rests on that).
pub struct Ops {
    /// The level it was built for.
    pub isa: Isa,
    /// f32 GEMM microkernels: the usual panels, and the narrow ones for 32- or 64-wide matrices.
    pub(crate) sgemm: sgemm::Kernel,
    pub(crate) sgemm_narrow: sgemm::Kernel,
    /// int8 / int4 GEMM units and the activation quantizer.
    pub(crate) qgemm: qgemm::Kernels,
    /// Attention's bf16 products on a matrix engine, where there is one.
    pub(crate) gemm_bf16: Option<bf16::Gemm>,
    pub(crate) loops: Loops,
}

/// `loops!(field: module path, ..)` defines `Loops`, a pointer per `multiversion!` function, and its
/// constructors, one per build the macro emits.
macro_rules! loops {
    ($($field:ident: $($path:ident)::+),* $(,)?) => {
        /// One build per `multiversion!` function.
        pub(crate) struct Loops {
            $(pub(crate) $field: crate::$($path)::+::Ptr,)*
        }

        impl Loops {
            fn generic() -> Self {
                Self { $($field: crate::$($path)::+::generic,)* }
            }

            #[cfg(target_arch = "x86_64")]
            pub(crate) fn avx2() -> Self {
                Self { $($field: crate::$($path)::+::avx2,)* }
            }

            #[cfg(target_arch = "x86_64")]
            pub(crate) fn avx512() -> Self {
                Self { $($field: crate::$($path)::+::avx512,)* }
            }
        }
    };
}

loops!(
    gelu: activation::gelu,
    gelu_backward: activation::gelu_backward,
    elu_plus_one: activation::elu_plus_one,
    layer_norm_rows: activation::layer_norm_rows,
    softmax_row_backward: activation::softmax_row_backward,
    softmax_row: activation::softmax::softmax_row,
    softmax_rows_unnormalized: activation::softmax::softmax_rows_unnormalized,
    softmax_rows_online: activation::softmax::softmax_rows_online,
    softmax_rows_bf16: activation::softmax::softmax_rows_bf16,
    epilogue_row: epilogue::epilogue_row,
    convert: bf16::convert,
    pack_pairs: bf16::pack_pairs,
    fill_mask: dropout::fill_mask,
    apply_mask: dropout::apply_mask,
    rows_block: spmm::kernel::rows_block,
);

impl Ops {
    /// Nothing but the portable builds.
    fn generic(isa: Isa) -> Self {
        Self {
            isa,
            sgemm: sgemm::generic::KERNEL,
            sgemm_narrow: sgemm::generic::KERNEL,
            qgemm: qgemm::generic::KERNELS,
            gemm_bf16: None,
            loops: Loops::generic(),
        }
    }

    /// Attention's bf16 products run on a matrix engine (`bf16::gemm_bf16`); else the f32 kernels take them.
    pub fn has_bf16_gemm(&self) -> bool {
        self.gemm_bf16.is_some()
    }
}

fn build(isa: Isa) -> Ops {
    #[allow(unused_mut)]
    let mut ops = Ops::generic(isa);
    #[cfg(target_arch = "x86_64")]
    crate::x86::plug(&mut ops, isa);
    #[cfg(target_arch = "aarch64")]
    crate::aarch64::plug(&mut ops, isa);
    ops
}

/// The table of `isa`, or none when this CPU does not run it.
pub fn at(isa: Isa) -> Option<&'static Ops> {
    static TABLES: [OnceLock<Ops>; isa::ALL.len()] = [const { OnceLock::new() }; isa::ALL.len()];
    isa::levels().any(|l| l == isa).then(|| TABLES[isa as usize].get_or_init(|| build(isa)))
}

/// The generic table (plain Rust builds), which every target runs: what the others are tested against.
pub fn generic() -> &'static Ops {
    at(Isa::Scalar).expect("every target runs the generic level")
}

/// The table of the level in use (`isa::isa()`).
pub fn ops() -> &'static Ops {
    static OPS: OnceLock<&'static Ops> = OnceLock::new();
    OPS.get_or_init(|| at(isa::isa()).expect("the level in use runs here"))
}

/// The table of every level this CPU runs, lowest first (no allocation).
pub fn available() -> impl Iterator<Item = &'static Ops> {
    isa::levels().filter_map(at)
}

#[cfg(test)]
crate::kernel_tests!(generic, crate::isa::Isa::Scalar);
