//! f32 GEMM against a sparse weight (unstructured or N:M pruned): out (M, N) = x (M, K)·Wᵀ, touching only the
//! weights that are left. W is CSR by output row; the activations are transposed once per call to (K, M) so that
//! every kept weight w[n, k] is one broadcast times a contiguous run of M activations (an axpy into a block of
//! accumulators). That costs one load per FMA where the dense kernel reuses each load from registers, so it pays
//! only at high sparsity: `cargo bench -p shrink-kernels --bench gemm` measures where it crosses the dense kernel.
//!
//! `kernel.rs` is the product (one loop body, `multiversion!`), `reference.rs` the dense reference it is tested on.

pub(crate) mod kernel;
mod reference;
#[cfg(test)]
pub(crate) mod tests;

pub use kernel::{gemm_sparse, rows_block_on};
pub use reference::gemm_sparse_ref;

/// W (N, K) keeping only its non-zeros, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseF32 {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) row_start: Vec<u32>, // N + 1: row j holds entries row_start[j]..row_start[j + 1]
    pub(super) col: Vec<u16>, // nnz, increasing within a row
    pub(super) val: Vec<f32>, // nnz
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

    /// Output `j`'s K weights, zeros included (the dense row `from_dense` took).
    pub fn column(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n && out.len() == self.k, "column {j} of {} x {} into {}", self.n, self.k, out.len());
        out.fill(0.0);
        let (a, b) = (self.row_start[j] as usize, self.row_start[j + 1] as usize);
        self.col[a..b].iter().zip(&self.val[a..b]).for_each(|(&c, &v)| out[c as usize] = v);
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

