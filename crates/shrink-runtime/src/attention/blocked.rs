//! Full and sliding-window attention of one head, flash-style: K and V packed once, then for each block of query
//! rows an online softmax over key blocks (`softmax_rows_online`): per key block the scores (rows, keys), their
//! exps against the running row max, the outputs so far rescaled by exp(old max - new max), and P·V added in. One
//! key block of scores per thread, never (rows, T) at long T. Sliding visits only the keys of its band, plus the
//! global tokens'; the global tokens' own rows attend to every key.

use std::ops::Range;

use shrink_kernels::activation::{softmax_rows_bf16, softmax_rows_online};
use shrink_kernels::bf16;
use shrink_kernels::sgemm::gemm_f32_block;

use super::{finish_block, Ctx, Scratch, Shape, MASKED};

/// Query rows per block of full attention: its scores against one key block stay in L2.
pub(crate) const QUERY_BLOCK: usize = 64;
/// Keys per block of full attention (a multiple of every level's panel width). At T up to this, one block: the plain
/// softmax, exactly.
pub(crate) const KEY_BLOCK: usize = 512;
/// Query rows per block of sliding attention: a block of r rows needs r + 2w keys, so fewer rows waste less of the
/// band (32 rows at w = 128: 257 of 288 keys used).
pub(crate) const BAND_QUERY_BLOCK: usize = 32;

/// Head h of sequence bi; `bias` (T) is empty when the sequence has no padding; `band` = Some((w, g)) for sliding
/// attention with window w and g global tokens. `emulate` (full attention, T <= KEY_BLOCK, tests only): the
/// probabilities are the bf16 path's (`softmax_rows_bf16`), the AMX path's numbers on the f32 kernels.
#[allow(clippy::too_many_arguments)]
pub(super) fn head(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, band: Option<(usize, usize)>, emulate: bool, ctx: Ctx, sc: &mut Scratch) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let ld = 3 * c;
    let seq = &qkv[bi * t * ld..(bi + 1) * t * ld]; // (T, 3C)
    sc.k.repack(&seq[c + h * d..], t, d, ld, 1);
    sc.v.repack(&seq[2 * c + h * d..], d, t, 1, ld);
    let nr = sc.k.panel_width();
    let all = (0..t).step_by(KEY_BLOCK).map(|k0| k0..(k0 + KEY_BLOCK).min(t));
    assert!(!emulate || t <= KEY_BLOCK, "the bf16 emulation takes T <= {KEY_BLOCK}");
    let q = Rows { seq, ld, h, d, bias };
    // Rows that attend to every key: all of them for full attention, the global tokens' for sliding.
    let everywhere = band.map_or(t, |(_, g)| g.min(t));
    for q0 in (0..everywhere).step_by(QUERY_BLOCK) {
        let rows = q0..(q0 + QUERY_BLOCK).min(everywhere);
        attend(&q, rows.clone(), all.clone(), None, emulate, sc);
        finish_block(&sc.out[..rows.len() * d], d, &sc.sums, s, bi, h, q0, ctx);
    }
    let Some((w, g)) = band else { return };
    for q0 in (everywhere..t).step_by(BAND_QUERY_BLOCK) {
        let rows = q0..(q0 + BAND_QUERY_BLOCK).min(t);
        // The band's keys from a panel boundary, and the global keys before it in a block of their own.
        let lo = q0.saturating_sub(w) / nr * nr;
        let hi = (rows.end + w).min(t);
        let blocks = [0..g.min(lo), lo..hi].into_iter().filter(|b| !b.is_empty());
        attend(&q, rows.clone(), blocks, Some((w, g)), false, sc);
        finish_block(&sc.out[..rows.len() * d], d, &sc.sums, s, bi, h, q0, ctx);
    }
}

/// One head's view of a sequence: Q of row i at `seq[i * ld + h * d..][..d]`.
struct Rows<'a> {
    seq: &'a [f32],
    ld: usize,
    h: usize,
    d: usize,
    bias: &'a [f32],
}

/// Unnormalized context of query `rows` over key `blocks` into `sc.out` (rows, D), softmax sums into `sc.sums`.
/// `band` masks keys outside |i - j| <= w but the first g.
fn attend(
    q: &Rows, rows: Range<usize>, blocks: impl Iterator<Item = Range<usize>> + Clone, band: Option<(usize, usize)>, emulate: bool, sc: &mut Scratch,
) {
    let (m, d) = (rows.len(), q.d);
    let widest = blocks.clone().map(|b| b.len()).max().unwrap_or(0);
    sc.reserve(m, widest, d);
    sc.max[..m].fill(f32::NEG_INFINITY);
    sc.sums[..m].fill(0.0);
    for (i, cols) in blocks.enumerate() {
        let n = cols.len();
        let scores = &mut sc.scores[..m * n]; // (rows, keys)
        gemm_f32_block(scores, n, &q.seq[rows.start * q.ld + q.h * d..], q.ld, m, &sc.k, cols.clone(), 0..d, false);
        if let Some((w, g)) = band {
            mask_band(scores, n, rows.start, cols.clone(), w, g);
        }
        let bias = if q.bias.is_empty() { &[][..] } else { &q.bias[cols.clone()] };
        if emulate {
            // The AMX path's probabilities (bf16 exps), widened back for the f32 kernel.
            if sc.p16.len() < m * n {
                sc.p16.resize(m * n, 0);
            }
            softmax_rows_bf16(scores, n, bias, &mut sc.sums[..m], &mut sc.p16, n);
            scores.iter_mut().zip(&sc.p16).for_each(|(v, &p)| *v = bf16::f32_of(p));
        } else {
            softmax_rows_online(scores, n, bias, &mut sc.max[..m], &mut sc.sums[..m], &mut sc.alpha[..m]);
        }
        let out = &mut sc.out[..m * d]; // (rows, D)
        if i > 0 {
            for (o, &a) in out.chunks_exact_mut(d).zip(&sc.alpha[..m]).filter(|(_, &a)| a != 1.0) {
                o.iter_mut().for_each(|v| *v *= a);
            }
        }
        gemm_f32_block(out, d, scores, n, m, &sc.v, 0..d, cols.clone(), i > 0);
    }
}

/// Sets the scores of keys outside row i's band [i - w, i + w] to `MASKED`, except the first `g` keys (global).
/// `scores` is (rows from `q0`, the keys `cols`).
fn mask_band(scores: &mut [f32], n: usize, q0: usize, cols: Range<usize>, w: usize, g: usize) {
    for (r, row) in scores.chunks_exact_mut(n).enumerate() {
        let i = q0 + r;
        let (lo, hi) = (i.saturating_sub(w).clamp(cols.start, cols.end), (i + w + 1).clamp(cols.start, cols.end));
        let before = g.clamp(cols.start, lo)..lo; // keys j < g stay visible
        row[before.start - cols.start..before.end - cols.start].fill(MASKED);
        row[hi - cols.start..].fill(MASKED);
    }
}

/// `head` for full attention on AMX-BF16: K and V packed once per head in bf16, then per block of query rows Q and
/// P converted to bf16 and both products on tiles, against every key at once (the scores of one block, O(T)).
pub(super) fn head_amx(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, ctx: Ctx, sc: &mut Scratch) {
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
        finish_block(out, d, &sc.sums, s, bi, h, q0, ctx);
    }
}
