//! The next token from a decoder's logits: greedy (the largest, the first of equals), or drawn at a temperature from
//! the top-k and then top-p (nucleus) set, renormalised, as transformers orders its warpers. Seeded, so a seed gives
//! the same text every run.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// 0: greedy. Logits are divided by it before the softmax.
    pub temperature: f32,
    /// Only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Only the most likely tokens whose probabilities first reach p together (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Self = Self { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 };

    /// The flags' numbers; a NaN or negative one would pick garbage.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!("--temperature {}: must be a finite number >= 0 (0 = greedy)", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p {}: must be in (0, 1] (1 = off)", self.top_p);
        }
        Ok(())
    }

    fn greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

pub struct Sampler {
    s: Sampling,
    state: u64,
    /// (probability, token) of the candidates, reused across steps.
    cand: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(s: Sampling) -> Result<Self> {
        s.check()?;
        Ok(Self { s, state: s.seed, cand: Vec::new() })
    }

    /// The token to emit after `logits` (V).
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.s.greedy() || logits.len() < 2 {
            return argmax(logits);
        }
        let t = self.s.temperature;
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        self.cand.clear();
        self.cand.extend(logits.iter().enumerate().map(|(i, &x)| (((x - max) / t).exp(), i as u32)));
        let by_prob = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if self.s.top_k > 0 && self.s.top_k < self.cand.len() {
            self.cand.select_nth_unstable_by(self.s.top_k - 1, by_prob);
            self.cand.truncate(self.s.top_k);
        }
        self.cand.sort_unstable_by(by_prob);
        if self.s.top_p < 1.0 {
            let total: f32 = self.cand.iter().map(|c| c.0).sum();
            // The smallest prefix whose mass reaches p; the token that crosses it stays in.
            let (mut mass, mut keep) = (0f32, self.cand.len());
            for (i, c) in self.cand.iter().enumerate() {
                mass += c.0 / total;
                if mass >= self.s.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
        }
        let kept: f32 = self.cand.iter().map(|c| c.0).sum();
        let mut u = self.uniform() as f32 * kept;
        for &(p, id) in &self.cand {
            if u < p {
                return id;
            }
            u -= p;
        }
        // Rounding left u a hair past the last candidate.
        self.cand.last().map_or(0, |c| c.1)
    }

    /// Uniform in [0, 1): splitmix64's next value, top 53 bits.
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the largest logit, the first of equals.
pub fn argmax(logits: &[f32]) -> u32 {
    logits.iter().enumerate().fold(0, |b, (i, &x)| if x > logits[b] { i } else { b }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws of a seeded stream against the exact probabilities: 4 standard errors of 20000 draws.
    const DRAWS: usize = 20_000;

    fn freq(s: Sampling, logits: &[f32]) -> Vec<f64> {
        let mut smp = Sampler::new(s).unwrap();
        let mut n = vec![0usize; logits.len()];
        for _ in 0..DRAWS {
            n[smp.pick(logits) as usize] += 1;
        }
        n.into_iter().map(|c| c as f64 / DRAWS as f64).collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            let se = (w * (1.0 - w) / DRAWS as f64).sqrt();
            assert!((g - w).abs() <= 4.0 * se + 1e-9, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn draws_follow_the_softmax_at_the_temperature_and_the_cuts() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let soft = |t: f64, keep: usize| {
            let e: Vec<f64> = logits.iter().enumerate().map(|(i, &x)| if i < keep { (x as f64 / t).exp() } else { 0.0 }).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect::<Vec<_>>()
        };
        let at = |temperature, top_k, top_p| Sampling { temperature, top_k, top_p, seed: 7 };
        close(&freq(at(1.0, 0, 1.0), &logits), &soft(1.0, 4));
        close(&freq(at(0.5, 0, 1.0), &logits), &soft(0.5, 4));
        close(&freq(at(1.0, 2, 1.0), &logits), &soft(1.0, 2));
        // At T = 1 the probabilities are 0.644, 0.237, 0.087, 0.032: p = 0.85 keeps the first two (0.881 together).
        close(&freq(at(1.0, 0, 0.85), &logits), &soft(1.0, 2));
        close(&freq(at(1.0, 0, 0.5), &logits), &soft(1.0, 1));
    }

    #[test]
    fn greedy_cases_and_seeds_are_deterministic() {
        let logits = [0.5f32, 3.0, 3.0, -2.0];
        assert_eq!(argmax(&logits), 1, "the first of equals");
        for s in [Sampling::GREEDY, Sampling { top_k: 1, temperature: 2.0, ..Sampling::GREEDY }] {
            let mut smp = Sampler::new(s).unwrap();
            assert!((0..50).all(|_| smp.pick(&logits) == 1));
        }
        let run = |seed| {
            let mut smp = Sampler::new(Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed }).unwrap();
            (0..64).map(|_| smp.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        for bad in [Sampling { temperature: -1.0, ..Sampling::GREEDY }, Sampling { temperature: f32::NAN, ..Sampling::GREEDY }, Sampling { top_p: 0.0, ..Sampling::GREEDY }, Sampling { top_p: 1.5, ..Sampling::GREEDY }] {
            assert!(Sampler::new(bad).is_err(), "{bad:?}");
        }
    }
}
