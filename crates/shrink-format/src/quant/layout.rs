//! Which tensors a Linear holds in each format, with their shapes: what a folder must contain for the runtime to
//! load it (checked before any work by quantize and inspect). Optional leaves (`NAME.smooth`) are not listed.

use anyhow::{bail, Result};

use super::{leaf, Acts, Format, Storage};
use crate::tensors::TensorFile;

/// (tensor, shape) of the Linear `name` (N outputs, K inputs) stored as `format`. A sparse weight's shapes depend
/// on what was kept, so they are read from `file`.
pub fn linear(format: Format, name: &str, n: usize, k: usize, file: &TensorFile) -> Result<Vec<(String, Vec<usize>)>> {
    let t = |l: &str| leaf::of(name, l);
    let mut want = vec![(t(leaf::BIAS), vec![n])];
    match format.storage {
        Storage::F32 | Storage::F16 => want.push((t(leaf::WEIGHT), vec![n, k])),
        Storage::I8 => want.extend([(t(leaf::WEIGHT), vec![n, k]), (t(leaf::WEIGHT_SCALE), vec![n])]),
        Storage::I4 { group } => want.extend([(t(leaf::WEIGHT), vec![n, k / 2]), (t(leaf::WEIGHT_SCALE), vec![n, k / group])]),
        Storage::Sparse => {
            let w = t(leaf::WEIGHT);
            let Some(&[nnz]) = file.shape(&w) else {
                bail!("{}: tensor {w} has shape {:?}; a sparse weight stores its kept values in one row", file.file.display(), file.shape(&w));
            };
            if file.contains(&t(leaf::WEIGHT_MASK)) {
                want.push((t(leaf::WEIGHT_MASK), vec![n, k.div_ceil(8)]));
            } else {
                want.extend([(t(leaf::WEIGHT_INDEX), vec![nnz]), (t(leaf::WEIGHT_ROW_NNZ), vec![n])]);
            }
            want.push((w, vec![nnz]));
        }
    }
    if format.acts == Acts::Static {
        want.extend([(t(leaf::INPUT_SCALE), vec![1]), (t(leaf::INPUT_ZERO), vec![1])]);
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Int4Weight, SparseWeight};
    use crate::tensors::{serialize, OwnedTensor};

    #[test]
    fn what_each_writer_writes_is_what_the_layout_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let (n, k) = (3, 64);
        let w: Vec<f32> = (0..n * k).map(|i| if i % 3 == 0 { i as f32 / 100.0 } else { 0.0 }).collect();
        let grid = crate::quant::ActGrid { scale: 0.1, zero: 3 };
        for (format, mut tensors) in [
            ("int4-g32-static", Int4Weight::encode(&w, n, k, 32).unwrap().tensors("l").into_iter().chain(grid.tensors("l")).collect()),
            ("sparse", SparseWeight::encode(&w, n, k).unwrap().tensors("l")),
        ] {
            tensors.push(OwnedTensor::f32("l.bias", vec![n], &[0.0; 3]));
            let mut names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
            std::fs::write(&path, serialize(tensors).unwrap()).unwrap();
            let file = TensorFile::open(&path).unwrap();
            let mut listed: Vec<String> = linear(Format::parse(format).unwrap(), "l", n, k, &file).unwrap().into_iter().map(|(t, _)| t).collect();
            names.sort();
            listed.sort();
            assert_eq!(names, listed, "{format}");
        }
    }
}
