//! What a GEMM applies to its f32 result before storing it, fused so the output is written once:
//! y = acc (+ bias[n]); if gelu { y = GELU(y) }; y += residual[m, n].

use crate::math;
use crate::multiversion;

#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// N values.
    pub bias: Option<&'a [f32]>,
    /// Exact (erf) GELU after the bias.
    pub gelu: bool,
    /// M x N values (same layout as the output), added last.
    pub residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// Applies to `y` = columns `col0..col0 + y.len()` of output row `row` in an output `n` wide, at the best level.
    #[inline]
    pub fn apply(&self, y: &mut [f32], row: usize, col0: usize, n: usize) {
        let (bias, res) = self.slices(y.len(), row, col0, n);
        if !bias.is_empty() || self.gelu || !res.is_empty() {
            epilogue_row(y, bias, self.gelu, res);
        }
    }

    /// `apply` compiled into the caller, for kernels that already run at a given level (no dispatch per row).
    #[inline(always)]
    pub fn apply_inline(&self, y: &mut [f32], row: usize, col0: usize, n: usize) {
        let (bias, res) = self.slices(y.len(), row, col0, n);
        body(y, bias, self.gelu, res);
    }

    #[inline(always)]
    fn slices(&self, len: usize, row: usize, col0: usize, n: usize) -> (&[f32], &[f32]) {
        let cols = col0..col0 + len;
        let bias = self.bias.map_or(&[][..], |b| &b[cols.clone()]);
        let res = self.residual.map_or(&[][..], |r| &r[row * n + cols.start..row * n + cols.end]);
        (bias, res)
    }
}

/// y = (y + bias) -> GELU? -> + res; empty `bias`/`res` are skipped.
#[inline(always)]
fn body(y: &mut [f32], bias: &[f32], gelu: bool, res: &[f32]) {
    if !bias.is_empty() {
        for (y, &b) in y.iter_mut().zip(bias) {
            *y += b;
        }
    }
    if gelu {
        math::gelu_slice(y);
    }
    if !res.is_empty() {
        for (y, &r) in y.iter_mut().zip(res) {
            *y += r;
        }
    }
}

multiversion!(
    /// `body` at the best level.
    epilogue_row, epilogue_row_on; (y: &mut [f32], bias: &[f32], gelu: bool, res: &[f32]) {
        body(y, bias, gelu, res)
    }
);
