//! Task metrics: retrieval (each query ranks every doc of the file by cosine; only its own row is relevant) and
//! classification (accuracy, macro F1).

use anyhow::{bail, Result};
use serde::Serialize;
use shrink_runtime::Engine;

use crate::progress;

#[derive(Debug, Serialize)]
pub struct RetrievalReport {
    pub task: &'static str,
    pub n: usize,
    #[serde(rename = "recall@1")]
    pub recall_at_1: f64,
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
}

/// queries[i] is relevant to docs[i] only. Both sets are unit vectors, so the dot product is the cosine.
pub fn retrieval_metrics(queries: &[Vec<f32>], docs: &[Vec<f32>]) -> RetrievalReport {
    let n = queries.len();
    let (mut r1, mut r10, mut mrr) = (0.0, 0.0, 0.0);
    for (i, q) in queries.iter().enumerate() {
        let dot = |d: &Vec<f32>| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>();
        let own = dot(&docs[i]);
        // Rank = 1 + docs scoring strictly higher (exact float ties do not occur in practice).
        let rank = 1 + docs.iter().enumerate().filter(|&(j, d)| j != i && dot(d) > own).count();
        r1 += f64::from(rank == 1);
        r10 += f64::from(rank <= 10);
        if rank <= 10 {
            mrr += 1.0 / rank as f64;
        }
    }
    let n_f = n.max(1) as f64;
    RetrievalReport { task: "retrieval", n, recall_at_1: r1 / n_f, recall_at_10: r10 / n_f, mrr_at_10: mrr / n_f }
}

#[derive(Debug, Serialize)]
pub struct ClassifyReport {
    pub task: &'static str,
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    #[serde(skip)]
    pub labels: Vec<String>,
    /// confusion[true][predicted]
    #[serde(skip)]
    pub confusion: Vec<Vec<usize>>,
}

pub fn classify_metrics(labels: &[String], gold: &[usize], pred: &[usize]) -> ClassifyReport {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&g, &p) in gold.iter().zip(pred) {
        confusion[g][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let f1s = (0..k).map(|c| {
        let tp = confusion[c][c] as f64;
        let predicted: usize = (0..k).map(|g| confusion[g][c]).sum();
        let actual: usize = confusion[c].iter().sum();
        if predicted + actual == 0 { 0.0 } else { 2.0 * tp / (predicted + actual) as f64 }
    });
    let macro_f1 = f1s.sum::<f64>() / k.max(1) as f64;
    ClassifyReport {
        task: "classify",
        n: gold.len(),
        accuracy: correct as f64 / gold.len().max(1) as f64,
        macro_f1,
        labels: labels.to_vec(),
        confusion,
    }
}

/// Predicted label index per text.
pub fn predict(engine: &mut Engine, texts: &[String], batch: usize) -> Result<Vec<usize>> {
    let Some(l) = engine.labels().map(|l| l.len()) else {
        bail!("{}: no classification head (fine-tune it with `shrink finetune` first)", engine.dir.display());
    };
    let pb = progress::bar(texts.len(), "classify");
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch.max(1)) {
        let b = engine.tokenizer.batch(chunk)?;
        let logits = engine.logits_batch(&b)?; // (B, L)
        out.extend(logits.chunks_exact(l).map(|row| (0..l).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap_or(0)));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_ranks_and_reciprocal_ranks() {
        let e = |a: f32, b: f32| { let n = (a * a + b * b).sqrt(); vec![a / n, b / n] };
        let docs = vec![e(1.0, 0.0), e(0.0, 1.0), e(1.0, 1.0)];
        // q0 -> doc0 first; q1 -> doc2 beats doc1 (rank 2); q2 -> doc2 first.
        let queries = vec![e(1.0, 0.1), e(0.6, 1.0), e(1.0, 1.0)];
        let r = retrieval_metrics(&queries, &docs);
        assert!((r.recall_at_1 - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.recall_at_10 - 1.0).abs() < 1e-9);
        assert!((r.mrr_at_10 - (1.0 + 0.5 + 1.0) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn accuracy_and_macro_f1() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let r = classify_metrics(&labels, &[0, 0, 1, 1], &[0, 1, 1, 1]);
        assert!((r.accuracy - 0.75).abs() < 1e-9);
        // F1(a) = 2*1/(1+2) = 0.667, F1(b) = 2*2/(3+2) = 0.8
        assert!((r.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-9);
    }
}
