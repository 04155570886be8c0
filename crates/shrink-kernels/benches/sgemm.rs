//! GFLOP/s of the packed f32 GEMM against the `gemm` crate on MiniLM's shapes, one thread, medians.
//! `cargo bench -p shrink-kernels --bench sgemm`

use std::time::Instant;

use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::gemm::{matmul_serial, Mat};
use shrink_kernels::isa::Isa;
use shrink_kernels::sgemm::{gemm_f32, PackedF32};

fn median_s(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for (m, k, n) in [(128, 384, 1152), (128, 384, 1536), (128, 1536, 384), (1, 384, 1536), (4096, 384, 1536)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut out = vec![0f32; m * n];
            let flop = 2.0 * (m * n * k) as f64;
            let reps = (2e10 / flop).clamp(3.0, 200.0) as usize;
            let peer = median_s(|| matmul_serial(&mut out, Mat::row_major(&x, m, k), Mat::row_major(&w, n, k).t(), false), reps);
            print!("m{m:5} k{k:5} n{n:5}  gemm-crate {:6.1} GFLOP/s", flop / peer / 1e9);
            for level in Isa::available() {
                let p = PackedF32::pack_for(level, &w, n, k);
                let s = median_s(|| gemm_f32(&mut out, &x, m, &p, Epilogue::default()), reps);
                print!("  {level:?} {:6.1}", flop / s / 1e9);
            }
            println!();
        }
        // The epilogue's GELU, per element, on an FFN-sized block.
        let x: Vec<f32> = (0..128 * 1536).map(|i| ((i * 7919) % 2000) as f32 / 250.0 - 4.0).collect();
        let mut y = x.clone();
        let s = median_s(|| shrink_kernels::activation::gelu(&x, &mut y), 50);
        println!("gelu {:.2} ns/element", s * 1e9 / x.len() as f64);
    });
}
