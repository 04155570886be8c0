//! Self-attention on the fused QKV output, one task per (sequence, head) at a time, in the variant each layer's
//! config names (`Kind`):
//! - `full` and `sliding` (`blocked.rs`): K and V packed once per head as GEMM panels, then per block of query rows
//!   an online (flash-style) softmax over blocks of keys: scores of one query block against one key block at a time,
//!   so memory is O(T) per thread. Sliding visits only the key blocks of its band (and the global tokens'), so its
//!   time is O(T·w). Full attention in bf16 (`Precision::Bf16`) runs on AMX tiles where the CPU has them.
//! - `linear` (`linear.rs`): φ(K)ᵀV and Σφ(K) per head, then φ(Q) against them: O(T·D²), no T x T anything; φ is
//!   elu + 1 or a layer's learned Hedgehog maps (`FeatureMaps`).
//!
//! Never B x H x T x T. `reference.rs` is the dense masked form every variant is tested against.

use shrink_kernels::ops;
use shrink_kernels::sgemm::PackedF32;

mod blocked;
mod linear;
pub use linear::FeatureMaps;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

pub use shrink_format::schema::Attention as Kind;
/// How attention's two products are computed. `Bf16`: Q, K, V and the (unnormalized) probabilities rounded to
/// bf16, sums in f32, on AMX-BF16 tiles where the CPU has them; else plain f32.
pub use shrink_format::schema::AttentionPrecision as Precision;

/// Added to the scores of keys a query may not see (padding, outside the band); the training model uses the same.
/// Finite, so a row whose first key block is all masked still has a finite running max that the next block lifts.
pub(crate) const MASKED: f32 = -1e9;

/// One thread's scratch, grown on first use and reused after.
pub struct Scratch {
    k: PackedF32,     // K of one head as a GEMM weight: (T, D)
    v: PackedF32,     // Vᵀ of one head: (D, T)
    scores: Vec<f32>, // (query block, key block)
    sums: Vec<f32>,   // (query block): softmax denominators, applied to the D outputs rather than the T probabilities
    max: Vec<f32>,    // (query block): running row maxima of the online softmax
    alpha: Vec<f32>,  // (query block): exp(old max - new max), what earlier key blocks' outputs are rescaled by
    out: Vec<f32>,    // (query block, D)
    // Linear attention with F features: φ(K)ᵀ (F, T), φ(K)ᵀV with Σφ(K) beside it (F, D + 1), that packed as a GEMM
    // weight, and a block of Q or K rows (query block, D) with their features (query block, F).
    phi: Vec<f32>,
    kv: Vec<f32>,
    kvz: PackedF32,
    rows: Vec<f32>,
    // The bf16 path: K and V in AMX's pair layout, a block of Q (block16, D32) and of P (block16, T32), rows
    // padded to 16 and columns to 32 (D32, T32).
    kb: shrink_kernels::bf16::PackedBf16,
    vb: shrink_kernels::bf16::PackedBf16,
    q16: Vec<u16>,
    p16: Vec<u16>,
}

impl Scratch {
    pub fn new() -> Self {
        let level = ops::ops();
        Self {
            k: PackedF32::empty_narrow(level),
            v: PackedF32::empty_narrow(level),
            scores: Vec::new(),
            sums: Vec::new(),
            max: Vec::new(),
            alpha: Vec::new(),
            out: Vec::new(),
            phi: Vec::new(),
            kv: Vec::new(),
            kvz: PackedF32::empty_narrow(level),
            rows: Vec::new(),
            kb: shrink_kernels::bf16::PackedBf16::new(),
            vb: shrink_kernels::bf16::PackedBf16::new(),
            q16: Vec::new(),
            p16: Vec::new(),
        }
    }

    /// Grows the f32 buffers of one query block of `rows` rows against key blocks of up to `keys`, D = `d`.
    fn reserve(&mut self, rows: usize, keys: usize, d: usize) {
        for (v, n) in [(&mut self.scores, rows * keys), (&mut self.out, rows * (d + 1)), (&mut self.sums, rows), (&mut self.max, rows), (&mut self.alpha, rows)] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Shape {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub d: usize,
}

/// f32 values of one thread's scratch for a layer of `kind` at T = `t`, D = `d` (for the memory plan): the largest
/// query block's scores and outputs, one head's K and V packed (panels padded), and linear attention's buffers.
pub(crate) fn scratch_floats(kind: Kind, t: usize, d: usize) -> Option<usize> {
    let packed = t.checked_add(64)?.checked_mul(2 * (d + 64))?;
    let block = match kind {
        // The AMX path scores a query block against every key at once.
        Kind::Full => blocked::QUERY_BLOCK * (t + d + 4),
        Kind::Sliding { window, .. } => {
            let band = blocked::BAND_QUERY_BLOCK + 2 * window.min(t) + 64;
            blocked::QUERY_BLOCK * (blocked::KEY_BLOCK.min(t) + d + 4) + blocked::BAND_QUERY_BLOCK * band
        }
        Kind::Linear { feature_map } => {
            let f = feature_map.features(d);
            f.checked_mul(t.max(blocked::QUERY_BLOCK))? + f * (d + 1) * 3 + blocked::QUERY_BLOCK * (2 * d + 2 * f + 3)
        }
    };
    packed.checked_add(block)
}

/// The context output, shared by tasks that write disjoint (row, head) cells.
#[derive(Clone, Copy)]
struct Ctx(*mut f32);
// SAFETY: each task writes only the D columns of its own heads.
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

impl Ctx {
    /// ctx[offset + i] = src[i] * s, written directly (a memcpy call per 32-value row cost 2% of a forward pass).
    /// SAFETY: `offset..offset + src.len()` is in bounds and written by no other task.
    unsafe fn write_scaled(self, offset: usize, src: &[f32], s: f32) {
        let dst = std::slice::from_raw_parts_mut(self.0.add(offset), src.len());
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = v * s;
        }
    }
}

/// ctx (B*T, A) = attention of `kind` per head, from qkv (B*T, 3A) laid out [Q | K | V] with heads side by side
/// (A = H·D, the layer's own head count: pruned layers have fewer). Q is already scaled by 1/sqrt(D) (folded into
/// its weights at load) except for `linear`, whose feature map takes it as it is. mask_bias (B, T): 0 for real
/// tokens, `MASKED` for padding; `padded[b]` says whether sequence b has any. One task per scratch.
/// `Precision::Bf16` runs full attention in bf16 on AMX-BF16; everything else is f32. `maps`: the layer's learned
/// feature maps, which a Hedgehog `linear` layer needs.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &[f32], mask_bias: &[f32], padded: &[bool], s: &Shape, kind: Kind, maps: Option<&FeatureMaps>, precision: Precision, ctx: &mut [f32],
    scratch: &mut [Scratch],
) {
    let (c, tasks) = (s.h * s.d, scratch.len().max(1));
    assert!(qkv.len() >= s.b * s.t * 3 * c && ctx.len() >= s.b * s.t * c && mask_bias.len() >= s.b * s.t);
    // bf16 only where a matrix engine multiplies it. Elsewhere (AVX2, AVX-512 without AMX) its numbers on the f32
    // kernels would cost a rounding pass over QKV and the probabilities and be less exact, so those take f32.
    let amx = kind == Kind::Full && precision == Precision::Bf16 && ops::ops().has_bf16_gemm();
    let items = s.b * s.h;
    let out = Ctx(ctx.as_mut_ptr());
    let run = |task: usize, sc: &mut Scratch| {
        for item in items * task / tasks..items * (task + 1) / tasks {
            let (bi, h) = (item / s.h, item % s.h);
            if item == items * task / tasks || h == 0 {
                warm(&qkv[bi * s.t * 3 * c..(bi + 1) * s.t * 3 * c]);
            }
            let bias = if padded[bi] { &mask_bias[bi * s.t..(bi + 1) * s.t] } else { &[][..] };
            match kind {
                _ if amx => blocked::head_amx(qkv, bias, s, bi, h, out, sc),
                Kind::Full => blocked::head(qkv, bias, s, bi, h, None, false, out, sc),
                Kind::Sliding { window, global } => blocked::head(qkv, bias, s, bi, h, Some((window, global)), false, out, sc),
                Kind::Linear { .. } => linear::head(qkv, bias, s, bi, h, maps, out, sc),
            }
        }
    };
    if tasks == 1 {
        run(0, &mut scratch[0]);
    } else {
        use rayon::prelude::*;
        scratch.par_iter_mut().enumerate().for_each(|(task, sc)| run(task, sc));
    }
}

/// Reads a sequence's QKV rows (T, 3C) front to back, one value a cache line, before its heads start. A head reads
/// D values of every row, 3C apart: past the 4 KB the L2 streamer follows, so each line came from L3 on its own
/// when a large batch's QKV (32 x 128 tokens: 19 MB) had left L2; a sequential pass streams them in.
fn warm(rows: &[f32]) {
    let sum = rows.iter().step_by(16).fold(0f32, |a, &v| a + v);
    std::hint::black_box(sum);
}

/// Divides a block's context rows (rows, D; row stride `ld`) by their softmax sums and writes them to ctx.
fn finish_block(out: &[f32], ld: usize, sums: &[f32], s: &Shape, bi: usize, h: usize, q0: usize, ctx: Ctx) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    for (r, (o, &sum)) in out.chunks(ld).zip(sums).enumerate() {
        // SAFETY: row (bi, q0 + r), columns of head h: this task's alone, inside ctx by the caller's assert.
        unsafe { ctx.write_scaled((bi * t + q0 + r) * c + h * d, &o[..d], 1.0 / sum) };
    }
}
