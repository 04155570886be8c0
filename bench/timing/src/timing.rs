//! A timing server for the `bench/` scripts, so shrink and a peer can be timed interleaved in one
//! run without reloading. Reads `forward B T R`, `train B T R` or `distill B T R` per line on stdin, answers
//! `{"ms": [...]}`. `distill` is one step of `shrink distill`'s default recipe: a 3-layer student (teacher layers
//! 1, 3, 5), cross-entropy + KL at T = 2 + hidden-state MSE of the mapped layers, teacher outputs cached beforehand.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use shrink_train::distill::examples::Example;
use shrink_train::distill::teacher::Targets;
use shrink_train::distill::{student, EmbedLoss, LossWeights, Objective, Split, Task};
use shrink_io::model::Loaded;
use shrink_train::train::{cross_entropy, Plain, TrainOptions, Trainer};

/// The timed student's teacher layers and loss weights (the README's distillation run).
const STUDENT_LAYERS: [usize; 3] = [1, 3, 5];
const DISTILL_WEIGHTS: LossWeights =
    LossWeights { ce: 0.5, kl: 0.5, temperature: 2.0, hidden: 1.0, attn: 0.0, embed: 0.0, embed_loss: EmbedLoss::Cosine };

/// A distillation trainer with the teacher's outputs on the batch cached, as `shrink distill` caches them.
struct DistillCase {
    trainer: Trainer,
    examples: Vec<Example>,
    targets: Targets,
}

/// Deterministic ids shared with bench/compare_torch.py: [CLS] ... [SEP], all tokens real.
fn bench_batch(b: usize, t: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let mut ids = vec![0u32; b * t];
    for bi in 0..b {
        for ti in 0..t {
            ids[bi * t + ti] = match ti {
                0 => 101,
                _ if ti == t - 1 => 102,
                _ => 1000 + ((bi * 131 + ti * 7919) % 28000) as u32,
            };
        }
    }
    let labels: Vec<u32> = (0..b).map(|bi| (bi % 5) as u32).collect();
    Ok((
        Tensor::from_vec(ids, (b, t), &Device::Cpu)?,
        Tensor::ones((b, t), candle_core::DType::U32, &Device::Cpu)?,
        Tensor::from_vec(labels, b, &Device::Cpu)?,
    ))
}

pub fn serve(mut m: Loaded) -> Result<()> {
    if m.model.classifier.is_none() {
        let labels: Vec<String> = shrink_io::data::BBC_LABELS.iter().map(|s| s.to_string()).collect();
        m.model.add_classifier(&labels, 0)?;
    }
    let opts = TrainOptions { epochs: 1, batch: 16, lr: 5e-5, weight_decay: 0.01, warmup: 0.0, clip: 1.0, seed: 0 };
    let mut trainer: Option<Trainer> = None;
    let mut distill: Option<((usize, usize), DistillCase)> = None;
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, b, t, r] = parts[..] else { bail!("expected `forward|train|distill B T R`, got {line:?}") };
        let (b, t, r): (usize, usize, usize) =
            (b.parse().context("B")?, t.parse().context("T")?, r.parse().context("R")?);
        let max_t = m.model.config.max_position_embeddings;
        if b == 0 || t == 0 || r == 0 {
            bail!("{line:?}: B, T and R must be at least 1");
        }
        if t > max_t {
            bail!("{line:?}: T = {t} exceeds max_position_embeddings {max_t}");
        }
        if b.checked_mul(t).is_none() {
            bail!("{line:?}: B x T overflows");
        }
        let (ids, mask, labels) = bench_batch(b, t)?;
        if what == "distill" && distill.as_ref().is_none_or(|(shape, _)| *shape != (b, t)) {
            let ids = ids.to_vec2::<u32>()?;
            let labels = labels.to_vec1::<u32>()?;
            let examples: Vec<Example> = ids.into_iter().zip(labels).map(|(ids, l)| Example { ids, label: Some(l), text: String::new() }).collect();
            let targets = Targets::compute(&m.model, Task::Classify, &examples, &STUDENT_LAYERS, false)?;
            let trainer = Trainer::new(student::build(&m.model, &STUDENT_LAYERS), Vec::new(), &opts, 1_000_000)?;
            distill = Some(((b, t), DistillCase { trainer, examples, targets }));
        }
        let objective = Objective { task: Task::Classify, weights: DISTILL_WEIGHTS, projections: Vec::new() };
        let all: Vec<usize> = (0..b).collect();
        let mut ms = Vec::with_capacity(r);
        for _ in 0..r {
            let start = Instant::now();
            match what {
                "forward" => drop(m.model.embed(&ids, &mask)?),
                "train" => {
                    let tr = match trainer.as_mut() {
                        Some(tr) => tr,
                        None => trainer.insert(Trainer::new(m.model.clone(), Vec::new(), &opts, 1_000_000)?),
                    };
                    tr.step(|m, rng| cross_entropy(&m.logits(&ids, &mask, Some(rng))?, &[], &labels), &mut Plain)?;
                }
                "distill" => {
                    let case = &mut distill.as_mut().expect("set up above").1;
                    let split = Split { examples: &case.examples, targets: &case.targets };
                    case.trainer.step(|m, rng| objective.loss(m, &split, &all, rng), &mut Plain)?;
                }
                _ => bail!("unknown timing case {what:?}"),
            }
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let mut out = stdout.lock();
        writeln!(out, "{}", serde_json::json!({ "ms": ms }))?;
        out.flush()?;
    }
    Ok(())
}
