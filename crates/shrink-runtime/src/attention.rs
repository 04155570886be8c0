//! Self-attention on the fused QKV output, in blocks. One task takes one (sequence, head) at a time: it packs that
//! head's K and V once as GEMM panels, then for each block of query rows computes the scores (block x T), masks and
//! softmaxes them, and multiplies by V. No more than one block of scores per thread ever exists (never
//! B x H x T x T), and both products run on the packed f32 kernel.

use shrink_kernels::activation::softmax_rows_unnormalized;
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::isa;
use shrink_kernels::sgemm::{gemm_f32_ex, PackedF32};

/// Query rows per block: scores of one block stay in L1/L2.
const QUERY_BLOCK: usize = 64;

/// One thread's scratch, grown on first use and reused after.
pub struct Scratch {
    k: PackedF32,     // K of one head as a GEMM weight: (T, D)
    v: PackedF32,     // Vᵀ of one head: (D, T)
    scores: Vec<f32>, // (block, T)
    sums: Vec<f32>,   // (block): softmax denominators, applied to the D outputs rather than the T scores
    out: Vec<f32>,    // (block, D)
}

impl Scratch {
    pub fn new() -> Self {
        let level = isa::isa();
        Self { k: PackedF32::empty_narrow(level), v: PackedF32::empty_narrow(level), scores: Vec::new(), sums: Vec::new(), out: Vec::new() }
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
    /// SAFETY: `offset..offset + src.len()` is in bounds and written by no other task.
    unsafe fn write(self, offset: usize, src: &[f32]) {
        std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(offset), src.len());
    }
}

/// ctx (B*T, A) = softmax(Q·Kᵀ + mask_bias) · V per head, from qkv (B*T, 3A) laid out [Q | K | V] with heads side by
/// side (A = H·D, the layer's own head count: pruned layers have fewer), Q already scaled by 1/sqrt(D) (folded into its weights at load). mask_bias (B, T): 0 for real tokens, a
/// large negative for padding; `padded[b]` says whether sequence b has any. One task per scratch.
pub fn attention(qkv: &[f32], mask_bias: &[f32], padded: &[bool], s: &Shape, ctx: &mut [f32], scratch: &mut [Scratch]) {
    let (c, tasks) = (s.h * s.d, scratch.len().max(1));
    assert!(qkv.len() >= s.b * s.t * 3 * c && ctx.len() >= s.b * s.t * c && mask_bias.len() >= s.b * s.t);
    let items = s.b * s.h;
    let out = Ctx(ctx.as_mut_ptr());
    let run = |task: usize, sc: &mut Scratch| {
        for item in items * task / tasks..items * (task + 1) / tasks {
            let bi = item / s.h;
            let bias = if padded[bi] { &mask_bias[bi * s.t..(bi + 1) * s.t] } else { &[][..] };
            head_attention(qkv, bias, s, bi, item % s.h, out, sc);
        }
    };
    if tasks == 1 {
        run(0, &mut scratch[0]);
    } else {
        use rayon::prelude::*;
        scratch.par_iter_mut().enumerate().for_each(|(task, sc)| run(task, sc));
    }
}

/// Head h of sequence bi, block by block of query rows; `bias` (T) is empty when the sequence has no padding.
fn head_attention(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, ctx: Ctx, sc: &mut Scratch) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let ld = 3 * c;
    let seq = &qkv[bi * t * ld..(bi + 1) * t * ld]; // (T, 3C)
    let block = QUERY_BLOCK.min(t);
    if sc.scores.len() < block * t {
        sc.scores.resize(block * t, 0.0);
        sc.sums.resize(block, 0.0);
    }
    if sc.out.len() < block * d {
        sc.out.resize(block * d, 0.0);
    }
    sc.k.repack(&seq[c + h * d..], t, d, ld, 1);
    sc.v.repack(&seq[2 * c + h * d..], d, t, 1, ld);
    for q0 in (0..t).step_by(block) {
        let rows = block.min(t - q0);
        let scores = &mut sc.scores[..rows * t]; // (rows, T)
        gemm_f32_ex(scores, t, &seq[q0 * ld + h * d..], ld, rows, &sc.k, Epilogue::default(), 1);
        softmax_rows_unnormalized(scores, t, bias, &mut sc.sums[..rows]);
        let out = &mut sc.out[..rows * d]; // (rows, D)
        gemm_f32_ex(out, d, scores, t, rows, &sc.v, Epilogue::default(), 1);
        for (r, (o, &sum)) in out.chunks_exact_mut(d).zip(&sc.sums).enumerate() {
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
            // SAFETY: row (bi, q0 + r), columns of head h: this task's alone, inside ctx by the caller's assert.
            unsafe { ctx.write((bi * t + q0 + r) * c + h * d, o) };
        }
    }
}
