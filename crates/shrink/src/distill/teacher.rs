//! The teacher's outputs, computed once per example in eval mode and kept for every epoch: the task output
//! (logits or mean-pooled embedding, f32, tiny) and, when hidden-state matching is on, the mapped layers'
//! hidden states of the real tokens only, in f16.

use anyhow::Result;
use half::f16;
use shrink_model::Bert;

use super::examples::Example;
use super::{forward, Task};
use crate::{progress, train};

/// Examples per teacher forward pass.
const TEACHER_BATCH: usize = 32;

pub struct Targets {
    /// (L) logits or (C) mean-pooled embedding per example.
    pub outputs: Vec<Vec<f32>>,
    /// Per example: (layers, n, C) hidden states of its n real tokens, for each teacher layer in `layers`; empty
    /// when not asked.
    pub hidden: Vec<Vec<f16>>,
    pub c: usize,
}

impl Targets {
    /// Runs `teacher` once over `examples`; `layers`: teacher layers whose outputs to keep (empty: none).
    pub fn compute(teacher: &Bert, task: Task, examples: &[Example], layers: &[usize]) -> Result<Self> {
        let c = teacher.config.hidden_size;
        let mut outputs = Vec::with_capacity(examples.len());
        let mut hidden = Vec::new();
        let pb = progress::bar(examples.len(), "teacher");
        for chunk in examples.chunks(TEACHER_BATCH) {
            let (ids, mask) = train::batch_of(&chunk.iter().map(|e| e.ids.as_slice()).collect::<Vec<_>>())?; // (B, T)
            let (out, hs) = forward(teacher, task, &ids, &mask, None, !layers.is_empty())?; // (B, L|C), [(B, T, C)]
            outputs.extend(out.to_vec2::<f32>()?);
            // hs[0] is the embedding output, hs[l + 1] layer l's.
            let kept: Vec<Vec<Vec<Vec<f32>>>> = layers.iter().map(|&l| hs[l + 1].to_vec3::<f32>()).collect::<candle_core::Result<_>>()?;
            for (i, e) in chunk.iter().enumerate().filter(|_| !layers.is_empty()) {
                let rows = kept.iter().flat_map(|h| h[i][..e.ids.len()].iter().flatten());
                hidden.push(rows.map(|&v| f16::from_f32(v)).collect());
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        Ok(Self { outputs, hidden, c })
    }

    /// Layer `slot`'s hidden states of the examples `batch`, zero-padded to `t` tokens. (B, T, C) row-major
    pub fn hidden_batch(&self, examples: &[Example], batch: &[usize], slot: usize, t: usize) -> Vec<f32> {
        let c = self.c;
        let mut out = vec![0f32; batch.len() * t * c];
        for (b, &j) in batch.iter().enumerate() {
            let n = examples[j].ids.len();
            let rows = &self.hidden[j][slot * n * c..(slot + 1) * n * c];
            out[b * t * c..b * t * c + n * c].iter_mut().zip(rows).for_each(|(o, v)| *o = v.to_f32());
        }
        out
    }
}
