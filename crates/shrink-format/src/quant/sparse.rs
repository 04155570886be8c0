//! Pruned f32 weights (unstructured or N:M): `NAME.weight` F32 [nnz] holds the kept (non-zero) values row by row,
//! placed by either `NAME.weight_mask` U8 [N, ceil(K/8)] (bit k % 8 of byte k / 8 set where w[n, k] is kept) or
//! `NAME.weight_index` U16 [nnz] (columns, increasing within a row) + `NAME.weight_row_nnz` U16 [N], whichever is
//! smaller.

use anyhow::{anyhow, bail, Result};

use super::leaf;
use crate::tensors::{OwnedTensor, TensorFile};
use crate::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    Mask(Vec<u8>), // (N, ceil(K/8))
    Csr { row_nnz: Vec<u16>, index: Vec<u16> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SparseWeight {
    pub n: usize,
    pub k: usize,
    pub values: Vec<f32>, // (nnz)
    pub place: Placement,
}

impl SparseWeight {
    /// Largest K whose column indices and row counts fit a u16.
    pub const MAX_K: usize = u16::MAX as usize;

    /// The non-zeros of w (N, K), placed the smaller way.
    pub fn encode(w: &[f32], n: usize, k: usize) -> Result<Self, Error> {
        if k > Self::MAX_K {
            return Err(Error::Shape(format!("K = {k} is above the sparse format's {}", Self::MAX_K)));
        }
        assert_eq!(w.len(), n * k, "sparse weight: {n}x{k} needs {} values, has {}", n * k, w.len());
        let (mut values, mut row_nnz, mut index) = (Vec::new(), Vec::with_capacity(n), Vec::new());
        for row in w.chunks_exact(k.max(1)).take(n) {
            let before = values.len();
            for (c, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                index.push(c as u16);
                values.push(v);
            }
            row_nnz.push((values.len() - before) as u16);
        }
        let kb = k.div_ceil(8);
        let place = if n * kb <= 2 * (values.len() + n) {
            let mut mask = vec![0u8; n * kb];
            let mut cols = index.iter();
            for (j, &c) in row_nnz.iter().enumerate() {
                for &col in cols.by_ref().take(c as usize) {
                    mask[j * kb + col as usize / 8] |= 1 << (col % 8);
                }
            }
            Placement::Mask(mask)
        } else {
            Placement::Csr { row_nnz, index }
        };
        Ok(Self { n, k, values, place })
    }

    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// (row counts N, columns nnz), whichever way it is placed.
    fn csr(&self) -> (Vec<u16>, Vec<u16>) {
        match &self.place {
            Placement::Csr { row_nnz, index } => (row_nnz.clone(), index.clone()),
            Placement::Mask(mask) => {
                let kb = self.k.div_ceil(8);
                let (mut row_nnz, mut index) = (Vec::with_capacity(self.n), Vec::with_capacity(self.nnz()));
                for row in mask.chunks_exact(kb.max(1)).take(self.n) {
                    let before = index.len();
                    index.extend((0..self.k).filter(|c| row[c / 8] >> (c % 8) & 1 == 1).map(|c| c as u16));
                    row_nnz.push((index.len() - before) as u16);
                }
                (row_nnz, index)
            }
        }
    }

    /// What is inconsistent between the counts, columns and values, if anything.
    fn check(&self) -> Result<(), Error> {
        let (row_nnz, index) = self.csr();
        if self.k > Self::MAX_K || row_nnz.len() != self.n {
            return Err(Error::Inconsistent(format!("{} row counts for a {} x {} weight (K at most {})", row_nnz.len(), self.n, self.k, Self::MAX_K)));
        }
        // Summed as usize: N counts of up to 65535 each can pass u32.
        let total: usize = row_nnz.iter().map(|&c| c as usize).sum();
        if total != self.nnz() {
            return Err(Error::Inconsistent(format!("row counts add up to {total} but there are {} values", self.nnz())));
        }
        if index.len() != total {
            return Err(Error::Inconsistent(format!("{} column indices for {total} values", index.len())));
        }
        let mut at = 0;
        for (j, &c) in row_nnz.iter().enumerate() {
            let cols = &index[at..at + c as usize];
            if cols.iter().any(|&c| c as usize >= self.k) || cols.windows(2).any(|p| p[0] >= p[1]) {
                return Err(Error::Inconsistent(format!("row {j}: column indices must be increasing and below {}", self.k)));
            }
            at += c as usize;
        }
        Ok(())
    }

    /// w (N, K) with zeros where nothing is kept.
    pub fn decode(&self) -> Vec<f32> {
        let (row_nnz, index) = self.csr();
        let mut w = vec![0f32; self.n * self.k];
        let mut at = 0;
        for (j, &c) in row_nnz.iter().enumerate() {
            for p in at..at + c as usize {
                w[j * self.k + index[p] as usize] = self.values[p];
            }
            at += c as usize;
        }
        w
    }

    pub fn tensors(&self, name: &str) -> Vec<OwnedTensor> {
        let mut t = vec![OwnedTensor::f32(leaf::of(name, leaf::WEIGHT), vec![self.nnz()], &self.values)];
        match &self.place {
            Placement::Mask(m) => t.push(OwnedTensor::u8(leaf::of(name, leaf::WEIGHT_MASK), vec![self.n, self.k.div_ceil(8)], m.clone())),
            Placement::Csr { row_nnz, index } => {
                t.push(OwnedTensor::u16(leaf::of(name, leaf::WEIGHT_ROW_NNZ), vec![self.n], row_nnz));
                t.push(OwnedTensor::u16(leaf::of(name, leaf::WEIGHT_INDEX), vec![self.nnz()], index));
            }
        }
        t
    }

    /// `name`'s (n, k) weight, checked to be consistent.
    pub fn read(file: &TensorFile, name: &str, n: usize, k: usize) -> Result<Self> {
        let path = file.file.display();
        let wname = leaf::of(name, leaf::WEIGHT);
        let nnz = match file.shape(&wname) {
            Some(&[nnz]) => nnz,
            other => bail!("{path}: tensor {wname} has shape {other:?}; a sparse weight stores its kept values in one row"),
        };
        let values = file.f32(&wname, &[nnz])?.into_owned();
        let mask = leaf::of(name, leaf::WEIGHT_MASK);
        let place = if file.contains(&mask) {
            Placement::Mask(file.u8(&mask, &[n, k.div_ceil(8)])?.to_vec())
        } else {
            let row_nnz = file.u16(&leaf::of(name, leaf::WEIGHT_ROW_NNZ), &[n])?;
            Placement::Csr { row_nnz, index: file.u16(&leaf::of(name, leaf::WEIGHT_INDEX), &[nnz])? }
        };
        let s = Self { n, k, values, place };
        s.check().map_err(|e| anyhow!("{path}: sparse {wname}: {e}"))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_placements_round_trip_and_the_smaller_is_chosen() {
        // 2 of 70 kept per row: indices are smaller than a 9-byte mask row. Half kept: the mask is.
        for (keep, mask) in [(35, true), (2, false), (70, true), (36, true)] {
            let (n, k) = (3, 70);
            let w: Vec<f32> = (0..n * k).map(|i| if i % 70 < keep { 1.0 + i as f32 } else { 0.0 }).collect();
            let s = SparseWeight::encode(&w, n, k).unwrap();
            assert_eq!(matches!(s.place, Placement::Mask(_)), mask, "keep {keep}");
            assert_eq!(s.decode(), w);
            s.check().unwrap();
        }
    }

    #[test]
    fn inconsistent_parts_are_refused() {
        let w = [0.0, 1.0, 2.0, 0.0, 0.0, 3.0];
        let s = SparseWeight::encode(&w, 2, 3).unwrap();
        let csr = |row_nnz: Vec<u16>, index: Vec<u16>, values: Vec<f32>| SparseWeight { n: 2, k: 3, values, place: Placement::Csr { row_nnz, index } };
        assert!(csr(vec![2, 1], vec![1, 1, 2], vec![1.0, 2.0, 3.0]).check().unwrap_err().to_string().contains("row 0: column indices must be increasing"));
        assert!(csr(vec![2, 1], vec![1, 2, 3], vec![1.0, 2.0, 3.0]).check().unwrap_err().to_string().contains("below 3"));
        assert!(csr(vec![2, 2], vec![1, 2, 2], vec![1.0, 2.0, 3.0]).check().unwrap_err().to_string().contains("row counts add up to 4 but there are 3 values"));
        let mut short = s.clone();
        short.values.pop();
        assert!(short.check().unwrap_err().to_string().contains("add up to 3 but there are 2 values"));
        assert!(SparseWeight::encode(&vec![1.0; 70000], 1, 70000).unwrap_err().to_string().contains("above the sparse format's 65535"));
    }
}
