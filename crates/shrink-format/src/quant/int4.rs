//! int4 weights, symmetric per (row, group of K): `NAME.weight` U8 [N, K/2] holds two's complement nibbles, low
//! nibble = even k, values in [-7, 7]; `NAME.weight_scale` F16 [N, K/group] (F32 is read too), w ≈ scale * q.
//! This file is the one place the nibble layout is written down; the kernels take the unpacked values.

use anyhow::{bail, Result};
use safetensors::Dtype;

use super::grid::{f16_round, rtn, Grid, Quantized};
use super::leaf;
use crate::tensors::{OwnedTensor, TensorFile};
use crate::Error;

/// The group sizes the int4 formats use (and the kernels take).
pub const GROUPS: [usize; 3] = [32, 64, 128];

#[derive(Clone, Debug, PartialEq)]
pub struct Int4Weight {
    pub n: usize,
    pub k: usize,
    pub group: usize,
    pub packed: Vec<u8>, // (N, K/2)
    pub scale: Vec<f32>, // (N, K/group), f16-exact when encoded here
}

/// q (values in [-7, 7]) as nibbles, two per byte, low nibble = even index.
pub fn pack(q: &[i8]) -> Vec<u8> {
    q.chunks_exact(2).map(|p| (p[0] as u8 & 0xF) | (p[1] as u8) << 4).collect()
}

/// The two signed values of one byte: (even index, odd index).
#[inline(always)]
pub fn unpack(byte: u8) -> [i8; 2] {
    [(byte << 4) as i8 >> 4, byte as i8 >> 4]
}

fn check(k: usize, group: usize) -> Result<(), Error> {
    if !GROUPS.contains(&group) {
        return Err(Error::Shape(format!("int4 group {group} is not one of {GROUPS:?}")));
    }
    if !k.is_multiple_of(group) {
        return Err(Error::Shape(format!("K = {k} is not a multiple of the int4 group {group}")));
    }
    Ok(())
}

impl Int4Weight {
    pub fn grid(group: usize) -> Grid {
        Grid::Groups { max_q: 7, group }
    }

    /// Round to nearest, scale max |w| / 7 per group rounded to f16. w (N, K), finite.
    pub fn encode(w: &[f32], n: usize, k: usize, group: usize) -> Result<Self, Error> {
        check(k, group)?;
        Ok(Self::from_rounded(rtn(w, n, k, &Self::grid(group), &f16_round), n, k, group))
    }

    /// Values already rounded on `grid(group)` (GPTQ's).
    pub fn from_rounded(r: Quantized, n: usize, k: usize, group: usize) -> Self {
        assert_eq!((r.q.len(), r.scale.len()), (n * k, n * (k / group)), "int4 weight: {n}x{k} group {group} sizes");
        Self { n, k, group, packed: pack(&r.q), scale: r.scale }
    }

    /// q (N, K) in [-7, 7].
    pub fn values(&self) -> Vec<i8> {
        self.packed.iter().flat_map(|&b| unpack(b)).collect()
    }

    /// Row `r` of w into `out` (K).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let (k, groups) = (self.k, self.k / self.group);
        let (q, s) = (&self.packed[r * k / 2..][..k / 2], &self.scale[r * groups..][..groups]);
        for (i, (o, &byte)) in out.chunks_exact_mut(2).zip(q).enumerate() {
            // A pair never straddles a group (groups are even).
            let s = s[2 * i / self.group];
            let [a, b] = unpack(byte);
            o[0] = f32::from(a) * s;
            o[1] = f32::from(b) * s;
        }
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
        let (n, k) = (self.n, self.k);
        vec![
            OwnedTensor::u8(leaf::of(name, leaf::WEIGHT), vec![n, k / 2], self.packed.clone()),
            OwnedTensor::f16(leaf::of(name, leaf::WEIGHT_SCALE), vec![n, k / self.group], &self.scale),
        ]
    }

    /// `name`'s weight, checked to be (n, k) on `group` with non-negative scales.
    pub fn read(file: &TensorFile, name: &str, n: usize, k: usize, group: usize) -> Result<Self> {
        let path = file.file.display();
        check(k, group).map_err(|e| anyhow::anyhow!("{path}: {name}: {e}"))?;
        let wname = leaf::of(name, leaf::WEIGHT);
        if file.dtype(&wname).is_some_and(|d| d != Dtype::U8) {
            bail!("{path}: tensor {wname} is {:?}, expected U8 (packed int4)", file.dtype(&wname).unwrap());
        }
        let packed = file.u8(&wname, &[n, k / 2])?.to_vec();
        // Nibble 8 is -8, off the symmetric grid; the kernels rely on [-7, 7] (i16 sums of two products).
        if let Some(i) = (0..2 * packed.len()).find(|&i| (packed[i / 2] >> (4 * (i % 2))) & 0xF == 8) {
            bail!("{path}: {wname}: value [{}, {}] is -8, outside the int4 grid [-7, 7]", i / k, i % k);
        }
        let sname = leaf::of(name, leaf::WEIGHT_SCALE);
        let scale = file.f32(&sname, &[n, k / group])?.into_owned();
        if let Some(i) = scale.iter().position(|&v| v < 0.0) {
            bail!("{path}: {sname}[{i}] is negative ({})", scale[i]);
        }
        Ok(Self { n, k, group, packed, scale })
    }

    /// Row blocks of the same K and group stacked along N.
    pub fn concat(parts: Vec<Self>) -> Self {
        let (k, group) = parts.first().map_or((0, GROUPS[0]), |p| (p.k, p.group));
        assert!(parts.iter().all(|p| (p.k, p.group) == (k, group)), "int4 weights of different K or group stacked");
        let n = parts.iter().map(|p| p.n).sum();
        let (packed, scale) = super::stack_rows(parts.into_iter().map(|p| (p.packed, p.scale)));
        Self { n, k, group, packed, scale }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_are_low_first_twos_complement() {
        let q: Vec<i8> = vec![-7, 7, 0, -1, 3, -4];
        assert_eq!(pack(&q), vec![0x79, 0xF0, 0xC3]);
        assert_eq!(pack(&q).iter().flat_map(|&b| unpack(b)).collect::<Vec<_>>(), q);
    }

    #[test]
    fn encode_decode_stays_within_half_a_step() {
        let (n, k, group) = (2, 64, 32);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 31) as f32 / 9.0 - 1.7).collect();
        let e = Int4Weight::encode(&w, n, k, group).unwrap();
        assert!(e.scale.iter().all(|&s| f16_round(s) == s), "scales are f16-exact");
        for (i, (a, b)) in w.iter().zip(e.decode()).enumerate() {
            let s = e.scale[i / group];
            assert!((a - b).abs() <= 0.5 * s * 1.01, "{a} vs {b}");
        }
        assert!(Int4Weight::encode(&w, n, k, 48).unwrap_err().to_string().contains("not one of"));
        assert!(Int4Weight::encode(&w[..96], 1, 96, 64).unwrap_err().to_string().contains("K = 96 is not a multiple of the int4 group 64"));
    }

    #[test]
    fn file_round_trip_refuses_another_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let w: Vec<f32> = (0..64).map(|i| i as f32 / 10.0 - 3.0).collect();
        let e = Int4Weight::encode(&w, 2, 32, 32).unwrap();
        std::fs::write(&path, crate::tensors::serialize(e.tensors("l")).unwrap()).unwrap();
        assert_eq!(Int4Weight::read(&TensorFile::open(&path).unwrap(), "l", 2, 32, 32).unwrap(), e);
        // An I8 weight of the packed shape is not int4, whatever its size says.
        let i8s = vec![OwnedTensor::i8("l.weight", vec![2, 16], &[1; 32]), OwnedTensor::f32("l.weight_scale", vec![2, 1], &[1.0, 1.0])];
        std::fs::write(&path, crate::tensors::serialize(i8s).unwrap()).unwrap();
        let err = Int4Weight::read(&TensorFile::open(&path).unwrap(), "l", 2, 32, 32).unwrap_err().to_string();
        assert!(err.contains("tensor l.weight is I8, expected U8 (packed int4)"), "{err}");
        // Nibble 8 (-8) at row 1, k 5: the high nibble of that row's third byte.
        let mut bad = e.clone();
        bad.packed[16 + 2] = (bad.packed[16 + 2] & 0x0F) | 0x80;
        std::fs::write(&path, crate::tensors::serialize(bad.tensors("l")).unwrap()).unwrap();
        let err = Int4Weight::read(&TensorFile::open(&path).unwrap(), "l", 2, 32, 32).unwrap_err().to_string();
        assert!(err.contains("l.weight: value [1, 5] is -8, outside the int4 grid [-7, 7]"), "{err}");
    }
}
