//! The student: a BERT of N layers, each a copy of one teacher layer (`--layer-map`), with the teacher's
//! embeddings and head; optionally narrower (`narrow`: fewer heads, FFN neurons and hidden channels, the most
//! important ones kept, through the pruning crate's scores and surgery). It is an ordinary model folder
//! (num_hidden_layers = N, per-layer widths in config.json) every command loads.

use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use shrink_model::linear::Linear;
use shrink_model::{Bert, Config};

use crate::prune::importance::{self, Method};
use crate::prune::{surgery, top};

/// Which teacher layer initialises each student layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerMap {
    /// Evenly spaced, ending at the teacher's last layer: student layer i = teacher layer (i + 1) * L / N - 1
    /// (6 -> 3: layers 1, 3, 5). Ending at the last layer keeps the output the head was trained on in the same
    /// place, and each student layer's hidden state is matched with its source layer's output.
    EveryOther,
    /// Teacher layers 0..N.
    First,
    /// Explicit, increasing teacher layer indices (0-based).
    List(Vec<usize>),
}

impl FromStr for LayerMap {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "every-other" => Ok(Self::EveryOther),
            "first" => Ok(Self::First),
            _ => {
                let list = s.split(',').map(|p| p.trim().parse::<usize>()).collect::<Result<Vec<_>, _>>();
                match list {
                    Ok(l) if !l.is_empty() => Ok(Self::List(l)),
                    _ => bail!("--layer-map {s:?}: expected every-other, first, or comma-separated layer indices such as 0,2,4"),
                }
            }
        }
    }
}

impl LayerMap {
    /// Teacher layer per student layer, for a teacher of `teacher_layers` (from `config`) and a student of `n`.
    pub fn teacher_layers(&self, teacher_layers: usize, n: usize, config: &Path) -> Result<Vec<usize>> {
        if n == 0 || n > teacher_layers {
            bail!("--student-layers {n}: must be between 1 and the teacher's {teacher_layers} layers ({})", config.display());
        }
        let map = match self {
            Self::EveryOther => (0..n).map(|i| (i + 1) * teacher_layers / n - 1).collect(),
            Self::First => (0..n).collect(),
            Self::List(l) => l.clone(),
        };
        if map.len() != n {
            bail!("--layer-map {map:?} names {} layers but --student-layers is {n}", map.len());
        }
        if let Some(&bad) = map.iter().find(|&&l| l >= teacher_layers) {
            bail!("--layer-map: teacher layer {bad} does not exist (the teacher has layers 0..{teacher_layers}, {})", config.display());
        }
        if map.windows(2).any(|w| w[0] >= w[1]) {
            bail!("--layer-map {map:?}: teacher layers must be strictly increasing");
        }
        Ok(map)
    }
}

/// The student: `teacher` with only the layers in `map`, in that order. Its parameters are separate copies
/// once the trainer turns them into variables, so training leaves the teacher unchanged.
pub fn build(teacher: &Bert, map: &[usize]) -> Bert {
    let mut s = teacher.clone();
    s.layers = map.iter().map(|&l| teacher.layers[l].clone()).collect();
    s.config.num_hidden_layers = map.len();
    s
}

/// Requested student widths (`--hidden`, `--heads`, `--ffn`); None keeps the teacher's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Width {
    /// C': model width, a multiple of the head width D.
    pub hidden: Option<usize>,
    /// H': heads per layer (default: the teacher's, at most C' / D).
    pub heads: Option<usize>,
    /// F': FFN neurons per layer.
    pub ffn: Option<usize>,
}

/// The checked widths of each student layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Widths {
    /// C', when --hidden was given (even = C: the channels are then still ranked and sliced, in order).
    pub hidden: Option<usize>,
    /// H' per student layer.
    pub heads: Vec<usize>,
    /// F' per student layer.
    pub ffn: Vec<usize>,
}

impl Width {
    pub fn is_teacher(&self) -> bool {
        *self == Self::default()
    }

    /// The widths of a student made of teacher layers `map`, checked against the teacher's `cfg` (read from
    /// `config`, named in errors). Heads keep their width D, so C' must be a multiple of D and holds C' / D heads.
    pub fn resolve(&self, cfg: &Config, map: &[usize], config: &Path) -> Result<Widths> {
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let hidden = self.hidden.unwrap_or(c);
        if hidden == 0 || hidden > c {
            bail!("--hidden {hidden}: must be between {d} and the teacher's hidden_size {c} ({})", config.display());
        }
        if !hidden.is_multiple_of(d) {
            bail!(
                "--hidden {hidden}: must be a multiple of the head width {d} (hidden_size {c} / {} heads, {}); heads keep \
                 their width, so the student has --hidden / {d} of them",
                cfg.num_attention_heads,
                config.display()
            );
        }
        let fit = hidden / d;
        let fewest = map.iter().map(|&l| cfg.heads(l)).min().unwrap_or(0);
        if let Some(h) = self.heads {
            if h == 0 || h > fewest {
                bail!("--heads {h}: must be between 1 and the teacher's {fewest} heads per layer ({})", config.display());
            }
            if h > fit {
                bail!("--heads {h} does not fit --hidden {hidden}: at most {hidden} / {d} = {fit} heads of width {d}");
            }
        }
        let narrowest = map.iter().map(|&l| cfg.ffn(l)).min().unwrap_or(0);
        if let Some(f) = self.ffn {
            if f == 0 || f > narrowest {
                bail!("--ffn {f}: must be between 1 and the teacher's FFN width {narrowest} ({})", config.display());
            }
        }
        Ok(Widths {
            hidden: self.hidden,
            heads: map.iter().map(|&l| self.heads.unwrap_or(cfg.heads(l).min(fit))).collect(),
            ffn: map.iter().map(|&l| self.ffn.unwrap_or(cfg.ffn(l))).collect(),
        })
    }
}

/// How `narrow` ranks what it keeps: heads and FFN neurons by `prune::importance::score` (`method`), hidden
/// channels by `importance::hidden_channels`, both on `examples` in batches of `batch`.
pub struct Ranking<'a> {
    pub examples: &'a [crate::example::Example],
    pub method: Method,
    pub batch: usize,
}

/// `student` (from `build`) cut to `widths`: each layer keeps its most important heads and FFN neurons
/// (`surgery::cut`), then, with a C', the model its most important hidden channels (`surgery::cut_hidden`). Returns the narrow student and the kept channels (student channel i = teacher channel
/// `kept[i]`), which initialise the hidden-state projections.
pub fn narrow(student: &Bert, widths: &Widths, rank: &Ranking) -> Result<(Bert, Vec<usize>)> {
    let scores = importance::score(student, rank.examples, rank.method, rank.batch, false)?;
    let n = student.layers.len();
    let keep = surgery::Keep {
        layers: (0..n).collect(),
        heads: (0..n).map(|l| top(&scores.heads[l], widths.heads[l])).collect(),
        neurons: (0..n).map(|l| top(&scores.neurons[l], widths.ffn[l])).collect(),
    };
    let m = surgery::cut(student, &keep)?;
    let Some(hidden) = widths.hidden else { return Ok((m, (0..student.config.hidden_size).collect())) };
    let kept = top(&importance::hidden_channels(student, rank.examples, rank.batch)?, hidden);
    Ok((surgery::cut_hidden(&m, &kept)?, kept))
}

/// TinyBERT's learned maps from the student's width to the teacher's, one per matched hidden state: Linear C' -> C,
/// initialised to put student channel i back at teacher channel `kept[i]` (zeros elsewhere), so at the start the
/// projected student state is the teacher layer's own kept channels. Weights and biases are variables (training
/// updates them in place); they are never saved with the student. Each: weight (C, C'), bias (C)
pub fn projections(kept: &[usize], c: usize, n: usize) -> Result<Vec<Linear>> {
    let narrow = kept.len();
    let mut w = vec![0f32; c * narrow];
    for (i, &k) in kept.iter().enumerate() {
        w[k * narrow + i] = 1.0;
    }
    (0..n)
        .map(|_| {
            let weight = Var::from_tensor(&Tensor::from_vec(w.clone(), (c, narrow), &Device::Cpu)?)?; // (C, C')
            let bias = Var::zeros(c, DType::F32, &Device::Cpu)?; // (C)
            Ok(Linear { weight: weight.as_tensor().clone(), bias: bias.as_tensor().clone(), input_quant: None })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(spec: &str, l: usize, n: usize) -> Result<Vec<usize>> {
        spec.parse::<LayerMap>()?.teacher_layers(l, n, Path::new("t/config.json"))
    }

    #[test]
    fn layer_maps() {
        assert_eq!(map("every-other", 6, 3).unwrap(), [1, 3, 5]);
        assert_eq!(map("every-other", 6, 2).unwrap(), [2, 5]);
        assert_eq!(map("every-other", 6, 6).unwrap(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(map("first", 6, 3).unwrap(), [0, 1, 2]);
        assert_eq!(map("0, 2,4", 6, 3).unwrap(), [0, 2, 4]);
    }

    #[test]
    fn bad_layer_maps_name_the_problem() {
        let err = |spec, l, n| map(spec, l, n).unwrap_err().to_string();
        assert!(err("every-other", 6, 7).contains("--student-layers 7"));
        assert!(err("every-other", 6, 0).contains("--student-layers 0"));
        assert!(err("0,2", 6, 3).contains("names 2 layers"));
        assert!(err("0,2,6", 6, 3).contains("teacher layer 6 does not exist"));
        assert!(err("2,1,4", 6, 3).contains("strictly increasing"));
        assert!(err("odd", 6, 3).contains("--layer-map \"odd\""));
    }
}
