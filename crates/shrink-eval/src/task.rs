//! Task metrics: retrieval (each query ranks every doc of the file by cosine; only its own row is relevant) and
//! classification (accuracy, macro F1).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use shrink_io::choices;
use serde::Serialize;
use shrink_runtime::Engine;

use crate::embed;
use shrink_io::{data, events};

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
/// Ties count against the query: rank = 1 + the other docs scoring at least its own (BBC test holds duplicated
/// bodies, and constant embeddings must score nothing, not everything). NaN never wins: a NaN own score ranks
/// last (n), a NaN score of another doc counts against.
pub fn retrieval_metrics(queries: &[Vec<f32>], docs: &[Vec<f32>]) -> RetrievalReport {
    let n = queries.len();
    let (mut r1, mut r10, mut mrr) = (0.0, 0.0, 0.0);
    for (i, q) in queries.iter().enumerate() {
        let dot = |d: &Vec<f32>| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>();
        let own = dot(&docs[i]);
        let rank = if own.is_finite() {
            1 + docs.iter().enumerate().filter(|&(j, d)| j != i && !(dot(d) < own)).count()
        } else {
            n
        };
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

/// Label logits (L) per text; `path`: the file the texts are rows of, for errors.
pub fn logits(engine: &mut Engine, path: &Path, texts: &[String], batch: usize) -> Result<Vec<Vec<f32>>> {
    let Some(l) = engine.labels().map(|l| l.len()) else {
        bail!("{}: no classification head (fine-tune it with `shrink finetune` first)", engine.dir.display());
    };
    let pb = events::bar(texts.len(), "classify");
    let mut out = Vec::with_capacity(texts.len());
    let batch = batch.max(1);
    for (c, chunk) in texts.chunks(batch).enumerate() {
        let b = engine.tokenizer.batch(chunk)?;
        let logits = engine.logits_batch(&b).map_err(|e| data::name_text(e, path, texts, |k| c * batch + k))?;
        out.extend(logits.chunks_exact(l).map(<[f32]>::to_vec)); // (B, L)
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap_or(0)
}

choices! {
    pub enum Task {
        Retrieval = "retrieval",
        Classify = "classify",
        Perplexity = "perplexity": "a decoder (.gguf) on a plain text file",
    }
}

impl Task {
    /// The score's name in messages.
    pub fn metric(self) -> &'static str {
        match self {
            Task::Classify => "accuracy",
            Task::Retrieval => "MRR@10",
            Task::Perplexity => "perplexity",
        }
    }
}

/// JSONL field names of a task's inputs.
#[derive(Clone, Debug)]
pub struct Fields {
    /// Retrieval: the query field (each query's own row is its only relevant doc).
    pub query_field: String,
    pub doc_field: String,
    /// Classification: the text and label fields.
    pub text_field: String,
    pub label_field: String,
}

impl Default for Fields {
    fn default() -> Self {
        Self { query_field: "title".into(), doc_field: "body".into(), text_field: "text".into(), label_field: "label".into() }
    }
}

/// A task's inputs, read from JSONL rows.
pub enum TaskData {
    Retrieval { queries: Vec<String>, docs: Vec<String>, path: PathBuf },
    Classify { texts: Vec<String>, labels: Vec<String>, path: PathBuf },
}

/// What a model did on a task.
pub struct Outcome {
    pub report: serde_json::Value,
    /// Accuracy or MRR@10, as a fraction.
    pub score: f64,
    /// Logits per text or embedding per doc: what two models of the same task are compared on.
    pub outputs: Vec<Vec<f32>>,
    pub confusion: Option<(Vec<String>, Vec<Vec<usize>>)>,
}

impl TaskData {
    pub fn from_rows(task: Task, path: &Path, rows: &[serde_json::Map<String, serde_json::Value>], f: &Fields) -> Result<Self> {
        Ok(match task {
            Task::Retrieval => {
                Self::Retrieval {
                    queries: data::field(path, rows, &f.query_field)?,
                    docs: data::field(path, rows, &f.doc_field)?,
                    path: path.to_path_buf(),
                }
            }
            Task::Classify => Self::Classify {
                texts: data::field(path, rows, &f.text_field)?,
                labels: data::field(path, rows, &f.label_field)?,
                path: path.to_path_buf(),
            },
            Task::Perplexity => bail!("{}: perplexity reads a text file with a decoder (a .gguf model), not JSONL rows", path.display()),
        })
    }

    pub fn task(&self) -> Task {
        match self {
            Self::Retrieval { .. } => Task::Retrieval,
            Self::Classify { .. } => Task::Classify,
        }
    }

    pub fn run(&self, engine: &mut Engine, batch: usize) -> Result<Outcome> {
        match self {
            Self::Retrieval { queries, docs, path } => {
                let q = embed::embed_texts(engine, path, queries, batch, "queries")?;
                let d = embed::embed_texts(engine, path, docs, batch, "docs")?;
                let r = retrieval_metrics(&q, &d);
                Ok(Outcome { score: r.mrr_at_10, report: serde_json::to_value(r)?, outputs: d, confusion: None })
            }
            Self::Classify { texts, labels: gold, path } => {
                let logits = logits(engine, path, texts, batch)?;
                let labels = engine.labels().unwrap_or_default();
                let gold = gold
                    .iter()
                    .enumerate()
                    .map(|(i, l)| match labels.iter().position(|x| x == l) {
                        Some(p) => Ok(p),
                        None => bail!("{}: row {}: label {l:?} is not one the model knows ({labels:?})", path.display(), i + 1),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let pred: Vec<usize> = logits.iter().map(|r| argmax(r)).collect();
                let r = classify_metrics(&labels, &gold, &pred);
                let confusion = Some((labels, r.confusion.clone()));
                Ok(Outcome { score: r.accuracy, report: serde_json::to_value(r)?, outputs: logits, confusion })
            }
        }
    }
}

/// Mean cosine similarity of paired rows.
pub fn mean_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let cos = a.iter().zip(b).map(|(x, y)| {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum();
        let nx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum();
        let ny: f64 = y.iter().map(|p| f64::from(*p).powi(2)).sum();
        dot / (nx * ny).sqrt().max(1e-30)
    });
    cos.sum::<f64>() / a.len().max(1) as f64
}

/// Mean over rows of |b - a| / |a|: how far a compressed model's outputs moved from the reference's.
pub fn output_error(reference: &[Vec<f32>], got: &[Vec<f32>]) -> f64 {
    let per_row = reference.iter().zip(got).map(|(a, b)| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let n: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        (d / n.max(1e-30)).sqrt()
    });
    per_row.sum::<f64>() / reference.len().max(1) as f64
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
    fn retrieval_ties_and_nan_count_against_the_query() {
        let (x, y) = (vec![1.0f32, 0.0], vec![0.0f32, 1.0]);
        // Docs 0 and 1 are the same text (BBC test's duplicated bodies): queries 0 and 1 each tie the other's doc
        // and rank 2; query 2 is alone on top.
        let r = retrieval_metrics(&[x.clone(), x.clone(), y.clone()], &[x.clone(), x.clone(), y.clone()]);
        assert_eq!(r.recall_at_1, 1.0 / 3.0);
        assert!((r.mrr_at_10 - (0.5 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        // Constant embeddings: every doc ties, so every query ranks last (n).
        let r = retrieval_metrics(&vec![x.clone(); 3], &vec![x.clone(); 3]);
        assert_eq!((r.recall_at_1, r.recall_at_10), (0.0, 1.0));
        assert!((r.mrr_at_10 - 1.0 / 3.0).abs() < 1e-12);
        let r = retrieval_metrics(&vec![x.clone(); 12], &vec![x.clone(); 12]);
        assert_eq!((r.recall_at_1, r.recall_at_10, r.mrr_at_10), (0.0, 0.0, 0.0));
        // NaN embeddings score nothing; a NaN doc counts against a query whose own score is finite.
        let nan = vec![f32::NAN; 2];
        let r = retrieval_metrics(&vec![nan.clone(); 12], &vec![nan.clone(); 12]);
        assert_eq!((r.recall_at_1, r.recall_at_10, r.mrr_at_10), (0.0, 0.0, 0.0));
        let r = retrieval_metrics(&[x.clone(), x.clone()], &[x.clone(), nan]);
        assert_eq!((r.recall_at_1, r.recall_at_10, r.mrr_at_10), (0.0, 1.0, 0.5)); // both rank 2 of 2
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
