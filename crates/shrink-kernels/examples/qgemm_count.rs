//! Runs one int8 or int4 GEMM `reps` times at the level in use (`SHRINK_ISA`), on this thread: what
//! bench/arm-instructions.py counts under the emulator. The difference between two reps counts gives the
//! instructions of the GEMMs alone (activation quantization included), set-up cancelled.
//!
//! cargo run --release --example qgemm_count -- i8 128 384 1536 2

use shrink_kernels::qgemm::{gemm_i4, gemm_i8, Epilogue, PackedI4, PackedI8, QuantActs};
use shrink_kernels::testdata::uniform;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: qgemm_count i8|i4 M K N REPS";
    let [kind, m, k, n, reps] = <[String; 5]>::try_from(args).unwrap_or_else(|_| panic!("{usage}"));
    let num = |s: &str| s.parse::<usize>().unwrap_or_else(|_| panic!("{usage}: {s} is not a count"));
    let (m, k, n, reps) = (num(&m), num(&k), num(&n), num(&reps));
    let x = uniform(m * k, 1);
    let q: Vec<i8> = uniform(n * k, 2).iter().map(|v| (v * 7.0).round() as i8).collect();
    let mut out = vec![0f32; m * n];
    let mut acts = QuantActs::new();
    match kind.as_str() {
        "i8" => {
            let w = PackedI8::pack(&q, &vec![0.01; n], n, k);
            for _ in 0..reps {
                acts.quantize(&x, m, k);
                gemm_i8(&mut out, &acts, &w, Epilogue::default());
            }
        }
        "i4" => {
            let group = 32;
            let w = PackedI4::pack(&q, &vec![0.01; n * k / group], n, k, group);
            for _ in 0..reps {
                acts.quantize(&x, m, k);
                gemm_i4(&mut out, &acts, &w, Epilogue::default());
            }
        }
        _ => panic!("{usage}"),
    }
    // Keeps the work observable.
    println!("{}", out.iter().sum::<f32>());
}
