//! The int8 / int4 GEMM's suite for one level's table (`kernel_tests!`: bit-exact against the references), and the
//! level-independent tests of quantization and packing.

use super::*;
use shrink_format::quant::{Int4Weight, Int8Weight};

/// Quantization rounds to the nearest step; x * (1 / scale) instead of x / scale may move a value a few ulps
/// across a rounding midpoint, so the bound is half a step plus this fraction of a step.
const ROUND_SLACK: f32 = 1e-4;
/// gemm_i8 against the f32 product of the original gaussian data, relative Frobenius error: two uniform
/// rounding errors of step ~6 sigma / 255 (activation rows) and ~6 sigma / 254 (weight rows): measured 0.0099.
const I8_FROB_TOL: f64 = 1.5e-2;
/// The same for int4 weights ([-7, 7], step max|w| / 7 over a group: ~2.1 sigma for 32, ~2.6 sigma for 128),
/// whose rounding dominates: measured 0.098 and 0.118.
const I4_FROB_TOL: [(usize, f64); 2] = [(32, 0.12), (128, 0.14)];

use crate::testdata::uniform;

/// int8 per channel (q n x k, scale n) by the format's reference encoder.
fn quantize_per_channel(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let e = Int8Weight::encode(w, n, k);
    (e.q, e.scale)
}

/// int4 (q n x k in [-7, 7], scale n x k/group) by the format's reference encoder.
fn quantize_int4(w: &[f32], n: usize, k: usize, group: usize) -> (Vec<i8>, Vec<f32>) {
    let e = Int4Weight::encode(w, n, k, group).unwrap();
    (e.values(), e.scale)
}

/// Standard normal by Box-Muller on `uniform`.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let u = uniform(2 * n, seed);
    u.chunks_exact(2)
        .map(|p| {
            let (a, b) = ((p[0] + 1.0) * 0.5 + 1e-7, (p[1] + 1.0) * 0.5);
            (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
        })
        .collect()
}

/// Activations with awkward rows: offset (all positive), all negative, all zero, constant.
fn acts(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut x = uniform(m * k, seed);
    for (i, row) in x.chunks_exact_mut(k).enumerate() {
        match i % 5 {
            1 => row.iter_mut().for_each(|v| *v = *v * 3.0 + 3.5),
            2 => row.iter_mut().for_each(|v| *v = *v * 0.01 - 0.02),
            3 if i > 5 => row.fill(0.0),
            4 if i > 5 => row.fill(1.25),
            _ => {}
        }
    }
    x
}

fn epilogues<'a>(bias: &'a [f32], residual: &'a [f32]) -> [Epilogue<'a>; 5] {
    let none = Epilogue::default();
    [
        none,
        Epilogue { bias: Some(bias), ..none },
        Epilogue { gelu: true, ..none },
        Epilogue { residual: Some(residual), ..none },
        Epilogue { bias: Some(bias), gelu: true, residual: Some(residual) },
    ]
}

#[test]
fn activations_dequantize_within_half_a_step() {
    for (m, k) in [(1, 1), (3, 5), (17, 33), (10, 384)] {
        let x = acts(m, k, 1);
        let mut a = QuantActs::new();
        a.quantize(&x, m, k);
        assert_eq!((a.rows(), a.cols(), a.k_pad % 4), (m, k, 0));
        for (i, (xr, dr)) in x.chunks_exact(k).zip(a.dequantize().chunks_exact(k)).enumerate() {
            let bound = a.scale[i] * (0.5 + ROUND_SLACK);
            for (v, d) in xr.iter().zip(dr) {
                assert!((v - d).abs() <= bound, "{m}x{k} row {i}: {v} -> {d}, scale {}", a.scale[i]);
            }
            let pad = &a.data[i * a.k_pad + k..(i + 1) * a.k_pad];
            assert!(pad.iter().all(|&q| q as i32 == a.zero[i]), "padding holds the zero point");
            if xr.iter().all(|&v| v == 0.0) {
                assert!(dr.iter().all(|&d| d == 0.0));
            }
        }
    }
}

/// Each block of 32 from its own range: within half of its own step, and an outlier in one block leaves the
/// other blocks of its row as fine as they would be alone.
#[test]
fn block_activations_dequantize_within_half_their_step() {
    let (m, k) = (3, 96);
    let mut x = acts(m, k, 21);
    x[40] = 500.0; // row 0, block 1
    let mut a = QuantActs::new();
    a.quantize_blocks(&x, m, k, 32);
    assert_eq!(a.group(), 32);
    let got = a.dequantize();
    for r in 0..m {
        for b in 0..k / 32 {
            let block = &x[r * k + 32 * b..r * k + 32 * b + 32];
            let (lo, hi) = block.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let step = (hi - lo) / 255.0;
            for (i, &v) in block.iter().enumerate() {
                let e = (got[r * k + 32 * b + i] - v).abs();
                assert!(e <= 0.5 * step * 1.001 + 1e-6, "row {r} block {b} value {i}: error {e}, step {step}");
            }
        }
    }
    let mut per_row = QuantActs::new();
    per_row.quantize(&x, m, k);
    let err = |d: &[f32], c: std::ops::Range<usize>| c.map(|i| (d[i] - x[i]).abs()).fold(0f32, f32::max);
    assert!(err(&got, 0..32) * 50.0 < err(&per_row.dequantize(), 0..32), "block 0 of row 0 gained nothing from blocks");
}

#[test]
fn fixed_and_column_scaled_activations() {
    let (m, k) = (7, 37);
    let x = acts(m, k, 9);
    let c: Vec<f32> = (0..k).map(|i| 0.25 + (i % 5) as f32 * 0.5).collect();
    let xc: Vec<f32> = x.chunks_exact(k).flat_map(|r| r.iter().zip(&c).map(|(v, c)| v * c)).collect();
    // A column multiplier is the same as quantizing x * c.
    let (mut a, mut b) = (QuantActs::new(), QuantActs::new());
    a.quantize_with(&x, m, k, ActQuant { col: Some(&c), ..ActQuant::default() });
    b.quantize(&xc, m, k);
    assert_eq!((&a.data, &a.zero), (&b.data, &b.zero));
    // Fixed parameters: every row uses them, values inside the range within half a step, outside clipped.
    let (s, z) = (0.02f32, 100);
    a.quantize_with(&x, m, k, ActQuant { fixed: Some((s, z)), ..ActQuant::default() });
    assert!(a.scale.iter().all(|&v| v == s) && a.zero.iter().all(|&v| v == z));
    let (lo, hi) = (-(z as f32) * s, (255 - z) as f32 * s);
    for (v, d) in x.iter().zip(a.dequantize()) {
        let want = v.clamp(lo, hi);
        assert!((want - d).abs() <= s * (0.5 + ROUND_SLACK), "{v} -> {d} with range [{lo}, {hi}]");
    }
}

#[test]
fn quantize_reuses_its_buffers() {
    let mut a = QuantActs::new();
    a.quantize(&acts(17, 33, 2), 17, 33);
    let ptrs = (a.data.as_ptr(), a.scale.as_ptr(), a.zero.as_ptr());
    a.quantize(&acts(3, 5, 3), 3, 5);
    a.quantize(&acts(17, 33, 4), 17, 33);
    assert_eq!(ptrs, (a.data.as_ptr(), a.scale.as_ptr(), a.zero.as_ptr()));
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits(), "{what}: element {i}: {g} vs reference {w}");
    }
}

// Every level does the reference's integer sums exactly and its float operations in the same order, so the
// outputs are bit-identical (no error budget needed).
pub(crate) fn i8_matches_reference(ops: &Ops) {
    let isa = ops.isa;
    // AMX: m 22 and 59 end in tiles of 6 and 11 real rows (the other rows padding), 20 in a VNNI group of 4.
    // Block 0: one activation scale per row; 32: per block of 32 (decoders), where K allows.
    let cases = shapes(&[1, 3, 17, 20, 22, 59, 128], &[1, 5, 33, 384, 1536], &[1, 7, 16, 33, 384]).into_iter().flat_map(|(m, k, n)| {
        [0, 32].into_iter().filter(move |&b| k % 32 == 0 || b == 0).map(move |b| (m, k, n, b))
    });
    for (m, k, n, block) in cases {
        let mut a = QuantActs::new();
        match block {
            0 => a.quantize(&acts(m, k, 7), m, k),
            b => a.quantize_blocks_on(ops, &acts(m, k, 7), m, k, b),
        }
        let (q, s) = quantize_per_channel(&gaussian(n * k, 8), n, k);
        let w = match block {
            0 => PackedI8::pack(&q, &s, n, k),
            b => PackedI8::pack(&q, &s, n, k).with_block_sums(b),
        };
        let (bias, residual) = (uniform(n, 9), uniform(m * n, 10));
        for (e, ep) in epilogues(&bias, &residual).into_iter().enumerate() {
            let mut want = vec![0.0; m * n];
            gemm_i8_ref(&mut want, &a, &q, &s, n, ep);
            let mut got = vec![f32::NAN; m * n];
            gemm_i8_on(ops, &mut got, &a, &w, ep);
            assert_same(&got, &want, &format!("i8 {isa:?} {m}x{k}x{n} blocks {block} epilogue {e}"));
        }
    }
}

pub(crate) fn i4_matches_reference(ops: &Ops) {
    let isa = ops.isa;
    for group in INT4_GROUPS {
        let ks: Vec<usize> = [32, 64, 128, 384, 1536].into_iter().filter(|k| k % group == 0).collect();
        for ((m, k, n), blocks) in shapes(&[1, 3, 17, 128], &ks, &[1, 7, 16, 33, 384]).into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let mut a = QuantActs::new();
            match blocks {
                false => a.quantize(&acts(m, k, 11), m, k),
                true => a.quantize_blocks_on(ops, &acts(m, k, 11), m, k, group),
            }
            let (q, s) = quantize_int4(&gaussian(n * k, 12), n, k, group);
            let w = PackedI4::pack(&q, &s, n, k, group);
            let (bias, residual) = (uniform(n, 13), uniform(m * n, 14));
            for (e, ep) in epilogues(&bias, &residual).into_iter().enumerate() {
                let mut want = vec![0.0; m * n];
                gemm_i4_ref(&mut want, &a, &q, &s, n, group, ep);
                let mut got = vec![f32::NAN; m * n];
                gemm_i4_on(ops, &mut got, &a, &w, ep);
                assert_same(&got, &want, &format!("i4 g{group} {isa:?} {m}x{k}x{n} blocks {blocks} epilogue {e}"));
            }
        }
    }
}

/// Products at the ends of the grids, where a u8 x i8 pair sum leaves i16 (2 * 255 * 127 > 32767): activation
/// bytes all 255, all 0 or alternating (rows of +1, of -1, of +-1), against weights all at +-127 (+-7 for int4),
/// alternating, or in sign pairs.
pub(crate) fn extremes_match_reference(ops: &Ops) {
    let (m, k, n) = (6, 1536, 64);
    let x: Vec<f32> = (0..m * k)
        .map(|i| match (i / k, i % k) {
            (0, _) => 1.0,
            (1, _) => -1.0,
            (2, p) | (5, p) => if p % 2 == 0 { 1.0 } else { -1.0 },
            (3, p) => if p % 4 < 2 { 1.0 } else { -1.0 },
            (_, p) => (p % 7) as f32 - 3.0,
        })
        .collect();
    let mut a = QuantActs::new();
    a.quantize(&x, m, k);
    assert!(a.data[..k].iter().all(|&b| b == 255) && a.data[a.k_pad..a.k_pad + k].iter().all(|&b| b == 0));
    let pattern = |j: usize, p: usize, top: i8| match j % 4 {
        0 => top,
        1 => -top,
        2 => if p % 2 == 0 { top } else { -top },
        _ => if p % 4 < 2 { -top } else { top },
    };
    let q8: Vec<i8> = (0..n * k).map(|i| pattern(i / k, i % k, 127)).collect();
    let s8: Vec<f32> = (0..n).map(|j| 1e-3 * (1 + j % 3) as f32).collect();
    let (mut want, mut got) = (vec![0.0; m * n], vec![f32::NAN; m * n]);
    gemm_i8_ref(&mut want, &a, &q8, &s8, n, Epilogue::default());
    gemm_i8_on(ops, &mut got, &a, &PackedI8::pack(&q8, &s8, n, k), Epilogue::default());
    assert_same(&got, &want, &format!("i8 {:?} extremes", ops.isa));
    let q4: Vec<i8> = (0..n * k).map(|i| pattern(i / k, i % k, 7)).collect();
    let s4 = vec![0.01; n * k / 32];
    gemm_i4_ref(&mut want, &a, &q4, &s4, n, 32, Epilogue::default());
    gemm_i4_on(ops, &mut got, &a, &PackedI4::pack(&q4, &s4, n, k, 32), Epilogue::default());
    assert_same(&got, &want, &format!("i4 {:?} extremes", ops.isa));
}

#[test]
fn scaled_columns_and_dequantized_int4() {
    let (m, k, n, group) = (5, 64, 40, 32);
    let mut a = QuantActs::new();
    a.quantize(&acts(m, k, 21), m, k);
    let w = gaussian(n * k, 22);
    let e = Int4Weight::encode(&w, n, k, group).unwrap();
    let (q, s) = (e.values(), e.scale.clone());
    // The decoded weight is the product the GEMM computes: its f32 GEMM on dequantized acts matches.
    let wd = e.decode();
    assert!(wd.iter().zip(&w).all(|(d, w)| (d - w).abs() <= s.iter().fold(0f32, |a, v| a.max(*v)) * 0.5 + 1e-6));
    let (mut base, mut scaled) = (vec![0.0; m * n], vec![0.0; m * n]);
    gemm_i4(&mut base, &a, &PackedI4::pack(&q, &s, n, k, group), Epilogue::default());
    let mut packed = PackedI4::pack(&q, &s, n, k, group);
    packed.scale_columns(3..20, 0.25); // a power of two: exact
    gemm_i4(&mut scaled, &a, &packed, Epilogue::default());
    for (i, (b, c)) in base.iter().zip(&scaled).enumerate() {
        let want = if (3..20).contains(&(i % n)) { b * 0.25 } else { *b };
        assert_eq!(*c, want, "element {i}");
    }
    let mut ref_out = vec![0.0; m * n];
    let ad = a.dequantize();
    crate::sgemm::gemm_f32_ref(&mut ref_out, &ad, m, &wd, n, k, Epilogue::default());
    for (g, r) in base.iter().zip(&ref_out) {
        assert!((g - r).abs() <= 1e-3 * (1.0 + r.abs()), "{g} vs {r}");
    }
}

/// Every (m, k, n) of the three lists.
fn shapes(ms: &[usize], ks: &[usize], ns: &[usize]) -> Vec<(usize, usize, usize)> {
    ms.iter().flat_map(|&m| ks.iter().flat_map(move |&k| ns.iter().map(move |&n| (m, k, n)))).collect()
}

fn frobenius_error(got: &[f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> f64 {
    let (mut err, mut norm) = (0f64, 0f64);
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
            err += (got[i * n + j] as f64 - want).powi(2);
            norm += want * want;
        }
    }
    (err / norm).sqrt()
}

#[test]
fn close_to_f32_product_of_original_data() {
    let (m, k, n) = (64, 384, 96);
    let (x, w) = (gaussian(m * k, 15), gaussian(n * k, 16));
    let mut a = QuantActs::new();
    a.quantize(&x, m, k);
    let mut y = vec![0.0; m * n];
    let (q, s) = quantize_per_channel(&w, n, k);
    gemm_i8(&mut y, &a, &PackedI8::pack(&q, &s, n, k), Epilogue::default());
    let e = frobenius_error(&y, &x, &w, m, k, n);
    assert!(e < I8_FROB_TOL, "int8 relative Frobenius error {e}");
    for (group, tol) in I4_FROB_TOL {
        let (q, s) = quantize_int4(&w, n, k, group);
        gemm_i4(&mut y, &a, &PackedI4::pack(&q, &s, n, k, group), Epilogue::default());
        let e = frobenius_error(&y, &x, &w, m, k, n);
        assert!(e < tol, "int4 group {group} relative Frobenius error {e}");
    }
}

pub(crate) fn threads_match_single_thread(ops: &Ops) {
    let (m, k, n) = (128, 384, 400);
    let mut a = QuantActs::new();
    a.quantize(&acts(m, k, 17), m, k);
    let w = gaussian(n * k, 18);
    let (q8, s8) = quantize_per_channel(&w, n, k);
    let (q4, s4) = quantize_int4(&w, n, k, 64);
    let (w8, w4) = (PackedI8::pack(&q8, &s8, n, k), PackedI4::pack(&q4, &s4, n, k, 64));
    let (bias, residual) = (uniform(n, 19), uniform(m * n, 20));
    let ep = Epilogue { bias: Some(&bias), gelu: true, residual: Some(&residual) };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (mut y8, mut y4) = (vec![0.0; m * n], vec![0.0; m * n]);
            gemm_i8_on(ops, &mut y8, &a, &w8, ep);
            gemm_i4_on(ops, &mut y4, &a, &w4, ep);
            (y8, y4)
        })
    };
    let (one, two, isa) = (run(1), run(2), ops.isa);
    assert_same(&two.0, &one.0, &format!("i8 {isa:?} 2 threads"));
    assert_same(&two.1, &one.1, &format!("i4 {isa:?} 2 threads"));
    // A decode step's GEMV (one row, activations in blocks of 32), split as `set_parallel_min_macs` allows where
    // that measures faster. The threshold is process-wide; results never depend on it, only speed.
    let (k, n) = (576, 1536);
    let mut a = QuantActs::new();
    a.quantize_blocks_on(ops, &acts(1, k, 21), 1, k, 32);
    let w = gaussian(n * k, 22);
    let (q8, s8) = quantize_per_channel(&w, n, k);
    let (q4, s4) = quantize_int4(&w, n, k, 32);
    let (w8, w4) = (PackedI8::pack(&q8, &s8, n, k).with_block_sums(32), PackedI4::pack(&q4, &s4, n, k, 32));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (mut y8, mut y4) = (vec![0.0; n], vec![0.0; n]);
            gemm_i8_on(ops, &mut y8, &a, &w8, Epilogue::default());
            gemm_i4_on(ops, &mut y4, &a, &w4, Epilogue::default());
            (y8, y4)
        })
    };
    let one = run(1);
    super::set_parallel_min_macs(1 << 16);
    let two = run(2);
    super::set_parallel_min_macs(super::PARALLEL_MIN_MACS);
    assert_same(&two.0, &one.0, &format!("i8 {isa:?} decode GEMV split"));
    assert_same(&two.1, &one.1, &format!("i4 {isa:?} decode GEMV split"));
}

/// Every level's row quantizer gives the generic one's bytes, scales and zero points (dynamic, column-scaled and
/// fixed), on rows short of a vector and past several.
pub(crate) fn quantize_matches_generic(ops: &Ops) {
    let generic = crate::ops::generic();
    for (m, k) in [(1, 1), (3, 5), (17, 33), (10, 384), (5, 1536)] {
        let x = acts(m, k, 31);
        let c: Vec<f32> = (0..k).map(|i| 0.25 + (i % 5) as f32 * 0.5).collect();
        for p in [ActQuant::default(), ActQuant { col: Some(&c), ..ActQuant::default() }, ActQuant { fixed: Some((0.02, 100)), col: None }] {
            let (mut got, mut want) = (QuantActs::new(), QuantActs::new());
            got.quantize_on(ops, &x, m, k, p);
            want.quantize_on(generic, &x, m, k, p);
            let rows = m * got.k_pad;
            assert_eq!((&got.data[..rows], &got.scale, &got.zero), (&want.data[..rows], &want.scale, &want.zero), "{:?} {m}x{k}", ops.isa);
        }
    }
}

#[test]
#[should_panic(expected = "not a multiple of the group")]
fn int4_rejects_k_off_the_group() {
    PackedI4::pack(&[0; 96], &[0.0], 1, 96, 64);
}

/// Counts heap allocations of the current thread.
struct Counting;
thread_local!(static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
// SAFETY: forwards to the system allocator.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        std::alloc::System.dealloc(p, l)
    }
}
#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn single_thread_calls_do_not_allocate() {
    let (m, k, n) = (17, 384, 100);
    let x = acts(m, k, 21);
    let w = gaussian(n * k, 22);
    let (q8, s8) = quantize_per_channel(&w, n, k);
    let (q4, s4) = quantize_int4(&w, n, k, 128);
    let (w8, w4) = (PackedI8::pack(&q8, &s8, n, k), PackedI4::pack(&q4, &s4, n, k, 128));
    let (bias, residual) = (uniform(n, 23), uniform(m * n, 24));
    let ep = Epilogue { bias: Some(&bias), gelu: true, residual: Some(&residual) };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let (mut a, mut y) = (QuantActs::new(), vec![0.0; m * n]);
        let mut calls = || {
            a.quantize(&x, m, k);
            gemm_i8(&mut y, &a, &w8, ep);
            gemm_i4(&mut y, &a, &w4, ep);
            for ops in crate::ops::available() {
                gemm_i8_on(ops, &mut y, &a, &w8, ep);
                gemm_i4_on(ops, &mut y, &a, &w4, ep);
            }
        };
        calls(); // grows the buffers, builds the tables
        let before = ALLOCS.with(|c| c.get());
        calls();
        assert_eq!(ALLOCS.with(|c| c.get()), before, "heap allocations in single-thread calls");
    });
}

#[test]
fn a_column_reads_back_as_the_format_decodes_it() {
    let (n, k) = (37, 64);
    let w = gaussian(n * k, 31);
    let i8w = Int8Weight::encode(&w, n, k);
    let i4w = Int4Weight::encode(&w, n, k, 32).unwrap();
    let (p8, p4) = (PackedI8::pack(&i8w.q, &i8w.scale, n, k), PackedI4::pack(&i4w.values(), &i4w.scale, n, k, 32));
    let (d8, d4) = (i8w.decode(), i4w.decode());
    let mut col = vec![f32::NAN; k];
    for j in [0, 1, 15, 16, 36] {
        p8.column(j, &mut col);
        assert_eq!(col, d8[j * k..][..k], "int8 column {j}");
        p4.column(j, &mut col);
        assert_eq!(col, d4[j * k..][..k], "int4 column {j}");
    }
}
