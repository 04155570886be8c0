//! int8 weights: `NAME.weight` I8 [N, K] + `NAME.weight_scale` F32 [N], symmetric per output row,
//! w ≈ scale[n] * q[n, k] with q in [-127, 127]. A per-tensor scale is the same value N times.

use anyhow::{bail, Result};

use super::grid::{f16_round, rtn, unrounded, Grid, Quantized};
use super::leaf;
use crate::tensors::{OwnedTensor, TensorFile};

#[derive(Clone, Debug, PartialEq)]
pub struct Int8Weight {
    pub n: usize,
    pub k: usize,
    pub q: Vec<i8>,     // (N, K)
    pub scale: Vec<f32>, // (N)
}

impl Int8Weight {
    pub const GRID: Grid = Grid::PerChannel { max_q: 127 };

    /// Round to nearest with one scale per row, max |w| / 127 (an all-zero row gets scale 0). w (N, K), finite.
    pub fn encode(w: &[f32], n: usize, k: usize) -> Self {
        Self::from_rounded(rtn(w, n, k, &Self::GRID, &unrounded), n, k)
    }

    /// As `encode`, the scales rounded to f16 first (what GGUF's Q8_0 blocks store, `gguf::ours`).
    pub fn encode_f16(w: &[f32], n: usize, k: usize) -> Self {
        Self::from_rounded(rtn(w, n, k, &Self::GRID, &f16_round), n, k)
    }

    /// One scale for the whole tensor, max |w| / 127, stored once per row.
    pub fn encode_per_tensor(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "int8 weight: {n}x{k} needs {} values, has {}", n * k, w.len());
        let s = w.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let q = w.iter().map(|&v| if s > 0.0 { (v / s).round().clamp(-127.0, 127.0) as i8 } else { 0 }).collect();
        Self { n, k, q, scale: vec![s; n] }
    }

    /// Values already rounded on `GRID` (GPTQ's).
    pub fn from_rounded(r: Quantized, n: usize, k: usize) -> Self {
        assert_eq!((r.q.len(), r.scale.len()), (n * k, n), "int8 weight: {n}x{k} sizes");
        Self { n, k, q: r.q, scale: r.scale }
    }

    /// Row `r` of w into `out` (K).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let s = self.scale[r];
        out.iter_mut().zip(&self.q[r * self.k..(r + 1) * self.k]).for_each(|(o, &q)| *o = f32::from(q) * s);
    }

    /// w (N, K) as the runtime computes with it.
    pub fn decode(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (r, row) in w.chunks_exact_mut(self.k.max(1)).enumerate() {
            self.decode_row(r, row);
        }
        w
    }

    pub fn tensors(&self, name: &str) -> Vec<OwnedTensor> {
        vec![
            OwnedTensor::i8(leaf::of(name, leaf::WEIGHT), vec![self.n, self.k], &self.q),
            OwnedTensor::f32(leaf::of(name, leaf::WEIGHT_SCALE), vec![self.n], &self.scale),
        ]
    }

    /// `name`'s weight, checked to be (n, k) in [-127, 127] with non-negative scales. The kernels rely on the
    /// range: -128 is off the symmetric grid, and sums of two s8 products then no longer fit i16.
    pub fn read(file: &TensorFile, name: &str, n: usize, k: usize) -> Result<Self> {
        let wname = leaf::of(name, leaf::WEIGHT);
        let q = file.i8(&wname, &[n, k])?.to_vec();
        if let Some(i) = q.iter().position(|&v| v == i8::MIN) {
            bail!("{}: {wname}[{}, {}] is -128, outside the int8 grid [-127, 127]", file.file.display(), i / k, i % k);
        }
        let sname = leaf::of(name, leaf::WEIGHT_SCALE);
        let scale = file.f32(&sname, &[n])?.into_owned();
        if let Some(i) = scale.iter().position(|&v| v < 0.0) {
            bail!("{}: {sname}[{i}] is negative ({})", file.file.display(), scale[i]);
        }
        Ok(Self { n, k, q, scale })
    }

    /// Row blocks of the same K stacked along N.
    pub fn concat(parts: Vec<Self>) -> Self {
        let k = parts.first().map_or(0, |p| p.k);
        assert!(parts.iter().all(|p| p.k == k), "int8 weights of different K stacked");
        let n = parts.iter().map(|p| p.n).sum();
        let (q, scale) = super::stack_rows(parts.into_iter().map(|p| (p.q, p.scale)));
        Self { n, k, q, scale }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_stays_within_half_a_step() {
        let (n, k) = (3, 5);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5).collect();
        for e in [Int8Weight::encode(&w, n, k), Int8Weight::encode_per_tensor(&w, n, k)] {
            for (j, (row, got)) in w.chunks(k).zip(e.decode().chunks(k)).enumerate() {
                for (a, b) in row.iter().zip(got) {
                    assert!((a - b).abs() <= 0.5 * e.scale[j] * 1.0001, "{a} vs {b}");
                }
            }
        }
        assert!(Int8Weight::encode(&[0.0; 4], 1, 4).decode().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn file_round_trip_and_negative_scale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let w = Int8Weight::encode(&[0.5, -1.0, 0.25, 2.0], 2, 2);
        std::fs::write(&path, crate::tensors::serialize(w.tensors("l")).unwrap()).unwrap();
        assert_eq!(Int8Weight::read(&TensorFile::open(&path).unwrap(), "l", 2, 2).unwrap(), w);
        let mut bad = w.clone();
        bad.scale[1] = -1.0;
        std::fs::write(&path, crate::tensors::serialize(bad.tensors("l")).unwrap()).unwrap();
        let e = Int8Weight::read(&TensorFile::open(&path).unwrap(), "l", 2, 2).unwrap_err().to_string();
        assert!(e.contains("l.weight_scale[1] is negative (-1)"), "{e}");
        let mut bad = w.clone();
        bad.q[3] = i8::MIN;
        std::fs::write(&path, crate::tensors::serialize(bad.tensors("l")).unwrap()).unwrap();
        let e = Int8Weight::read(&TensorFile::open(&path).unwrap(), "l", 2, 2).unwrap_err().to_string();
        assert!(e.contains("l.weight[1, 1] is -128, outside the int8 grid"), "{e}");
    }
}
