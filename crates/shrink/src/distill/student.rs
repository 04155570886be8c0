//! The student: a BERT of N layers, each a copy of one teacher layer (`--layer-map`), with the teacher's
//! embeddings and head. It is an ordinary model folder (num_hidden_layers = N) every command loads.

use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Result};
use shrink_model::Bert;

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
