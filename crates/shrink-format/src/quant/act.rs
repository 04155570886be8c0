//! What a Linear's int8 input needs on disk. Static formats fix the u8 grid at calibration: `NAME.input_scale`
//! F32 [1] and `NAME.input_zero` F32 [1] (an integer in 0..=255), x ≈ scale * (q - zero). SmoothQuant adds
//! `NAME.smooth` F32 [K]: inputs are divided by it before quantizing (the weights were multiplied by it).

use anyhow::{bail, Result};

use super::leaf;
use crate::tensors::{OwnedTensor, TensorFile};

/// One u8 grid for a tensor's activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActGrid {
    pub scale: f32,
    pub zero: i32,
}

impl ActGrid {
    /// Asymmetric: scale = (hi - lo) / 255, zero = round(-lo / scale) in 0..=255 (0 exactly representable).
    /// Symmetric: scale = max(-lo, hi) / 127, zero = 128 (q - 128 in [-127, 127]). A zero-width range gives scale
    /// 1, zero 0 (asymmetric) or 128. The range is first widened to include 0.
    pub fn from_range(lo: f32, hi: f32, symmetric: bool) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if symmetric {
            let scale = (-lo).max(hi) / 127.0;
            return Self { scale: if scale > 0.0 { scale } else { 1.0 }, zero: 128 };
        }
        let scale = (hi - lo) / 255.0;
        if scale > 0.0 {
            Self { scale, zero: (-lo / scale).round().clamp(0.0, 255.0) as i32 }
        } else {
            Self { scale: 1.0, zero: 0 }
        }
    }

    pub fn tensors(&self, name: &str) -> Vec<OwnedTensor> {
        vec![
            OwnedTensor::f32(leaf::of(name, leaf::INPUT_SCALE), vec![1], &[self.scale]),
            OwnedTensor::f32(leaf::of(name, leaf::INPUT_ZERO), vec![1], &[self.zero as f32]),
        ]
    }

    /// `name`'s grid; None when it stores none.
    pub fn read(file: &TensorFile, name: &str) -> Result<Option<Self>> {
        let (sname, zname) = (leaf::of(name, leaf::INPUT_SCALE), leaf::of(name, leaf::INPUT_ZERO));
        if !file.contains(&sname) && !file.contains(&zname) {
            return Ok(None);
        }
        let (s, z) = (file.f32(&sname, &[1])?[0], file.f32(&zname, &[1])?[0]);
        if s.is_nan() || s <= 0.0 || z.fract() != 0.0 || !(0.0..=255.0).contains(&z) {
            bail!("{}: {name}: input_scale {s} must be positive and input_zero {z} an integer in 0..=255", file.file.display());
        }
        Ok(Some(Self { scale: s, zero: z as i32 }))
    }
}

/// SmoothQuant's per-input factors s (K), all positive.
#[derive(Clone, Debug, PartialEq)]
pub struct Smooth(pub Vec<f32>);

impl Smooth {
    pub fn tensors(&self, name: &str) -> Vec<OwnedTensor> {
        vec![OwnedTensor::f32(leaf::of(name, leaf::SMOOTH), vec![self.0.len()], &self.0)]
    }

    /// `name`'s factors for K inputs; None when it stores none.
    pub fn read(file: &TensorFile, name: &str, k: usize) -> Result<Option<Self>> {
        let t = leaf::of(name, leaf::SMOOTH);
        if !file.contains(&t) {
            return Ok(None);
        }
        let s = file.f32(&t, &[k])?.into_owned();
        if let Some(i) = s.iter().position(|&v| v.is_nan() || v <= 0.0) {
            bail!("{}: {t}[{i}] = {} must be positive", file.file.display(), s[i]);
        }
        Ok(Some(Self(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_from_range() {
        assert_eq!(ActGrid::from_range(0.0, 0.0, false), ActGrid { scale: 1.0, zero: 0 });
        assert_eq!(ActGrid::from_range(0.0, 0.0, true), ActGrid { scale: 1.0, zero: 128 });
        assert_eq!(ActGrid::from_range(-1.0, 3.0, false), ActGrid { scale: 4.0 / 255.0, zero: 64 });
        assert_eq!(ActGrid::from_range(-1.0, 3.0, true), ActGrid { scale: 3.0 / 127.0, zero: 128 });
        // The range always holds 0.
        assert_eq!(ActGrid::from_range(2.0, 3.0, false), ActGrid::from_range(0.0, 3.0, false));
    }

    #[test]
    fn bad_grids_and_smooth_factors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let write = |t: Vec<OwnedTensor>| std::fs::write(&path, crate::tensors::serialize(t).unwrap()).unwrap();
        let g = ActGrid { scale: 0.5, zero: 3 };
        write([g.tensors("l"), Smooth(vec![1.0, 2.0]).tensors("l")].into_iter().flatten().collect());
        let f = TensorFile::open(&path).unwrap();
        assert_eq!(ActGrid::read(&f, "l").unwrap(), Some(g));
        assert_eq!(Smooth::read(&f, "l", 2).unwrap(), Some(Smooth(vec![1.0, 2.0])));
        assert_eq!(ActGrid::read(&f, "other").unwrap(), None);
        write([ActGrid { scale: 0.5, zero: 300 }.tensors("l"), Smooth(vec![1.0, 0.0]).tensors("l")].into_iter().flatten().collect());
        let f = TensorFile::open(&path).unwrap();
        assert!(ActGrid::read(&f, "l").unwrap_err().to_string().contains("input_zero 300 an integer in 0..=255"));
        assert!(Smooth::read(&f, "l", 2).unwrap_err().to_string().contains("l.smooth[1] = 0 must be positive"));
    }
}
