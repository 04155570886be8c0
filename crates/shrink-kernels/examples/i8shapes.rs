// temporary: int8 GEMM time of MiniLM's Linears at M = 128, 6 layers of distinct weights (as in a forward)
use std::time::Instant;
use shrink_kernels::qgemm::{gemm_i8, quantize_per_channel, PackedI8, QuantActs, Epilogue};
fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let m = 128;
        let shapes = [(384, 1152), (384, 384), (384, 1536), (1536, 384)];
        let layers: Vec<Vec<(PackedI8, usize, usize)>> = (0..6).map(|l| shapes.iter().map(|&(k, n)| {
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 7 + l) % 13) as f32 * 0.01 - 0.06).collect();
            let (q, s) = quantize_per_channel(&w, n, k);
            (PackedI8::pack(&q, &s, n, k), k, n)
        }).collect()).collect();
        let x: Vec<f32> = (0..m * 1536).map(|i| (i % 11) as f32 * 0.1 - 0.5).collect();
        let bias = vec![0.1f32; 1536];
        let mut qa = [QuantActs::new(), QuantActs::new()];
        qa[0].quantize(&x[..m * 384], m, 384);
        qa[1].quantize(&x[..m * 1536], m, 1536);
        let mut out = vec![0f32; m * 1536];
        for gelu in [false, true] {
            let mut t = vec![vec![]; 4];
            for _ in 0..100 {
                for l in &layers { for (i, (w, k, _)) in l.iter().enumerate() {
                    let ep = Epilogue { bias: Some(&bias), gelu: gelu && i == 2, residual: None };
                    let s = Instant::now(); gemm_i8(&mut out, &qa[(*k == 1536) as usize], w, ep); t[i].push(s.elapsed().as_secs_f64() * 1e6); } }
            }
            let mut line = String::new();
            let mut tot = 0.0;
            for (i, t) in t.iter_mut().enumerate() { t.sort_by(f64::total_cmp); let (k, n) = shapes[i]; let p = t[t.len() / 10]; tot += p * 6.0; line += &format!(" k{k} n{n}: {:.0}us {:.0}GOP/s;", p, 2.0 * 128.0 * (k * n) as f64 / p / 1e3); }
            println!("gelu {gelu} p10{line} x6 layers = {:.2} ms", tot / 1e3);
        }
        let mut ts = vec![];
        for _ in 0..100 { let s = Instant::now(); for _ in 0..6 { qa[0].quantize(&x[..m * 384], m, 384); qa[0].quantize(&x[..m * 384], m, 384); qa[0].quantize(&x[..m * 384], m, 384); qa[1].quantize(&x[..m * 1536], m, 1536); } ts.push(s.elapsed().as_secs_f64() * 1e3); }
        ts.sort_by(f64::total_cmp);
        println!("quantize all 24 inputs: {:.2} ms", ts[10]);
    });
}
