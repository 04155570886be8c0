//! The search space: the teacher (fine-tuned here when the checkpoint has no classifier), the post-training
//! variants (vocabulary trim, then one weight/embedding/activation format), and the structures (pruned heads /
//! FFN / layers with distillation recovery, shallower students, a pruned student) each trained for a number of
//! epochs. A trial is one structure, one epoch count and one variant, written out as the stages that make it.

use std::path::Path;

use anyhow::{Context, Result};
use shrink_eval::task::Task;

use crate::recipe::Stage;
use crate::search::plan::Settings;

/// The shape of a BERT-family checkpoint, from its config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
    /// Its classifier's labels, if it has one.
    pub labels: Option<Vec<String>>,
}

impl Arch {
    pub fn read(model: &Path) -> Result<Self> {
        if let Some(gguf) = shrink_format::gguf::file_of(model) {
            let c = shrink_format::arch::llama::HfConfig::of_gguf(&shrink_format::gguf::GgufFile::open(&gguf)?)?;
            return Ok(Self { layers: c.layers, hidden: c.hidden, heads: c.heads, ffn: c.ffn, labels: None });
        }
        let path = model.join("config.json");
        let text = shrink_format::folder::read_regular(&path, "model config")?;
        let c: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let n = |k: &str| c[k].as_u64().map(|v| v as usize).with_context(|| format!("{}: no {k}", path.display()));
        let labels = c["id2label"].as_object().map(|m| {
            let mut v: Vec<(usize, String)> = m.iter().filter_map(|(k, l)| Some((k.parse().ok()?, l.as_str()?.to_string()))).collect();
            v.sort();
            v.into_iter().map(|(_, l)| l).collect()
        });
        Ok(Self { layers: n("num_hidden_layers")?, hidden: n("hidden_size")?, heads: n("num_attention_heads")?, ffn: n("intermediate_size")?, labels })
    }

    /// Share of a layer's multiply-adds in attention's four projections (the rest is the FFN).
    fn attention_share(&self) -> f64 {
        let (a, f) = ((4 * self.hidden * self.hidden) as f64, (2 * self.hidden * self.ffn) as f64);
        a / (a + f)
    }
}

/// A structure: how the teacher is made smaller before the post-training variants.
#[derive(Debug, Clone, PartialEq)]
pub enum Structure {
    Teacher,
    Prune { heads: f64, ffn: f64, layers: usize },
    Student { layers: usize, hidden: Option<usize> },
    /// A student, then pruned.
    StudentPruned { layers: usize, heads: f64, ffn: f64 },
}

impl Structure {
    pub fn name(&self) -> String {
        let pct = |x: f64| (x * 100.0).round() as usize;
        match self {
            Self::Teacher => "teacher".into(),
            Self::Prune { heads, ffn, layers: 0 } => format!("prune-h{}-f{}", pct(*heads), pct(*ffn)),
            Self::Prune { heads, ffn, layers } => format!("prune-l{layers}-h{}-f{}", pct(*heads), pct(*ffn)),
            Self::Student { layers, hidden: None } => format!("student-l{layers}"),
            Self::Student { layers, hidden: Some(h) } => format!("student-l{layers}-c{h}"),
            Self::StudentPruned { layers, heads, ffn } => format!("student-l{layers}-h{}-f{}", pct(*heads), pct(*ffn)),
        }
    }

    /// Compute per token relative to the teacher (what training and inference cost scale with).
    pub fn compute(&self, a: &Arch) -> f64 {
        let share = a.attention_share();
        let cut = |h: f64, f: f64| share * (1.0 - h) + (1.0 - share) * (1.0 - f);
        let depth = |l: usize| l as f64 / a.layers as f64;
        match *self {
            Self::Teacher => 1.0,
            Self::Prune { heads, ffn, layers } => depth(a.layers - layers) * cut(heads, ffn),
            Self::Student { layers, hidden } => depth(layers) * hidden.map_or(1.0, |h| h as f64 / a.hidden as f64),
            Self::StudentPruned { layers, heads, ffn } => depth(layers) * cut(heads, ffn),
        }
    }

    /// A number every Linear input width of the structure is a multiple of: cutting heads leaves widths of whole
    /// heads, so only the head width is sure.
    pub fn width_step(&self, a: &Arch) -> usize {
        let gcd = |mut x: usize, mut y: usize| {
            while y != 0 {
                (x, y) = (y, x % y);
            }
            x
        };
        let kept_ffn = |f: f64| a.ffn - (a.ffn as f64 * f).round() as usize;
        match *self {
            Self::Teacher | Self::Student { hidden: None, .. } => gcd(a.hidden, a.ffn),
            Self::Student { hidden: Some(h), .. } => gcd(h, a.ffn),
            Self::Prune { heads, ffn, .. } | Self::StudentPruned { heads, ffn, .. } => {
                let hidden = if heads > 0.0 { a.hidden / a.heads } else { a.hidden };
                gcd(hidden, kept_ffn(ffn))
            }
        }
    }

    /// The structures searched for `task` on a teacher of shape `a`, cheapest to train first.
    pub fn all(task: Task, a: &Arch) -> Vec<Structure> {
        let half = (a.layers / 2).max(1);
        let mut v = Vec::new();
        // Decoders have no trainable model yet (no candle decoder): their search is the teacher's formats alone.
        if task == Task::Perplexity {
            return v;
        }
        if task == Task::Classify {
            for (h, f) in [(0.25, 0.25), (0.5, 0.5), (0.5, 0.75), (0.75, 0.75)] {
                v.push(Self::Prune { heads: h, ffn: f, layers: 0 });
            }
            if a.layers >= 3 {
                v.push(Self::Prune { heads: 0.5, ffn: 0.5, layers: a.layers / 3 });
            }
        }
        if half < a.layers {
            v.push(Self::Student { layers: half, hidden: None });
            if task == Task::Classify {
                v.push(Self::StudentPruned { layers: half, heads: 0.5, ffn: 0.5 });
            }
            let head_width = a.hidden / a.heads;
            let narrow = (a.hidden * 2 / 3) / head_width * head_width;
            // distill refuses a narrower embedding student: its vectors would not be comparable with the teacher's.
            if task == Task::Classify && narrow >= head_width && narrow < a.hidden {
                v.push(Self::Student { layers: half, hidden: Some(narrow) });
            }
        }
        v
    }
}

/// A post-training variant: optionally the vocabulary trimmed to the training texts, then one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Fp32,
    Trim,
    Int8Dynamic,
    Int8Static,
    /// int8 static with attention's products in fp32: where bf16 attention (int8's default) runs on AMX-BF16, it is
    /// faster and rounds more, so the search measures both.
    Int8StaticFp32Attention,
    /// int8 dynamic / int4 g32 on the whole vocabulary: where the training texts are few (SST-2's 6000 short
    /// sentences), trimming to them alone cost 2.5 points on dev.
    Int8Untrimmed,
    Int4Untrimmed,
    /// Tokens seen fewer than `min_count` times in the training texts are dropped (2 for the other variants).
    Int4 { group: usize, min_count: usize },
    /// int4 g32 with the sites that cost most promoted to int8 until the dev drop is at most half the budget.
    Mixed,
    /// `Mixed` to nine tenths of the budget: smaller, and likelier to miss it on dev (only decoders try it).
    MixedNear,
}

impl Variant {
    // New variants go last: round 0's trial ids follow this order.
    pub const QUANTIZED: [Variant; 9] = [
        Self::Int8Dynamic,
        Self::Int8Static,
        Self::Int4 { group: 32, min_count: 2 },
        Self::Int4 { group: 128, min_count: 2 },
        Self::Int4 { group: 32, min_count: 4 },
        Self::Mixed,
        Self::Int8StaticFp32Attention,
        Self::Int8Untrimmed,
        Self::Int4Untrimmed,
    ];

    /// A decoder's variants (GPTQ and AWQ on every int4 one), in trial order.
    pub const DECODER: [Variant; 5] = [Self::Fp32, Self::Int8Dynamic, Self::Int4 { group: 32, min_count: 2 }, Self::Mixed, Self::MixedNear];

    /// Whether its format can store every Linear of `st`: an int4 group must divide each input width.
    pub fn fits(self, st: &Structure, a: &Arch) -> bool {
        match self {
            Self::Int4 { group, .. } => st.width_step(a) % group == 0,
            Self::Int4Untrimmed | Self::Mixed | Self::MixedNear => st.width_step(a) % 32 == 0,
            _ => true,
        }
    }

    /// The min-count of the vocabulary trim before its format (retrieval trims nothing: `stages`), if it has one.
    fn trim(self) -> Option<usize> {
        match self {
            Self::Fp32 | Self::Int8Untrimmed | Self::Int4Untrimmed => None,
            Self::Int4 { min_count, .. } => Some(min_count),
            _ => Some(2),
        }
    }

    /// Its name in the plan and the report: the trim ("trim+", or "trimN+" at another min-count), then the format.
    pub fn label(self, task: Task) -> String {
        let format = match self {
            Self::Fp32 => "fp32".into(),
            Self::Trim => return "trim".into(),
            Self::Int8Dynamic | Self::Int8Untrimmed => "int8".into(),
            Self::Int8Static => "int8-static".into(),
            Self::Int8StaticFp32Attention => "int8-static+attn-fp32".into(),
            Self::Int4 { group, .. } => format!("int4-g{group}"),
            Self::Int4Untrimmed => "int4-g32".into(),
            Self::Mixed => "mixed-int4/int8".into(),
            Self::MixedNear => "mixed-int4/int8-near".into(),
        };
        match self.trim().filter(|_| task == Task::Classify) {
            None => format,
            Some(2) => format!("trim+{format}"),
            Some(n) => format!("trim{n}+{format}"),
        }
    }

    /// Stages after the structure.
    pub fn stages(self, s: &Settings) -> Vec<Stage> {
        if s.task == Task::Perplexity {
            return self.decoder_stages(s);
        }
        let train = || toml::Value::String(s.train.display().to_string());
        let dev = || toml::Value::String(s.dev.display().to_string());
        let mut v = Vec::new();
        if let Some(min_count) = self.trim().filter(|_| s.task == Task::Classify) {
            // Retrieval scores texts the training rows never showed: their rare tokens must stay. The position
            // table keeps the rows of the length the model is run at.
            let flags = [("data", train()), ("min-count", (min_count as i64).into()), ("max-positions", (s.seq as i64).into())];
            v.push(Stage::new("trim-vocab", &flags));
        }
        // Calibration texts: 256 (quantize's default) or every row of a smaller file.
        let samples = |rows: usize| toml::Value::Integer(rows.min(256) as i64);
        let calib = |group: usize, emb: &str| {
            vec![
                ("scheme", "int4".into()),
                ("group", (group as i64).into()),
                ("gptq", true.into()),
                ("calib", train()),
                ("calib-samples", samples(s.train_rows)),
                ("embeddings", emb.into()),
            ]
        };
        let q: Option<Vec<(&str, toml::Value)>> = match self {
            Self::Fp32 | Self::Trim => None,
            Self::Int8Dynamic | Self::Int8Untrimmed => Some(vec![("scheme", "int8-dynamic".into()), ("embeddings", "int8".into())]),
            Self::Int8Static | Self::Int8StaticFp32Attention => {
                let mut f = vec![("scheme", "int8-static".into()), ("calib", train()), ("calib-samples", samples(s.train_rows)), ("embeddings", "int8".into())];
                if self == Self::Int8StaticFp32Attention {
                    f.push(("attention", "fp32".into()));
                }
                Some(f)
            }
            Self::Int4 { group, .. } => Some(calib(group, "int4")),
            Self::Int4Untrimmed => Some(calib(32, "int4")),
            Self::Mixed | Self::MixedNear => {
                let share = if self == Self::Mixed { 0.5 } else { 0.9 };
                let mut f = calib(32, "int4");
                // quantize's own search measures on rows of its --calib file: half of dev calibrates, half ranks.
                f[3] = ("calib", dev());
                f[4] = ("calib-samples", samples(s.dev_rows / 2));
                let rank = toml::Value::Integer((s.dev_rows - s.dev_rows.min(256).min(s.dev_rows / 2)) as i64);
                f.extend([("max-drop", (s.max_drop * share).into()), ("fallback", "int8".into()), ("dev-samples", rank)]);
                Some(f)
            }
        };
        if let Some(flags) = q {
            v.push(Stage::new("quantize", &flags));
        }
        v
    }

    /// A decoder's quantize stage, calibrated on the training text (mixed: its held-out tokens follow the
    /// calibration ones there, so dev stays unseen).
    fn decoder_stages(self, s: &Settings) -> Vec<Stage> {
        let int4 = || -> Vec<(&str, toml::Value)> {
            vec![("scheme", "int4".into()), ("gptq", true.into()), ("act-order", true.into()), ("awq", true.into()), ("calib", s.train.display().to_string().into())]
        };
        let mixed = |share: f64| {
            let mut f = int4();
            f.push(("max-ppl-increase", (s.max_drop * share).into()));
            f
        };
        let flags = match self {
            Self::Int8Dynamic => vec![("scheme", "int8-dynamic".into())],
            Self::Int4 { .. } => int4(),
            Self::Mixed => mixed(0.5),
            Self::MixedNear => mixed(0.9),
            _ => return vec![],
        };
        vec![Stage::new("quantize", &flags)]
    }
}

/// The stages that make `st` from the teacher, training `epochs`.
pub fn structure_stages(st: &Structure, s: &Settings, epochs: usize) -> Vec<Stage> {
    let train = || toml::Value::String(s.train.display().to_string());
    let task = shrink_format::choice::Choice::name(s.task);
    let seed = toml::Value::Integer(s.seed as i64);
    let e = toml::Value::Integer(epochs as i64);
    let prune = |heads: f64, ffn: f64, layers: usize| {
        let mut f = vec![("heads", heads.into()), ("ffn", ffn.into()), ("data", train()), ("recover", "distill".into()), ("epochs", e.clone())];
        if layers > 0 {
            f.push(("layers", (layers as i64).into()));
        }
        Stage::new("prune", &f)
    };
    let student = |layers: usize, hidden: Option<usize>| {
        let mut f = vec![("student-layers", (layers as i64).into()), ("data", train()), ("epochs", e.clone()), ("seed", seed.clone()), ("hidden-weight", 1.0.into())];
        if task == "retrieval" {
            f.push(("task", "embedding".into()));
        }
        if let Some(h) = hidden {
            f.extend([("hidden", (h as i64).into()), ("lr", 1e-4.into())]);
        }
        Stage::new("distill", &f)
    };
    match *st {
        Structure::Teacher => vec![],
        Structure::Prune { heads, ffn, layers } => vec![prune(heads, ffn, layers)],
        Structure::Student { layers, hidden } => vec![student(layers, hidden)],
        Structure::StudentPruned { layers, heads, ffn } => vec![student(layers, None), prune(heads, ffn, 0)],
    }
}

/// The stage that makes the teacher from the checkpoint, when it needs one.
pub fn teacher_stages(s: &Settings) -> Vec<Stage> {
    if !s.finetune {
        return vec![];
    }
    let flags = [
        ("data", toml::Value::String(s.train.display().to_string())),
        ("max-len", (s.seq as i64).into()),
        ("epochs", 3.into()),
        ("seed", (s.seed as i64).into()),
    ];
    vec![Stage::new("finetune", &flags)]
}
