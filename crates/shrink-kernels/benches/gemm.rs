//! GOP/s (2 M N K / s) of the packed f32, int8 and int4 GEMMs at each ISA level against the `gemm` crate's f32, on
//! MiniLM's shapes, one thread, medians; and GELU's cost per value. `cargo bench -p shrink-kernels --bench gemm`

use std::time::Instant;

use shrink_kernels::gemm::{matmul_serial, Mat};
use shrink_kernels::ops;
use shrink_kernels::sgemm::{gemm_f32, PackedF32};
use shrink_kernels::spmm::{gemm_sparse, SparseF32};
use shrink_format::quant::{Int4Weight, Int8Weight};
use shrink_kernels::qgemm::{gemm_i4_on, gemm_i8_on, Epilogue, PackedI4, PackedI8, QuantActs};

/// (median, fastest) seconds of timed calls after a warm-up call, as many as fit in about 0.3 s (5 to 301). The
/// fastest is printed too: on a shared machine it is the better estimate of what the kernel can do.
fn time_s(mut f: impl FnMut()) -> (f64, f64) {
    let s = Instant::now();
    f();
    let reps = ((0.3 / s.elapsed().as_secs_f64()) as usize).clamp(5, 301);
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[reps / 2], t[0])
}

/// Uniform in [-1, 1): splitmix64 of (seed, index), so products of two arrays sum like random data.
fn data(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i + (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        println!("GOP/s (2 M N K / s) median/fastest, one thread. f32 = packed f32 (sgemm/); i8 = int8 x int8;");
        println!("+gelu = with bias and GELU;");
        println!("i4gG = int8 x int4, group G. quantize = the activations' per-row quantization, microseconds.");
        for (m, k, n) in
            [(128, 384, 1536), (128, 1536, 384), (16, 384, 1536), (16, 1536, 384), (1, 384, 1536), (1, 1536, 384)]
        {
            // Weights at 3 / sqrt(K) make the outputs (GELU's inputs) O(1), as in a network: GELU's cost depends on
            // them (inputs beyond ~13 take slow denormal paths inside erf).
            let w: Vec<f32> = data(n * k, 2).iter().map(|v| v * 3.0 / (k as f32).sqrt()).collect();
            let (x, bias) = (data(m * k, 1), data(n, 3));
            let mut out = vec![0f32; m * n]; // m x n
            let ops = 2.0 * (m * n * k) as f64;
            let gops = |(med, best): (f64, f64)| format!("{:5.0}/{:<5.0}", ops / med / 1e9, ops / best / 1e9);
            let f32_t =
                time_s(|| matmul_serial(&mut out, Mat::row_major(&x, m, k), Mat::row_major(&w, n, k).t(), false));
            let mut a = QuantActs::new();
            let (quant_med, quant_best) = time_s(|| a.quantize(&x, m, k));
            println!(
                "m{m:4} k{k:5} n{n:5}   f32 gemm-crate {}   quantize {:.1}/{:.1} us",
                gops(f32_t),
                quant_med * 1e6,
                quant_best * 1e6
            );
            let e8 = Int8Weight::encode(&w, n, k);
            let w8 = PackedI8::pack(&e8.q, &e8.scale, n, k);
            let w4: Vec<(usize, PackedI4)> = [32, 128]
                .into_iter()
                .map(|g| {
                    let e = Int4Weight::encode(&w, n, k, g).unwrap();
                    (g, PackedI4::pack(&e.values(), &e.scale, n, k, g))
                })
                .collect();
            let gelu = Epilogue { bias: Some(&bias), gelu: true, residual: None };
            for level in ops::available() {
                print!("    {:7}", level.isa.name());
                let wf = PackedF32::pack_for(level, &w, n, k);
                print!("  f32 {}", gops(time_s(|| gemm_f32(&mut out, &x, m, &wf, Epilogue::default()))));
                for (name, ep) in [("i8", Epilogue::default()), ("i8+gelu", gelu)] {
                    print!("  {name} {}", gops(time_s(|| gemm_i8_on(level, &mut out, &a, &w8, ep))));
                }
                for (g, w4) in &w4 {
                    let t = time_s(|| gemm_i4_on(level, &mut out, &a, w4, Epilogue::default()));
                    print!("  i4g{g} {}", gops(t));
                }
                println!();
            }
        }
        // The sparse kernel against the dense packed one on the same pruned weights: where sparsity pays.
        println!("sparse f32 (spmm/) / dense packed f32 time, best level, by the fraction of weights kept:");
        for (m, k, n) in [(128, 384, 1536), (128, 1536, 384), (16, 384, 1536)] {
            let (x, mut out, mut xt) = (data(m * k, 1), vec![0f32; m * n], Vec::new());
            print!("m{m:4} k{k:5} n{n:5}");
            for density in [0.5f32, 0.25, 0.1, 0.05] {
                let keep = data(n * k, 5);
                let w: Vec<f32> = data(n * k, 2).iter().zip(&keep).map(|(&v, &r)| if (r + 1.0) / 2.0 < density { v } else { 0.0 }).collect();
                let (dense, sparse) = (PackedF32::pack(&w, n, k), SparseF32::from_dense(&w, n, k));
                let d = time_s(|| gemm_f32(&mut out, &x, m, &dense, Epilogue::default())).0;
                let s = time_s(|| gemm_sparse(&mut out, &x, m, &sparse, Epilogue::default(), &mut xt)).0;
                print!("   kept {:4.2}: {:.2}x", density, s / d);
            }
            println!();
        }
        // The epilogue's GELU alone, per value, on an FFN-sized block.
        let x: Vec<f32> = data(128 * 1536, 4).iter().map(|v| v * 4.0).collect();
        let mut y = x.clone();
        let (med, best) = time_s(|| shrink_kernels::activation::gelu(&x, &mut y));
        println!("gelu {:.2}/{:.2} ns per value", med * 1e9 / x.len() as f64, best * 1e9 / x.len() as f64);
    });
}
