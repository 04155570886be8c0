//! The one teacher cache: the teacher's outputs, computed once per example in eval mode and kept for every epoch: the task output
//! (logits or mean-pooled embedding, f32, tiny) and, when hidden-state matching is on, the mapped layers'
//! hidden states of the real tokens only, in f16; for attention matching, the last layer's queries and keys of the
//! real tokens (f16, 2 x n x C: a quarter of the (H, n, n) maps at 128 tokens), from which each batch rebuilds the
//! teacher's attention distributions.

use anyhow::Result;
use candle_core::Tensor;
use half::f16;
use shrink_model::{tokenizer, Bert};
use shrink_runtime::Engine;

use super::examples::Example;
use super::{forward, Task};
use crate::train;
use shrink_io::events;

/// Examples per teacher forward pass.
const TEACHER_BATCH: usize = 32;

pub struct Targets {
    /// (L) logits or (C) mean-pooled embedding per example.
    pub outputs: Vec<Vec<f32>>,
    /// Per example: (layers, n, C) hidden states of its n real tokens, for each teacher layer in `layers`; empty
    /// when not asked.
    pub hidden: Vec<Vec<f16>>,
    /// Per example: (2, n, C) queries then keys of the last layer; empty when not asked.
    pub attention: Vec<Vec<f16>>,
    pub c: usize,
}

impl Targets {
    /// Runs `teacher` once over `examples`; `layers`: teacher layers whose outputs to keep (empty: none);
    /// `attention`: keep the last layer's queries and keys.
    pub fn compute(teacher: &Bert, task: Task, examples: &[Example], layers: &[usize], attention: bool) -> Result<Self> {
        let c = teacher.config.hidden_size;
        let mut outputs = Vec::with_capacity(examples.len());
        let (mut hidden, mut attn) = (Vec::new(), Vec::new());
        let pb = events::bar(examples.len(), "teacher");
        for chunk in examples.chunks(TEACHER_BATCH) {
            let (ids, mask) = train::batch_of(&chunk.iter().map(|e| e.ids.as_slice()).collect::<Vec<_>>())?; // (B, T)
            let (out, hs) = forward(teacher, task, &ids, &mask, None, !layers.is_empty() || attention)?; // (B, L|C), [(B, T, C)]
            outputs.extend(out.to_vec2::<f32>()?);
            // hs[0] is the embedding output, hs[l + 1] layer l's.
            let kept: Vec<Tensor> = layers.iter().map(|&l| hs[l + 1].clone()).collect();
            keep_real_tokens(&kept, chunk, &mut hidden)?;
            if attention {
                let (last, x) = (&teacher.layers[teacher.layers.len() - 1], &hs[hs.len() - 2]); // x: (B, T, C)
                keep_real_tokens(&[last.attention.query.forward(x)?, last.attention.key.forward(x)?], chunk, &mut attn)?;
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        Ok(Self { outputs, hidden, attention: attn, c })
    }

    /// The teacher's logits of every example and nothing else, computed once on the runtime (no dropout; the
    /// candle teacher's numbers within the golden budget, faster): what recovery by distillation learns from.
    pub fn logits_on(teacher: &mut Engine, examples: &[Example]) -> Result<Self> {
        let mut outputs = Vec::with_capacity(examples.len());
        for chunk in examples.chunks(TEACHER_BATCH) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
            let logits = teacher.logits_batch(&tokenizer::pad(&seqs, 0))?; // (B, L)
            outputs.extend(logits.chunks_exact(logits.len() / chunk.len()).map(<[f32]>::to_vec));
        }
        Ok(Self { outputs, hidden: Vec::new(), attention: Vec::new(), c: 0 })
    }

    /// The task outputs of the examples `batch`: (B, L) logits or (B, C) embeddings.
    pub fn outputs_of(&self, batch: &[usize]) -> Result<Tensor> {
        let width = self.outputs.first().map_or(0, Vec::len);
        let rows: Vec<f32> = batch.iter().flat_map(|&j| self.outputs[j].iter().copied()).collect();
        Ok(Tensor::from_vec(rows, (batch.len(), width), &candle_core::Device::Cpu)?)
    }

    /// Slot `slot` of `store` (`hidden` or `attention`) for the examples `batch`, zero-padded to `t` tokens.
    /// (B, T, C)
    pub fn batch(&self, store: &[Vec<f16>], examples: &[Example], batch: &[usize], slot: usize, t: usize) -> Result<Tensor> {
        let c = self.c;
        let mut out = vec![0f32; batch.len() * t * c];
        for (b, &j) in batch.iter().enumerate() {
            let n = examples[j].ids.len();
            let rows = &store[j][slot * n * c..(slot + 1) * n * c];
            out[b * t * c..b * t * c + n * c].iter_mut().zip(rows).for_each(|(o, v)| *o = v.to_f32());
        }
        Ok(Tensor::from_vec(out, (batch.len(), t, c), &candle_core::Device::Cpu)?)
    }
}

/// Appends, per example of `chunk`, the rows of its real tokens from each of `tensors` (B, T, C), as f16.
fn keep_real_tokens(tensors: &[Tensor], chunk: &[Example], store: &mut Vec<Vec<f16>>) -> Result<()> {
    if tensors.is_empty() {
        return Ok(());
    }
    let values: Vec<Vec<Vec<Vec<f32>>>> = tensors.iter().map(Tensor::to_vec3::<f32>).collect::<candle_core::Result<_>>()?;
    for (i, e) in chunk.iter().enumerate() {
        let rows = values.iter().flat_map(|v| v[i][..e.ids.len()].iter().flatten());
        store.push(rows.map(|&v| f16::from_f32(v)).collect());
    }
    Ok(())
}
