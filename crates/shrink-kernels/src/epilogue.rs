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
    /// Applies to `y` = columns `col0..col0 + y.len()` of output row `row` in an output `n` wide, at the level in use.
    #[inline]
    pub fn apply(&self, y: &mut [f32], row: usize, col0: usize, n: usize) {
        if !self.is_identity() {
            let (bias, res) = self.slices(y.len(), row, col0, n);
            epilogue_row(y, bias, self.gelu, res);
        }
    }

    /// Leaves every value as it is (no bias, GELU or residual).
    #[inline(always)]
    pub fn is_identity(&self) -> bool {
        self.bias.is_none() && !self.gelu && self.residual.is_none()
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

/// Values per chunk: a loop over a fixed 16-value chunk vectorises fully however short the slice. A plain loop did
/// not: LLVM's 4x-interleaved vector body needs 64 values, so a tile row of 48 ran scalar (GELU with a divide per
/// value: a sixth of an int8 forward pass).
const CHUNK: usize = 16;

/// y = (y + bias) -> GELU? -> + res; empty `bias`/`res` are skipped.
#[inline(always)]
fn body(y: &mut [f32], bias: &[f32], gelu: bool, res: &[f32]) {
    let (len, full) = (y.len(), y.len() / CHUNK * CHUNK);
    let chunk = |s: &[f32], c0: usize| -> Option<[f32; CHUNK]> { (!s.is_empty()).then(|| s[c0..c0 + CHUNK].try_into().expect("chunk")) };
    for c0 in (0..full).step_by(CHUNK) {
        let y: &mut [f32; CHUNK] = (&mut y[c0..c0 + CHUNK]).try_into().expect("chunk");
        piece(y, chunk(bias, c0), gelu, chunk(res, c0));
    }
    if full < len {
        // The tail through a zero-padded chunk, so it takes the same vector code.
        let pad = |s: &[f32]| {
            (!s.is_empty()).then(|| {
                let mut p = [0f32; CHUNK];
                p[..len - full].copy_from_slice(&s[full..len]);
                p
            })
        };
        let mut t = pad(y).expect("non-empty tail");
        piece(&mut t, pad(bias), gelu, pad(res));
        y[full..].copy_from_slice(&t[..len - full]);
    }
}

/// `body` on one chunk: fixed sizes make every loop one vector operation.
#[inline(always)]
fn piece(y: &mut [f32; CHUNK], bias: Option<[f32; CHUNK]>, gelu: bool, res: Option<[f32; CHUNK]>) {
    if let Some(b) = bias {
        (0..CHUNK).for_each(|i| y[i] += b[i]);
    }
    if gelu {
        y.iter_mut().for_each(|v| *v = math::gelu(*v));
    }
    if let Some(r) = res {
        (0..CHUNK).for_each(|i| y[i] += r[i]);
    }
}

multiversion!(
    /// `body` at the level in use.
    pub epilogue_row, epilogue_row_on; (y: &mut [f32], bias: &[f32], gelu: bool, res: &[f32]) {
        body(y, bias, gelu, res)
    }
);
