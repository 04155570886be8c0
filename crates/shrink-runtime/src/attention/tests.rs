//! Every variant against the dense masked reference (`reference.rs`), and the bf16 path against f32.

use super::*;
use shrink_format::schema::FeatureMap;
use shrink_kernels::bf16;
use shrink_kernels::testdata::uniform;

/// Largest |kernel - dense f64 reference| of a context value, relative to max |V|: f32 sums in another order, and
/// the online softmax's rescaling.
const F32_VS_REFERENCE_BUDGET: f32 = 2e-5;

/// QKV for (B, T, H, D) with Q scaled by 1/sqrt(D) as the model folds it in (scores of order 1; for linear attention
/// the values are what φ sees), the last sequence padded in its last `pad` positions.
fn inputs(s: &Shape, pad: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<bool>, Vec<bool>) {
    let (c, n) = (s.h * s.d, s.b * s.t);
    let qkv: Vec<f32> =
        uniform(n * 3 * c, seed).iter().enumerate().map(|(i, v)| if i % (3 * c) < c { v * 2.0 / (s.d as f32).sqrt() } else { v * 2.0 }).collect();
    let mut bias = vec![0f32; n];
    bias[n - pad..].fill(MASKED);
    let real: Vec<bool> = bias.iter().map(|&b| b == 0.0).collect();
    let padded: Vec<bool> = (0..s.b).map(|i| pad > 0 && i == s.b - 1).collect();
    (qkv, bias, real, padded)
}

#[test]
fn every_variant_matches_the_dense_masked_reference() {
    let elu = Kind::Linear { feature_map: FeatureMap::Elu };
    let cases = [
        // T past one key block (3 blocks of 512, the last short), with padding: the online softmax across blocks.
        (Shape { b: 1, t: 1100, h: 1, d: 32 }, Kind::Full, 5),
        (Shape { b: 2, t: 77, h: 3, d: 24 }, Kind::Full, 3),
        // Bands narrower and wider than a block, global tokens, bands reaching past both ends, padding in the band.
        (Shape { b: 2, t: 300, h: 2, d: 32 }, Kind::Sliding { window: 16, global: 0 }, 7),
        (Shape { b: 1, t: 700, h: 1, d: 32 }, Kind::Sliding { window: 128, global: 1 }, 20),
        (Shape { b: 1, t: 90, h: 2, d: 16 }, Kind::Sliding { window: 40, global: 3 }, 0),
        (Shape { b: 1, t: 50, h: 1, d: 32 }, Kind::Sliding { window: 200, global: 1 }, 4),
        (Shape { b: 1, t: 600, h: 1, d: 32 }, Kind::Sliding { window: 1, global: 70 }, 0),
        (Shape { b: 2, t: 333, h: 2, d: 32 }, elu, 9),
        (Shape { b: 1, t: 5, h: 1, d: 64 }, elu, 0),
    ];
    for (s, kind, pad) in cases {
        let (qkv, bias, real, padded) = inputs(&s, pad, 11);
        let want = reference::attention(&qkv, &real, &s, kind, None);
        let vmax = qkv.iter().fold(0f32, |m, v| m.max(v.abs()));
        for tasks in [1, 2] {
            let mut scratch: Vec<Scratch> = (0..tasks).map(|_| Scratch::new()).collect();
            let mut ctx = vec![f32::NAN; s.b * s.t * s.h * s.d];
            attention(&qkv, &bias, &padded, &s, kind, None, Precision::Fp32, &mut ctx, &mut scratch);
            let worst = ctx.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / vmax;
            assert!(ctx.iter().all(|v| v.is_finite()), "{kind:?} t{}: non-finite context", s.t);
            assert!(worst <= F32_VS_REFERENCE_BUDGET, "{kind:?} b{} t{} h{} d{} pad {pad}, {tasks} tasks: {worst}", s.b, s.t, s.h, s.d);
        }
    }
}

/// Hedgehog maps at random weights (H heads of D) against the reference's, through query and key blocks and
/// padding; T = 1 (one key) and T past two query blocks.
#[test]
fn hedgehog_feature_maps_match_the_dense_reference() {
    let kind = Kind::Linear { feature_map: FeatureMap::Hedgehog };
    for (s, pad) in [(Shape { b: 2, t: 150, h: 3, d: 32 }, 11), (Shape { b: 1, t: 1, h: 2, d: 16 }, 0), (Shape { b: 1, t: 70, h: 1, d: 64 }, 0)] {
        let (qkv, bias, real, padded) = inputs(&s, pad, 5);
        let (hd, dd) = (s.h * s.d, s.h * s.d * s.d);
        let w: Vec<f32> = uniform(2 * dd, 8).iter().map(|v| v * 2.0 / (s.d as f32).sqrt()).collect();
        let b = uniform(2 * hd, 9);
        let maps = FeatureMaps::new([&w[..dd], &w[dd..]], [b[..hd].to_vec(), b[hd..].to_vec()], s.d);
        let want = reference::attention(&qkv, &real, &s, kind, Some(&reference::Maps { w: [&w[..dd], &w[dd..]], b: [&b[..hd], &b[hd..]] }));
        let vmax = qkv.iter().fold(0f32, |m, v| m.max(v.abs()));
        for tasks in [1, 2] {
            let mut scratch: Vec<Scratch> = (0..tasks).map(|_| Scratch::new()).collect();
            let mut ctx = vec![f32::NAN; s.b * s.t * hd];
            attention(&qkv, &bias, &padded, &s, kind, Some(&maps), Precision::Fp32, &mut ctx, &mut scratch);
            let worst = ctx.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / vmax;
            assert!(worst <= F32_VS_REFERENCE_BUDGET, "t{} d{} pad {pad}, {tasks} tasks: {worst}", s.t, s.d);
        }
    }
}

#[test]
fn a_band_as_wide_as_the_sequence_is_full_attention() {
    let s = Shape { b: 1, t: 200, h: 2, d: 32 };
    let (qkv, bias, _, padded) = inputs(&s, 6, 3);
    let run = |kind| {
        let mut ctx = vec![0f32; s.b * s.t * s.h * s.d];
        attention(&qkv, &bias, &padded, &s, kind, None, Precision::Fp32, &mut ctx, &mut [Scratch::new()]);
        ctx
    };
    let (full, band) = (run(Kind::Full), run(Kind::Sliding { window: 199, global: 0 }));
    let worst = full.iter().zip(&band).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "{worst}");
    // A narrow band is not: the test above would pass for a kernel that ignored the window.
    let narrow = run(Kind::Sliding { window: 8, global: 0 });
    assert!(full.iter().zip(&narrow).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) > 1e-3);
}


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
        "f32" => attention(&qkv, bias, padded, s, Kind::Full, None, Precision::Fp32, &mut ctx, &mut scratch),
        "bf16" => attention(&qkv, bias, padded, s, Kind::Full, None, Precision::Bf16, &mut ctx, &mut scratch),
        _ => {
            // The fallback's numbers: rounded inputs, rounded probabilities, f32 kernels.
            qkv.iter_mut().for_each(|v| *v = bf16::round(*v));
            for bi in 0..s.b {
                let b = if padded[bi] { &bias[bi * s.t..(bi + 1) * s.t] } else { &[][..] };
                for h in 0..s.h {
                    blocked::head(&qkv, b, s, bi, h, None, true, Ctx(ctx.as_mut_ptr()), &mut scratch[0]);
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
