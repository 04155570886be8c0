// temporary: f32 GEMM time of one MiniLM layer's Linears at M = 128, weights distinct per layer (6 layers, as in a forward)
use std::time::Instant;
use shrink_kernels::sgemm::{gemm_f32, PackedF32};
use shrink_kernels::epilogue::Epilogue;
fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let m = 128;
        let shapes = [(384, 1152), (384, 384), (384, 1536), (1536, 384)];
        let layers: Vec<Vec<(PackedF32, usize)>> = (0..6).map(|l| shapes.iter().map(|&(k, n)| {
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 7 + l) % 13) as f32 * 0.01 - 0.06).collect();
            (PackedF32::pack(&w, n, k), k)
        }).collect()).collect();
        let x: Vec<f32> = (0..m * 1536).map(|i| (i % 11) as f32 * 0.1 - 0.5).collect();
        let mut out = vec![0f32; m * 1536];
        let mut t = vec![vec![]; 4];
        for _ in 0..60 {
            for l in &layers { for (i, (w, k)) in l.iter().enumerate() { let s = Instant::now(); gemm_f32(&mut out, &x[..m * k], m, w, Epilogue::default()); t[i].push(s.elapsed().as_secs_f64() * 1e3); } }
        }
        let mut line = String::new();
        for (i, t) in t.iter_mut().enumerate() { t.sort_by(f64::total_cmp); let (k, n) = shapes[i]; line += &format!(" k{k} n{n}: {:.0}", 2.0 * 128.0 * (k * n) as f64 / t[t.len() / 10] / 1e6); }
        println!("GFLOP/s p10{line}");
    });
}
