//! `shrink bench` on a decoder (a .gguf file), measured as llama-bench measures it: pp = a prompt of `pp` tokens
//! from an empty cache in one pass, tg = `tg` tokens decoded one at a time from an empty cache; tokens/s of each
//! as medians over the runs. Peak RSS is against what the weights and the cache must take.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use shrink_runtime::llama::{KvCache, KvFormat};

use crate::bench::{peak_rss_mb, reset_peak_rss};
use crate::decoder::Decoder;

#[derive(Debug, Serialize)]
pub struct DecoderBench {
    pub model: String,
    pub threads: usize,
    pub pp: usize,
    pub tg: usize,
    pub runs: usize,
    pub pp_tokens_per_s: f64,
    pub tg_tokens_per_s: f64,
    pub pp_runs_ms: Vec<f64>,
    pub tg_runs_ms: Vec<f64>,
    pub load_ms: f64,
    /// Peak RSS while loading, and while running (where the peak can be reset; else the whole process's).
    pub load_peak_rss_mb: f64,
    pub peak_rss_mb: f64,
    /// The weights as the runtime holds them (packed Linears, tables, norms).
    pub weights_mb: f64,
    /// The f32 keys and values of the longest sequence run (max(pp, tg) tokens).
    pub kv_cache_mb: f64,
    pub file_mb: f64,
    /// Whether a decode step's GEMVs run split over the threads (`Llama::tune_decode_threads`, measured at load).
    pub decode_split: bool,
}

/// In-vocabulary ids; timing does not depend on which.
fn ids(vocab: usize, n: usize) -> Vec<u32> {
    let mut s = 0x9E37_79B9u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s % vocab as u32
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

pub fn bench_decoder(path: &Path, pp: usize, tg: usize, runs: usize, warmup: usize, threads: usize, kv: KvFormat) -> Result<DecoderBench> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("cannot start worker threads")?;
    pool.install(|| {
        let start = Instant::now();
        let d = Decoder::open(path)?;
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let decode_split = d.llama.tune_decode_threads()?;
        // The load's peak apart; from here the peak is the runs' (weights, cache and buffers).
        let load_peak_rss_mb = peak_rss_mb();
        reset_peak_rss();
        let (llama, runs) = (&d.llama, runs.max(1));
        let (prompt, gen) = (ids(llama.cfg.v, pp), ids(llama.cfg.v, tg));
        let (mut pp_runs_ms, mut tg_runs_ms, mut kv_bytes) = (Vec::new(), Vec::new(), 0);
        let bar = shrink_io::events::bar(warmup + runs, "bench");
        for run in 0..warmup + runs {
            let s = Instant::now();
            let mut cache = KvCache::new(kv);
            llama.next_logits(&mut cache, &prompt)?;
            let pp_ms = s.elapsed().as_secs_f64() * 1e3;
            kv_bytes = kv_bytes.max(cache.bytes());
            let (mut cache, s) = (KvCache::new(kv), Instant::now());
            for &id in &gen {
                llama.next_logits(&mut cache, &[id])?;
            }
            kv_bytes = kv_bytes.max(cache.bytes());
            if run >= warmup {
                pp_runs_ms.push(pp_ms);
                tg_runs_ms.push(s.elapsed().as_secs_f64() * 1e3);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(DecoderBench {
            model: path.display().to_string(),
            threads,
            pp,
            tg,
            runs,
            pp_tokens_per_s: pp as f64 / (median(&pp_runs_ms) / 1e3),
            tg_tokens_per_s: tg as f64 / (median(&tg_runs_ms) / 1e3),
            pp_runs_ms,
            tg_runs_ms,
            load_ms,
            load_peak_rss_mb,
            peak_rss_mb: peak_rss_mb(),
            weights_mb: llama.bytes() as f64 / 1e6,
            kv_cache_mb: kv_bytes as f64 / 1e6,
            file_mb: std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6),
            decode_split,
        })
    })
}

pub fn render(r: &DecoderBench) -> String {
    format!(
        "model      {}\nshape      pp{} / tg{}, {} thread(s), {} runs\nprompt     {:.1} tokens/s (median)\n\
         generation {:.1} tokens/s (median), decode GEMVs {}\nload       {:.1} ms, peak RSS {:.1} MB\nmemory     peak RSS {:.1} MB while running; \
         weights in memory {:.1} MB, KV cache {:.1} MB (file {:.1} MB)\n",
        r.model, r.pp, r.tg, r.threads, r.runs, r.pp_tokens_per_s, r.tg_tokens_per_s,
        if r.decode_split { "split over the threads (faster here)" } else { "on one thread" },
        r.load_ms, r.load_peak_rss_mb, r.peak_rss_mb,
        r.weights_mb, r.kv_cache_mb, r.file_mb
    )
}
