//! The storage formats of a compressed folder, one file each: the table of formats a Linear can have
//! (`format.rs`), the integer grids and round-to-nearest (`grid.rs`), int8 and int4 weights, sparse weights, and
//! the activation grid and SmoothQuant factors (`act.rs`). Each is a typed struct with one reference encode and
//! decode, and reads and writes its own tensors, so the writer, the runtime and inspect agree by construction.

pub mod act;
pub mod format;
pub mod grid;
pub mod int4;
pub mod int8;
pub mod layout;
pub mod sparse;

pub use act::{ActGrid, Smooth};
pub use format::{Acts, Format, Storage, TableFormat, FORMATS};
pub use grid::{Grid, Quantized};
pub use int4::Int4Weight;
pub use int8::Int8Weight;
pub use sparse::SparseWeight;

/// Row blocks stacked along N: each block's two per-row arrays (values, scales) appended in order.
fn stack_rows<A, B>(parts: impl IntoIterator<Item = (Vec<A>, Vec<B>)>) -> (Vec<A>, Vec<B>) {
    // The first part moves: one part (a Linear of one tensor) is not copied.
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_default();
    parts.fold(first, |(mut a, mut b), (pa, pb)| {
        a.extend(pa);
        b.extend(pb);
        (a, b)
    })
}

/// The tensors of a Linear or table `NAME` are `NAME.<leaf>`.
pub mod leaf {
    pub const WEIGHT: &str = "weight";
    pub const BIAS: &str = "bias";
    pub const WEIGHT_SCALE: &str = "weight_scale";
    pub const WEIGHT_MASK: &str = "weight_mask";
    pub const WEIGHT_INDEX: &str = "weight_index";
    pub const WEIGHT_ROW_NNZ: &str = "weight_row_nnz";
    pub const INPUT_SCALE: &str = "input_scale";
    pub const INPUT_ZERO: &str = "input_zero";
    pub const SMOOTH: &str = "smooth";

    /// What a format stores beside `NAME.weight` and `NAME.bias`: scales, sparse placement, activation grids.
    pub const METADATA: [&str; 7] = [WEIGHT_SCALE, WEIGHT_MASK, WEIGHT_INDEX, WEIGHT_ROW_NNZ, INPUT_SCALE, INPUT_ZERO, SMOOTH];

    pub fn of(name: &str, leaf: &str) -> String {
        format!("{name}.{leaf}")
    }

    /// (NAME, leaf) of a metadata tensor `NAME.<leaf>`; None for weights, biases and anything else.
    pub fn split_metadata(tensor: &str) -> Option<(&str, &'static str)> {
        let (name, leaf) = tensor.rsplit_once('.')?;
        METADATA.iter().find(|m| **m == leaf).map(|m| (name, *m))
    }
}
