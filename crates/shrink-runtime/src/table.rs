//! A [rows, C] lookup table (token embeddings) in its stored precision, decoded one looked-up row at a time.

use shrink_format::quant::{Int4Weight, Int8Weight};
use shrink_format::F32Data;

pub enum Table {
    F32(F32Data),
    /// Half precision, widened row by row as ids are looked up (half the memory of F32).
    F16(Vec<half::f16>),
    /// Per-row symmetric int8: row r = scale[r] * q[r].
    Int8(Int8Weight),
    /// Per-row groups of int4, kept packed and decoded per looked-up row.
    Int4(Int4Weight),
}

impl Table {
    /// Row `id` into `out` (C).
    pub fn row(&self, id: usize, out: &mut [f32]) {
        let c = out.len();
        match self {
            Table::F32(w) => out.copy_from_slice(&w[id * c..(id + 1) * c]),
            Table::F16(w) => out.iter_mut().zip(&w[id * c..(id + 1) * c]).for_each(|(o, h)| *o = h.to_f32()),
            Table::Int8(w) => w.decode_row(id, out),
            Table::Int4(w) => w.decode_row(id, out),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Table::F32(w) => w.len() * 4,
            Table::F16(w) => w.len() * 2,
            Table::Int8(w) => w.q.len() + w.scale.len() * 4,
            Table::Int4(w) => w.packed.len() + w.scale.len() * 4,
        }
    }
}
