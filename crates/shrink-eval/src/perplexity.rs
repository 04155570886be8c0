//! `shrink eval --task perplexity`: a decoder's perplexity on a text file, as llama.cpp's `llama-perplexity` and
//! transformers' strided recipe compute it. The file is tokenized whole without special tokens (and cut to its first
//! `max_tokens` when given). Windows of `ctx` tokens start every `stride`; each scores the tokens no earlier window
//! scored, never its own first (it has no context there). With stride = ctx the windows do not overlap: the golden
//! protocol. `compare` runs a base model on the same windows and adds the mean KL(base || model) over the scored
//! tokens and the fraction whose top-1 token is the base's.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shrink_io::events;

use crate::decoder::Decoder;
use shrink_runtime::llama::{KvFormat, Llama};

pub struct Job {
    pub model: PathBuf,
    pub data: PathBuf,
    pub ctx: usize,
    pub stride: usize,
    pub max_tokens: Option<usize>,
    pub compare: Option<PathBuf>,
    /// The model's KV cache (the base's stays f32).
    pub kv: KvFormat,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub task: &'static str,
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token, nats.
    pub nll: f64,
    pub tokens_scored: usize,
    pub windows: usize,
    pub ctx: usize,
    pub stride: usize,
    /// Tokens run through the model per second (every window's, scored or not).
    pub tokens_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_perplexity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_divergence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_top1: Option<f64>,
}

/// One window: tokens `start..end` run, the targets `first..end` scored (target p from the logits of p - 1).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    start: usize,
    end: usize,
    first: usize,
}

fn windows(n: usize, ctx: usize, stride: usize) -> Vec<Window> {
    let (mut out, mut scored_to) = (Vec::new(), 1);
    let mut start = 0;
    while scored_to < n {
        let end = (start + ctx).min(n);
        out.push(Window { start, end, first: scored_to.max(start + 1) });
        scored_to = end;
        start += stride;
    }
    out
}

/// log softmax of one row of logits, in f64.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b })
}

/// Perplexity of `llama` on `ids` in windows of `ctx` that do not overlap (the golden protocol, as `run` with
/// stride = ctx), for searches that score models held in memory.
pub fn perplexity_of(llama: &Llama, ids: &[u32], ctx: usize) -> Result<f64> {
    let (v, mut nll, mut n) = (llama.cfg.v, 0f64, 0usize);
    for w in windows(ids.len(), ctx, ctx) {
        let logits = llama.forward(&ids[w.start..w.end], None)?; // (T, V)
        for p in w.first..w.end {
            nll -= log_softmax(&logits[(p - 1 - w.start) * v..][..v])[ids[p] as usize];
            n += 1;
        }
    }
    Ok((nll / n.max(1) as f64).exp())
}

pub fn run(job: &Job) -> Result<Report> {
    if job.ctx < 2 || job.stride == 0 || job.stride > job.ctx {
        bail!("--ctx {} --stride {}: need ctx >= 2 and 1 <= stride <= ctx", job.ctx, job.stride);
    }
    let mut model = Decoder::open(&job.model)?;
    model.llama.kv = job.kv;
    let base = job.compare.as_deref().map(Decoder::open).transpose()?;
    if let Some(b) = &base {
        if b.llama.cfg.v != model.llama.cfg.v {
            bail!("--compare {}: vocabulary of {}, {} has {}", b.path.display(), b.llama.cfg.v, job.model.display(), model.llama.cfg.v);
        }
    }
    let text = std::fs::read_to_string(&job.data).with_context(|| format!("{}: cannot read the text", job.data.display()))?;
    let mut ids = model.encode(&text, &job.data.display())?;
    ids.truncate(job.max_tokens.unwrap_or(usize::MAX));
    if ids.len() < 2 {
        bail!("{}: {} tokens; perplexity needs at least 2", job.data.display(), ids.len());
    }
    let plan = windows(ids.len(), job.ctx, job.stride);
    let v = model.llama.cfg.v;
    let bar = events::bar(plan.len(), "perplexity");
    let (start, mut run_tokens) = (Instant::now(), 0);
    let (mut nll, mut base_nll, mut kl, mut same, mut scored) = (0f64, 0f64, 0f64, 0usize, 0usize);
    for w in &plan {
        let window = &ids[w.start..w.end];
        let logits = model.llama.forward(window, None)?; // (T, V)
        run_tokens += window.len();
        let base_logits = base.as_ref().map(|b| b.llama.forward(window, None)).transpose()?;
        for p in w.first..w.end {
            let row = &logits[(p - 1 - w.start) * v..][..v];
            let lp = log_softmax(row);
            nll -= lp[ids[p] as usize];
            if let Some(bl) = &base_logits {
                let brow = &bl[(p - 1 - w.start) * v..][..v];
                let blp = log_softmax(brow);
                base_nll -= blp[ids[p] as usize];
                kl += blp.iter().zip(&lp).map(|(b, m)| b.exp() * (b - m)).sum::<f64>();
                same += usize::from(argmax(brow) == argmax(row));
            }
            scored += 1;
        }
        bar.set_message(format!("ppl {:.3}", (nll / scored as f64).exp()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = scored as f64;
    let perplexity = (nll / n).exp();
    // A NaN or infinite score would print like a measurement.
    if !perplexity.is_finite() {
        bail!("{}: perplexity is {perplexity} (non-finite logits)", job.model.display());
    }
    let compared = base.is_some();
    Ok(Report {
        task: "perplexity",
        perplexity,
        nll: nll / n,
        tokens_scored: scored,
        windows: plan.len(),
        ctx: job.ctx,
        stride: job.stride,
        tokens_per_s: run_tokens as f64 / start.elapsed().as_secs_f64(),
        reference_perplexity: compared.then(|| (base_nll / n).exp()),
        kl_divergence: compared.then_some(kl / n),
        same_top1: compared.then_some(same as f64 / n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: usize, end: usize, first: usize) -> Window {
        Window { start, end, first }
    }

    #[test]
    fn windows_score_every_token_once() {
        // Non-overlapping: each window's first token goes unscored.
        assert_eq!(windows(10, 4, 4), vec![w(0, 4, 1), w(4, 8, 5), w(8, 10, 9)]);
        // Strided: every token after the first is scored exactly once, with at least ctx - stride of context.
        assert_eq!(windows(10, 4, 2), vec![w(0, 4, 1), w(2, 6, 4), w(4, 8, 6), w(6, 10, 8)]);
        assert_eq!(windows(3, 8, 8), vec![w(0, 3, 1)]);
        assert_eq!(windows(8, 4, 4).len(), 2);
    }

    #[test]
    fn log_softmax_is_normalised() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, 1000.0]);
        assert!((lp.iter().map(|x| x.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(lp[3].abs() < 1e-12 && lp.iter().all(|x| x.is_finite()));
    }
}
