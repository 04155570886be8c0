//! `shrink bench`: latency, throughput, peak memory and load time of one model on the runtime.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use shrink_runtime::Engine;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub seqs_per_s: f64,
    pub load_ms: f64,
    /// Peak resident set of this process (weights, buffers, and the mapped pages touched): the larger of the next two.
    pub peak_rss_mb: f64,
    /// Peak while loading, and peak while running the forward passes (from the RSS after loading).
    pub load_peak_rss_mb: f64,
    pub run_peak_rss_mb: f64,
    /// Resident after loading, before the first forward pass: run_peak - loaded is what the passes added (buffers,
    /// kernel staging, attention scratch), the memory that grows with B x T.
    pub loaded_rss_mb: f64,
    /// Packed weights and tables the engine holds (a mapped table counts).
    pub weights_mb: f64,
    pub file_mb: f64,
    pub runs_ms: Vec<f64>,
}

/// Peak RSS so far of this process image: `VmHWM`, which exec resets. `ru_maxrss` would not do: Linux carries it
/// over fork and exec, so a bench started by a trainer reported the trainer's peak.
pub fn peak_rss_mb() -> f64 {
    status_kib("VmHWM:").map_or_else(max_rss_mb, |kib| kib / 1024.0)
}

/// Resident set now (`VmRSS`); 0 where there is no /proc.
pub fn rss_mb() -> f64 {
    status_kib("VmRSS:").map_or(0.0, |kib| kib / 1024.0)
}

fn status_kib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
}

/// Restarts `VmHWM` from the current RSS (Linux's clear_refs 5), so a later `peak_rss_mb` is the peak since; where
/// that is not possible the peak stays the process's.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Where there is no /proc: the kernel's accounting, KiB on Linux and the BSDs.
fn max_rss_mb() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// A B x T batch of in-vocabulary ids ([CLS] .. [SEP], no padding): timing does not depend on which tokens.
fn batch_ids(vocab: usize, b: usize, t: usize) -> Vec<u32> {
    let mut s = 0x2545_F491u32;
    (0..b * t)
        .map(|i| match i % t {
            0 => 101,
            j if j == t - 1 => 102,
            _ => {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Past the special and unused ids of a BERT vocabulary, when it is large enough to have them.
                let lo = 1000.min(vocab as u32 / 2);
                lo + s % (vocab as u32 - lo)
            }
        })
        .collect()
}

/// `shrink bench`: `model` (folder or hub id) loaded on the runtime and timed at batch `b`, `t` tokens.
pub fn bench_model(model: &str, b: usize, t: usize, runs: usize, warmup: usize, threads: usize) -> Result<BenchReport> {
    let dir = shrink_model::resolve_model(model)?;
    let opts = shrink_io::model::engine_options(threads, Some(t));
    bench(&dir, || Engine::load(&dir, opts), b, t, runs, warmup)
}

pub fn bench(dir: &Path, load: impl FnOnce() -> Result<Engine>, b: usize, t: usize, runs: usize, warmup: usize) -> Result<BenchReport> {
    let start = Instant::now();
    let mut engine = load()?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let (load_peak_rss_mb, loaded_rss_mb) = (peak_rss_mb(), rss_mb());
    reset_peak_rss();
    // Checks B x T and its memory before the ids of that many tokens exist.
    engine.reserve(b, t).context("--batch / --seq")?;
    let ids = batch_ids(engine.config.vocab_size, b, t);
    let mask = vec![1u32; b * t];
    for _ in 0..warmup {
        engine.forward(&ids, &mask, b, t)?;
    }
    let pb = shrink_io::events::bar(runs, "bench");
    let mut runs_ms = Vec::new();
    runs_ms.try_reserve_exact(runs.max(1)).map_err(|_| anyhow!("--runs {runs}: too many timings to hold"))?;
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        engine.forward(&ids, &mask, b, t)?;
        runs_ms.push(s.elapsed().as_secs_f64() * 1e3);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut sorted = runs_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = sorted[sorted.len() / 2];
    let p90_ms = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
    let run_peak_rss_mb = peak_rss_mb();
    let file_mb = std::fs::metadata(dir.join(shrink_format::folder::WEIGHTS_FILE)).map_or(0.0, |m| m.len() as f64 / 1e6);
    Ok(BenchReport {
        model: dir.display().to_string(),
        batch: b,
        seq: t,
        threads: engine.threads(),
        runs: runs_ms.len(),
        median_ms,
        p90_ms,
        seqs_per_s: b as f64 / (median_ms / 1e3),
        load_ms,
        peak_rss_mb: load_peak_rss_mb.max(run_peak_rss_mb),
        load_peak_rss_mb,
        run_peak_rss_mb,
        loaded_rss_mb,
        weights_mb: engine.weight_bytes() as f64 / 1e6,
        file_mb,
        runs_ms,
    })
}

pub fn render(r: &BenchReport) -> String {
    format!(
        "model      {}\nshape      batch {} x {} tokens, {} thread(s), {} runs\nlatency    median {:.2} ms, p90 {:.2} ms\n\
         throughput {:.1} sequences/s\nload       {:.1} ms\nmemory     peak RSS {:.1} MB (loading {:.1}, running {:.1}: {:.1} above the {:.1} after loading), \
         weights in memory {:.1} MB (file {:.1} MB)\n",
        r.model, r.batch, r.seq, r.threads, r.runs, r.median_ms, r.p90_ms, r.seqs_per_s, r.load_ms, r.peak_rss_mb, r.load_peak_rss_mb,
        r.run_peak_rss_mb, r.run_peak_rss_mb - r.loaded_rss_mb, r.loaded_rss_mb, r.weights_mb, r.file_mb
    )
}
