//! Self-attention on the fused QKV output, in blocks. One task takes one (sequence, head) at a time: it packs that
//! head's K and V once as GEMM panels, then for each block of query rows computes the scores (block x T), masks and
//! softmaxes them, and multiplies by V. No more than one block of scores per thread ever exists (never
//! B x H x T x T), and both products run on the packed f32 kernel, or in bf16 (`Precision::Bf16`) on AMX tiles.

use shrink_kernels::activation::{softmax_rows_bf16, softmax_rows_unnormalized};
use shrink_kernels::bf16::{self, PackedBf16};
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::ops;
use shrink_kernels::sgemm::{gemm_f32_ex, PackedF32};

/// Query rows per block: scores of one block stay in L1/L2.
pub(crate) const QUERY_BLOCK: usize = 64;

/// How attention's two products are computed. `Bf16`: Q, K, V and the (unnormalized) probabilities rounded to
/// bf16, sums in f32, on AMX-BF16 tiles where the CPU has them; else plain f32.
pub use shrink_format::schema::AttentionPrecision as Precision;

/// One thread's scratch, grown on first use and reused after.
pub struct Scratch {
    k: PackedF32,     // K of one head as a GEMM weight: (T, D)
    v: PackedF32,     // Vᵀ of one head: (D, T)
    scores: Vec<f32>, // (block, T)
    sums: Vec<f32>,   // (block): softmax denominators, applied to the D outputs rather than the T probabilities
    out: Vec<f32>,    // (block, D)
    // The bf16 path: K and V in AMX's pair layout, a block of Q (block16, D32) and of P (block16, T32), rows
    // padded to 16 and columns to 32 (D32, T32).
    kb: PackedBf16,
    vb: PackedBf16,
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
            out: Vec::new(),
            kb: PackedBf16::new(),
            vb: PackedBf16::new(),
            q16: Vec::new(),
            p16: Vec::new(),
        }
    }

    /// Grows the f32 buffers of one query block of `block` rows against T = `t` keys, D = `d`.
    fn reserve(&mut self, block: usize, t: usize, d: usize) {
        for (v, n) in [(&mut self.scores, block * t), (&mut self.out, block * d), (&mut self.sums, block)] {
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

/// ctx (B*T, A) = softmax(Q·Kᵀ + mask_bias) · V per head, from qkv (B*T, 3A) laid out [Q | K | V] with heads side by
/// side (A = H·D, the layer's own head count: pruned layers have fewer), Q already scaled by 1/sqrt(D) (folded into
/// its weights at load). mask_bias (B, T): 0 for real tokens, a large negative for padding; `padded[b]` says whether
/// sequence b has any. One task per scratch. `Precision::Bf16` runs in bf16 on AMX-BF16 and in f32 elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &[f32], mask_bias: &[f32], padded: &[bool], s: &Shape, precision: Precision, ctx: &mut [f32], scratch: &mut [Scratch],
) {
    let (c, tasks) = (s.h * s.d, scratch.len().max(1));
    assert!(qkv.len() >= s.b * s.t * 3 * c && ctx.len() >= s.b * s.t * c && mask_bias.len() >= s.b * s.t);
    // bf16 only where a matrix engine multiplies it. Elsewhere (AVX2, AVX-512 without AMX) its numbers on the f32
    // kernels would cost a rounding pass over QKV and the probabilities and be less exact, so those take f32.
    let amx = precision == Precision::Bf16 && ops::ops().has_bf16_gemm();
    let items = s.b * s.h;
    let out = Ctx(ctx.as_mut_ptr());
    let run = |task: usize, sc: &mut Scratch| {
        for item in items * task / tasks..items * (task + 1) / tasks {
            let bi = item / s.h;
            if item == items * task / tasks || item % s.h == 0 {
                warm(&qkv[bi * s.t * 3 * c..(bi + 1) * s.t * 3 * c]);
            }
            let bias = if padded[bi] { &mask_bias[bi * s.t..(bi + 1) * s.t] } else { &[][..] };
            if amx {
                head_attention_amx(qkv, bias, s, bi, item % s.h, out, sc);
            } else {
                head_attention(qkv, bias, s, bi, item % s.h, false, out, sc);
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

/// Head h of sequence bi, block by block of query rows; `bias` (T) is empty when the sequence has no padding.
/// `emulate`: the probabilities are the bf16 path's (`softmax_rows_bf16`), the AMX path's numbers on the f32 kernels,
/// which its test checks it against.
#[allow(clippy::too_many_arguments)]
fn head_attention(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, emulate: bool, ctx: Ctx, sc: &mut Scratch) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let ld = 3 * c;
    let seq = &qkv[bi * t * ld..(bi + 1) * t * ld]; // (T, 3C)
    let block = QUERY_BLOCK.min(t);
    sc.reserve(block, t, d);
    sc.k.repack(&seq[c + h * d..], t, d, ld, 1);
    sc.v.repack(&seq[2 * c + h * d..], d, t, 1, ld);
    for q0 in (0..t).step_by(block) {
        let rows = block.min(t - q0);
        let scores = &mut sc.scores[..rows * t]; // (rows, T)
        gemm_f32_ex(scores, t, &seq[q0 * ld + h * d..], ld, rows, &sc.k, Epilogue::default(), 1);
        if emulate {
            // The AMX path's probabilities (bf16 exps), widened back for the f32 kernel.
            if sc.p16.len() < rows * t {
                sc.p16.resize(rows * t, 0);
            }
            softmax_rows_bf16(scores, t, bias, &mut sc.sums[..rows], &mut sc.p16, t);
            scores.iter_mut().zip(&sc.p16).for_each(|(v, &p)| *v = bf16::f32_of(p));
        } else {
            softmax_rows_unnormalized(scores, t, bias, &mut sc.sums[..rows]);
        }
        let out = &mut sc.out[..rows * d]; // (rows, D)
        gemm_f32_ex(out, d, scores, t, rows, &sc.v, Epilogue::default(), 1);
        finish_block(out, &sc.sums, s, bi, h, q0, ctx);
    }
}

/// Divides a block's context rows (rows, D) by their softmax sums and writes them to ctx.
fn finish_block(out: &[f32], sums: &[f32], s: &Shape, bi: usize, h: usize, q0: usize, ctx: Ctx) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    for (r, (o, &sum)) in out.chunks_exact(d).zip(sums).enumerate() {
        // SAFETY: row (bi, q0 + r), columns of head h: this task's alone, inside ctx by the caller's assert.
        unsafe { ctx.write_scaled((bi * t + q0 + r) * c + h * d, o, 1.0 / sum) };
    }
}

/// `head_attention` on AMX-BF16: K and V packed once per head in bf16, then per block of query rows Q and P
/// converted to bf16 and both products on tiles.
fn head_attention_amx(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, ctx: Ctx, sc: &mut Scratch) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let ld = 3 * c;
    let seq = &qkv[bi * t * ld..(bi + 1) * t * ld]; // (T, 3C)
    sc.kb.repack(&seq[c + h * d..], t, d, ld, 1); // B (D, T) of the scores
    sc.vb.repack(&seq[2 * c + h * d..], d, t, 1, ld); // B (T, D) of the context
    let (d32, t32) = (sc.kb.k_pad(), sc.vb.k_pad());
    let block = QUERY_BLOCK.min(t);
    let block16 = block.next_multiple_of(bf16::TILE);
    sc.reserve(block, t, d);
    // Rows past a short block only feed output rows that are not stored; padding columns are zeroed per row.
    for (v, n) in [(&mut sc.q16, block16 * d32), (&mut sc.p16, block16 * t32)] {
        if v.len() < n {
            v.resize(n, 0);
        }
    }
    for q0 in (0..t).step_by(block) {
        let rows = block.min(t - q0);
        for (r, q16) in sc.q16.chunks_exact_mut(d32).take(rows).enumerate() {
            bf16::convert(&seq[(q0 + r) * ld + h * d..][..d], &mut q16[..d]);
            q16[d..].fill(0);
        }
        let scores = &mut sc.scores[..rows * t]; // (rows, T)
        bf16::gemm_bf16(scores, t, &sc.q16, d32, rows, &sc.kb);
        softmax_rows_bf16(scores, t, bias, &mut sc.sums[..rows], &mut sc.p16, t32);
        let out = &mut sc.out[..rows * d]; // (rows, D)
        bf16::gemm_bf16(out, d, &sc.p16, t32, rows, &sc.vb);
        finish_block(out, &sc.sums, s, bi, h, q0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_kernels::testdata::uniform;

    /// Largest |bf16 path - f32 path| of a context value, relative to max |V|: bf16 keeps 8 mantissa bits of Q,
    /// K, V and the probabilities (each off by at most 2^-9 relative).
    const BF16_VS_F32_BUDGET: f32 = 1e-2;
    /// AMX against the f32 kernels on the same bf16-rounded inputs: only the order of f32 sums differs.
    const AMX_VS_ROUNDED_BUDGET: f32 = 1e-6;

    /// ctx of every head, one task, through `attention` or directly through the non-AMX head function.
    fn run(qkv: &[f32], bias: &[f32], padded: &[bool], s: &Shape, how: &str) -> Vec<f32> {
        let (c, mut scratch) = (s.h * s.d, vec![Scratch::new()]);
        let mut ctx = vec![f32::NAN; s.b * s.t * c];
        let mut qkv = qkv.to_vec();
        match how {
            "f32" => attention(&qkv, bias, padded, s, Precision::Fp32, &mut ctx, &mut scratch),
            "bf16" => attention(&qkv, bias, padded, s, Precision::Bf16, &mut ctx, &mut scratch),
            _ => {
                // The fallback's numbers: rounded inputs, rounded probabilities, f32 kernels.
                qkv.iter_mut().for_each(|v| *v = bf16::round(*v));
                for bi in 0..s.b {
                    let b = if padded[bi] { &bias[bi * s.t..(bi + 1) * s.t] } else { &[][..] };
                    for h in 0..s.h {
                        head_attention(&qkv, b, s, bi, h, true, Ctx(ctx.as_mut_ptr()), &mut scratch[0]);
                    }
                }
            }
        }
        ctx
    }

    #[test]
    fn bf16_attention_matches_f32_and_its_fallback() {
        // T past one query block and not a multiple of 16 or 32; D not a multiple of 32; one padded sequence.
        for &(b, t, h, d) in &[(2, 77, 3, 32), (1, 130, 2, 24), (1, 5, 1, 64)] {
            let s = Shape { b, t, h, d };
            // Q carries 1/sqrt(D), as the model folds it into the query weights: scores of order 1.
            let c = h * d;
            let qkv: Vec<f32> =
                uniform(b * t * 3 * c, 7).iter().enumerate().map(|(i, v)| if i % (3 * c) < c { v * 2.0 / (d as f32).sqrt() } else { v * 2.0 }).collect();
            let mut bias = vec![0f32; b * t];
            bias[b * t - 3..].fill(-1e9);
            let padded: Vec<bool> = (0..b).map(|i| i == b - 1).collect();
            let exact = run(&qkv, &bias, &padded, &s, "f32");
            let bf16 = run(&qkv, &bias, &padded, &s, "bf16");
            let rounded = run(&qkv, &bias, &padded, &s, "rounded");
            let vmax = qkv.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / vmax;
            assert!(bf16.iter().all(|v| v.is_finite()), "b{b} t{t}: non-finite context");
            assert!(worst(&bf16, &exact) <= BF16_VS_F32_BUDGET, "b{b} t{t} d{d}: bf16 vs f32 {}", worst(&bf16, &exact));
            assert!(worst(&rounded, &exact) <= BF16_VS_F32_BUDGET, "b{b} t{t} d{d}: fallback vs f32 {}", worst(&rounded, &exact));
            if ops::ops().has_bf16_gemm() {
                let e = worst(&bf16, &rounded);
                assert!(e <= AMX_VS_ROUNDED_BUDGET, "b{b} t{t} d{d}: AMX vs fallback {e}");
            } else {
                assert!(bf16 == exact, "b{b} t{t} d{d}: without AMX-BF16, bf16 attention is the f32 path");
            }
        }
    }
}
