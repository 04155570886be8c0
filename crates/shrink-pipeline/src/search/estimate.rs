//! Seconds a stage or a measurement will take, predicted from the teacher's measured latency (1 x seq on one
//! thread) and the structure's compute. Only `--dry-run` and the budget check use these; every trial's real time
//! is recorded beside its estimate.

use crate::recipe::Stage;
use crate::search::space::Arch;

/// A training row (forward + backward + update) costs this many 1-thread inference passes (measured: a 16 x 128
/// step of MiniLM takes 2.24 s on one Zen 4 thread, a 1 x 128 pass 28 ms).
const TRAIN_PASSES: f64 = 5.0;
/// Starting a `shrink` process and loading a small model.
const OVERHEAD_S: f64 = 3.0;

pub struct Cost {
    /// Teacher latency at 1 x seq on one thread, ms.
    pub teacher_ms: f64,
    pub threads: usize,
    pub train_rows: usize,
    pub dev_rows: usize,
    pub arch: Arch,
    /// Measured / predicted seconds of training on this machine, once a training stage has been timed (1 before).
    pub train_scale: f64,
    /// A decoder's search: `teacher_ms` is per generated token, and the rows are tokens of the texts.
    pub decoder: bool,
}

/// A decoder runs a prompt this many times faster per token than it generates (SmolLM2 on Zen 5: pp128 1197,
/// tg64 162 tokens/s).
const PREFILL_SPEEDUP: f64 = 7.0;
/// GPTQ + AWQ seconds per layer of SmolLM2's shape (576 x 1536 FFN; measured 210 s for 30 layers on 2 threads).
const GPTQ_S_PER_LAYER: f64 = 7.0;
/// Calibration tokens a decoder's quantize runs (its --calib-tokens default) and held-out tokens its mixed search
/// scores (--dev-tokens).
const CALIB_TOKENS: f64 = 8192.0;
const MIXED_DEV_TOKENS: f64 = 2048.0;

impl Cost {
    /// Seconds of `rows` passes of a model with `compute` x the teacher's, training when `train`.
    fn passes(&self, rows: usize, compute: f64, train: bool) -> f64 {
        let speedup = (self.threads.max(1) as f64).powf(0.4);
        rows as f64 * self.teacher_ms / 1000.0 * compute * if train { TRAIN_PASSES } else { 1.0 } / speedup
    }

    fn int(s: &Stage, k: &str, default: f64) -> f64 {
        s.params.get(k).and_then(|v| v.as_integer().map(|i| i as f64).or(v.as_float())).unwrap_or(default)
    }

    /// Seconds of running `tokens` through the decoder as prompts.
    fn prefill(&self, tokens: f64) -> f64 {
        tokens * self.teacher_ms / 1000.0 / PREFILL_SPEEDUP / (self.threads.max(1) as f64).powf(0.6)
    }

    /// A decoder's quantize: calibration, GPTQ and AWQ per layer, and the mixed search's perplexity passes (one
    /// short window per site, then about 8 of bisection).
    fn decoder_quantize(&self, s: &Stage) -> f64 {
        let calib = if s.params.contains_key("calib") { self.prefill(CALIB_TOKENS) } else { 0.0 };
        let shape = (self.arch.hidden * self.arch.ffn) as f64 / (576.0 * 1536.0);
        let gptq = if s.params.contains_key("gptq") { GPTQ_S_PER_LAYER * shape * self.arch.layers as f64 } else { 0.0 };
        let mixed = if s.params.contains_key("max-ppl-increase") { self.prefill(MIXED_DEV_TOKENS * (self.arch.layers as f64 / 2.0 + 8.0)) } else { 0.0 };
        OVERHEAD_S + calib + gptq + mixed
    }

    /// `s` run on a model of `compute` x the teacher's; returns (seconds, compute of its output).
    pub fn stage(&self, s: &Stage, compute: f64) -> (f64, f64) {
        if self.decoder {
            return (self.decoder_quantize(s), compute);
        }
        let epochs = Self::int(s, "epochs", 1.0);
        let train = self.passes(self.train_rows, 1.0, true) * self.train_scale;
        match s.command.as_str() {
            "finetune" => (OVERHEAD_S + epochs * train * compute, compute),
            "distill" => {
                let layers = Self::int(s, "student-layers", 3.0) / self.arch.layers as f64;
                let width = Self::int(s, "hidden", self.arch.hidden as f64) / self.arch.hidden as f64;
                let out = compute * layers * width;
                (OVERHEAD_S + self.passes(self.train_rows, compute, false) + epochs * train * out, out)
            }
            "prune" => {
                let (h, f) = (s.params.get("heads").and_then(|v| v.as_float()).unwrap_or(0.0), s.params.get("ffn").and_then(|v| v.as_float()).unwrap_or(0.0));
                let share = 4.0 * self.arch.hidden as f64 / (4.0 * self.arch.hidden as f64 + 2.0 * self.arch.ffn as f64);
                let depth = 1.0 - Self::int(s, "layers", 0.0) / self.arch.layers as f64;
                let out = compute * depth * (share * (1.0 - h) + (1.0 - share) * (1.0 - f));
                let score = self.passes(256, compute, true);
                (OVERHEAD_S + score + self.passes(self.train_rows, compute, false) + epochs * train * out, out)
            }
            // Copies or relabels weights; the compute of the layers it converts changes with T (not modelled).
            "trim-vocab" | "attention" => (OVERHEAD_S, compute),
            // A teacher forward per batch, then a backward through the converted layers' attention only.
            "attention-transfer" => (OVERHEAD_S + epochs * (self.passes(self.train_rows, compute, false) + 0.2 * train * compute), compute),
            "quantize" => {
                let calib = if s.params.contains_key("calib") { self.passes(256, compute, false) } else { 0.0 };
                let gptq = if s.params.contains_key("gptq") { 10.0 * compute } else { 0.0 };
                // --max-drop measures each of the 4 sites per layer on its dev subset.
                let mixed = if s.params.contains_key("max-drop") { 4.0 * self.arch.layers as f64 * self.passes(self.dev_rows, compute, false) } else { 0.0 };
                (OVERHEAD_S + calib + gptq + mixed, compute)
            }
            _ => (OVERHEAD_S + epochs * train * compute, compute),
        }
    }

    /// Training seconds `stage` took per predicted second, for `train_scale`.
    pub fn calibrate(&mut self, stage: &Stage, seconds: f64) {
        let predicted = self.stage(stage, 1.0).0 - OVERHEAD_S;
        if predicted > 1.0 && seconds > OVERHEAD_S {
            self.train_scale *= (seconds - OVERHEAD_S) / predicted;
        }
    }

    /// Measuring a model of `compute`: dev scored, then timed (20 runs and warm-up).
    pub fn measure(&self, compute: f64) -> f64 {
        if self.decoder {
            // Perplexity on dev, then 6 runs of a 128-token prompt and 64 generated tokens.
            return 2.0 * OVERHEAD_S + self.prefill(self.dev_rows as f64) + 6.0 * (self.prefill(128.0) + 64.0 * self.teacher_ms / 1000.0);
        }
        2.0 * OVERHEAD_S + self.passes(self.dev_rows, compute, false) + 25.0 * self.teacher_ms * compute / 1000.0
    }
}
