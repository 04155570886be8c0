//! f32 GEMM against a sparse weight (unstructured or N:M pruned): out (M, N) = x (M, K)·Wᵀ, touching only the
//! weights that are left. W is CSR by output row; the activations are transposed once per call to (K, M) so that
//! every kept weight w[n, k] is one broadcast times a contiguous run of M activations (an axpy into a block of
//! accumulators). That costs one load per FMA where the dense kernel reuses each load from registers, so it pays
//! only at high sparsity: `cargo bench -p shrink-kernels --bench gemm` measures where it crosses the dense kernel.

use rayon::prelude::*;

use crate::epilogue::Epilogue;
use crate::multiversion;

/// Output rows of one task: 64 accumulators are 4 AVX-512 / 8 AVX2 registers.
const MB: usize = 64;

/// W (N, K) keeping only its non-zeros, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseF32 {
    n: usize,
    k: usize,
    row_start: Vec<u32>, // N + 1: row j holds entries row_start[j]..row_start[j + 1]
    col: Vec<u16>,       // nnz, increasing within a row
    val: Vec<f32>,       // nnz
}

impl SparseF32 {
    /// Largest K whose column indices and row counts fit a u16.
    pub const MAX_K: usize = u16::MAX as usize;

    /// The non-zeros of w (N, K, row-major).
    pub fn from_dense(w: &[f32], n: usize, k: usize) -> Self {
        assert!(k <= Self::MAX_K && w.len() == n * k, "W {n} x {k} (len {}), K at most {}", w.len(), Self::MAX_K);
        let mut s = Self { n, k, row_start: Vec::with_capacity(n + 1), col: Vec::new(), val: Vec::new() };
        s.row_start.push(0);
        for row in w.chunks_exact(k) {
            for (c, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                s.col.push(c as u16);
                s.val.push(v);
            }
            s.row_start.push(s.val.len() as u32);
        }
        s
    }

    /// From CSR parts as stored on disk: the number of entries of each row, their columns and values. The error
    /// says what is inconsistent.
    pub fn from_csr(n: usize, k: usize, row_nnz: &[u16], col: &[u16], val: &[f32]) -> Result<Self, String> {
        if k > Self::MAX_K || row_nnz.len() != n || col.len() != val.len() {
            return Err(format!("{} row counts, {} columns, {} values for a {n} x {k} weight", row_nnz.len(), col.len(), val.len()));
        }
        // Summed as usize first: N counts of up to 65535 each can pass u32 and wrap the offsets.
        let total: usize = row_nnz.iter().map(|&c| c as usize).sum();
        if total != val.len() {
            return Err(format!("row counts add up to {total} but there are {} values", val.len()));
        }
        let mut row_start = Vec::with_capacity(n + 1);
        row_start.push(0u32);
        for &c in row_nnz {
            row_start.push(row_start[row_start.len() - 1] + c as u32);
        }
        for j in 0..n {
            let cols = &col[row_start[j] as usize..row_start[j + 1] as usize];
            if cols.iter().any(|&c| c as usize >= k) || cols.windows(2).any(|p| p[0] >= p[1]) {
                return Err(format!("row {j}: column indices must be increasing and below {k}"));
            }
        }
        Ok(Self { n, k, row_start, col: col.to_vec(), val: val.to_vec() })
    }

    /// From a bitmask (N, ceil(K / 8), bit k % 8 of byte k / 8 set where w[n, k] is kept) and the kept values in
    /// row-major order.
    pub fn from_mask(n: usize, k: usize, mask: &[u8], val: &[f32]) -> Result<Self, String> {
        let kb = k.div_ceil(8);
        if k > Self::MAX_K || mask.len() != n * kb {
            return Err(format!("mask of {} bytes for a {n} x {k} weight (want {})", mask.len(), n * kb));
        }
        let mut row_nnz = Vec::with_capacity(n);
        let mut col = Vec::with_capacity(val.len());
        for row in mask.chunks_exact(kb) {
            let before = col.len();
            col.extend((0..k).filter(|c| row[c / 8] >> (c % 8) & 1 == 1).map(|c| c as u16));
            row_nnz.push((col.len() - before) as u16);
        }
        Self::from_csr(n, k, &row_nnz, &col, val)
    }

    /// On-disk parts: (row counts N, columns nnz).
    pub fn csr_parts(&self) -> (Vec<u16>, &[u16]) {
        ((0..self.n).map(|j| (self.row_start[j + 1] - self.row_start[j]) as u16).collect(), &self.col)
    }

    /// On-disk bitmask (N, ceil(K / 8)).
    pub fn mask(&self) -> Vec<u8> {
        let kb = self.k.div_ceil(8);
        let mut m = vec![0u8; self.n * kb];
        for j in 0..self.n {
            for &c in &self.col[self.row_start[j] as usize..self.row_start[j + 1] as usize] {
                m[j * kb + c as usize / 8] |= 1 << (c % 8);
            }
        }
        m
    }

    pub fn values(&self) -> &[f32] {
        &self.val
    }

    pub fn to_dense(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for j in 0..self.n {
            for p in self.row_start[j] as usize..self.row_start[j + 1] as usize {
                w[j * self.k + self.col[p] as usize] = self.val[p];
            }
        }
        w
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn nnz(&self) -> usize {
        self.val.len()
    }

    /// Multiplies rows `rows` of W (output columns) by `s`.
    pub fn scale_columns(&mut self, rows: std::ops::Range<usize>, s: f32) {
        let (a, b) = (self.row_start[rows.start] as usize, self.row_start[rows.end] as usize);
        self.val[a..b].iter_mut().for_each(|v| *v *= s);
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.row_start.len() * 4 + self.col.len() * 2 + self.val.len() * 4
    }
}

/// out (M, N) = x (M, K)·Wᵀ, then the epilogue. `xt` is a reused buffer for x transposed (grown to K·M once).
pub fn gemm_sparse(out: &mut [f32], x: &[f32], m: usize, w: &SparseF32, ep: Epilogue, xt: &mut Vec<f32>) {
    let (n, k) = (w.n, w.k);
    assert!(x.len() >= m * k && out.len() >= m * n, "x {} / out {} too short for {m} x {k} -> {n}", x.len(), out.len());
    if xt.len() < k * m {
        xt.resize(k * m, 0.0);
    }
    let xt = &mut xt[..k * m]; // (K, M)
    transpose(x, m, k, xt);
    let xt = &*xt;
    let blocks = out[..m * n].par_chunks_mut(MB * n);
    blocks.enumerate().for_each(|(b, rows)| rows_block(rows, xt, m, b * MB, w, &ep));
}

multiversion!(
    /// out rows m0..m0 + rows.len() / N of the product.
    rows_block, rows_block_on; (rows: &mut [f32], xt: &[f32], m: usize, m0: usize, w: &SparseF32, ep: &Epilogue) {
        let n = w.n;
        let mb = rows.len() / n;
        for j in 0..n {
            let entries = w.row_start[j] as usize..w.row_start[j + 1] as usize;
            let (cols, vals) = (&w.col[entries.clone()], &w.val[entries]);
            // Fixed-width pieces keep their accumulators in registers; only a tail under 16 rows goes through memory.
            let mut i0 = 0;
            while i0 < mb {
                let left = mb - i0;
                if left >= 64 {
                    store(rows, n, j, i0, &column::<64>(cols, vals, xt, m, m0 + i0));
                    i0 += 64;
                } else if left >= 16 {
                    store(rows, n, j, i0, &column::<16>(cols, vals, xt, m, m0 + i0));
                    i0 += 16;
                } else {
                    let mut acc = [0f32; 16];
                    for (&c, &v) in cols.iter().zip(vals) {
                        for (a, &x) in acc.iter_mut().zip(&xt[c as usize * m + m0 + i0..][..left]) {
                            *a = v.mul_add(x, *a);
                        }
                    }
                    store(rows, n, j, i0, &acc[..left]);
                    i0 = mb;
                }
            }
        }
        for (i, row) in rows.chunks_exact_mut(n).enumerate() {
            ep.apply_inline(row, m0 + i, 0, n);
        }
    }
);

/// Output column j of W-rows' dot products for the W activations rows m0..m0 + W (xt: (K, M)).
#[inline(always)]
fn column<const W: usize>(cols: &[u16], vals: &[f32], xt: &[f32], m: usize, m0: usize) -> [f32; W] {
    let mut acc = [0f32; W];
    for (&c, &v) in cols.iter().zip(vals) {
        let xc: &[f32; W] = xt[c as usize * m + m0..][..W].try_into().unwrap();
        for i in 0..W {
            acc[i] = v.mul_add(xc[i], acc[i]);
        }
    }
    acc
}

/// rows[(i0 + i) * n + j] = acc[i]: one output column of a block.
#[inline(always)]
fn store(rows: &mut [f32], n: usize, j: usize, i0: usize, acc: &[f32]) {
    for (i, &a) in acc.iter().enumerate() {
        rows[(i0 + i) * n + j] = a;
    }
}

/// xt (K, M) = x (M, K)ᵀ in 8 x 8 tiles, so reads and writes both stay within a few cache lines.
fn transpose(x: &[f32], m: usize, k: usize, xt: &mut [f32]) {
    const TILE: usize = 8;
    for i0 in (0..m).step_by(TILE) {
        for p0 in (0..k).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                for p in p0..(p0 + TILE).min(k) {
                    xt[p * m + i] = x[i * k + p];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;
    use crate::sgemm::gemm_f32_ref;
    use crate::testdata::uniform;

    /// |fast - ref| <= budget x (sum_k |x w| + 1): the sums run in another order than the reference's.
    const SPARSE_REL_BUDGET: f32 = 1e-5;

    /// uniform values with a fraction `density` kept (by a second stream), the rest exactly 0.
    fn sparse_w(n: usize, k: usize, density: f32, seed: u64) -> Vec<f32> {
        let keep = uniform(n * k, seed + 100);
        uniform(n * k, seed).into_iter().zip(keep).map(|(v, r)| if (r + 1.0) / 2.0 < density { v } else { 0.0 }).collect()
    }

    #[test]
    fn matches_dense_reference_on_awkward_shapes() {
        for &(m, k, n, density) in &[(1, 1, 1, 1.0), (1, 5, 7, 0.5), (3, 33, 17, 0.1), (17, 384, 97, 0.3), (130, 100, 50, 0.05), (64, 48, 9, 0.0)] {
            let (x, w, bias, res) = (uniform(m * k, 1), sparse_w(n, k, density, 2), uniform(n, 3), uniform(m * n, 4));
            let s = SparseF32::from_dense(&w, n, k);
            assert_eq!(s.to_dense(), w);
            let mag: Vec<f32> = (0..m * n).map(|i| (0..k).map(|p| (x[i / n * k + p] * w[i % n * k + p]).abs()).sum()).collect();
            for ep in [Epilogue::default(), Epilogue { bias: Some(&bias), gelu: true, residual: Some(&res) }] {
                let mut want = vec![0f32; m * n];
                gemm_f32_ref(&mut want, &x, m, &w, n, k, ep);
                for level in Isa::available() {
                    let mut xt = vec![0f32; k * m];
                    transpose(&x, m, k, &mut xt);
                    let mut got = vec![f32::NAN; m * n];
                    for (b, rows) in got.chunks_mut(MB * n).enumerate() {
                        rows_block_on(level, rows, &xt, m, b * MB, &s, &ep);
                    }
                    let mut dispatched = vec![f32::NAN; m * n];
                    gemm_sparse(&mut dispatched, &x, m, &s, ep, &mut Vec::new());
                    for i in 0..m * n {
                        let tol = SPARSE_REL_BUDGET * (mag[i] + 1.0);
                        assert!((got[i] - want[i]).abs() <= tol, "{level:?} m{m} k{k} n{n} [{i}]: {} vs {}", got[i], want[i]);
                        assert!((dispatched[i] - want[i]).abs() <= tol, "dispatched m{m} k{k} n{n} [{i}]");
                    }
                }
            }
        }
    }

    #[test]
    fn csr_and_mask_round_trip_and_reject_bad_parts() {
        let (n, k) = (13, 70);
        let s = SparseF32::from_dense(&sparse_w(n, k, 0.2, 9), n, k);
        let (row_nnz, col) = s.csr_parts();
        assert_eq!(SparseF32::from_csr(n, k, &row_nnz, col, s.values()).unwrap(), s);
        assert_eq!(SparseF32::from_mask(n, k, &s.mask(), s.values()).unwrap(), s);
        let mut bad = col.to_vec();
        bad[0] = k as u16;
        assert!(SparseF32::from_csr(n, k, &row_nnz, &bad, s.values()).unwrap_err().contains("below 70"));
        assert!(SparseF32::from_csr(n, k, &row_nnz, col, &s.values()[1..]).is_err());
        assert!(SparseF32::from_mask(n, k, &s.mask()[1..], s.values()).unwrap_err().contains("mask of"));
        assert!(SparseF32::from_mask(n, k, &s.mask(), &s.values()[1..]).unwrap_err().contains("values"));
    }

    /// Row counts whose sum passes u32 used to wrap to the number of values and then panic on a slice.
    #[test]
    fn row_counts_past_u32_are_an_error() {
        let n = 65_538; // x 65_535 per row = 2^32 + 65_534
        let (row_nnz, col, val) = (vec![u16::MAX; n], vec![0u16; 65_534], vec![1f32; 65_534]);
        assert!(SparseF32::from_csr(n, 100, &row_nnz, &col, &val).unwrap_err().contains("add up to 4295032830"));
    }

    #[test]
    fn scaling_output_rows_scales_only_their_values() {
        let (n, k) = (6, 10);
        let w = sparse_w(n, k, 0.5, 11);
        let mut s = SparseF32::from_dense(&w, n, k);
        s.scale_columns(2..4, 0.5);
        let want: Vec<f32> = w.iter().enumerate().map(|(i, &v)| if (2..4).contains(&(i / k)) { v * 0.5 } else { v }).collect();
        assert_eq!(s.to_dense(), want);
    }
}
