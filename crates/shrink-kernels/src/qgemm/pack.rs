//! Quantized weights (int8 per channel, int4 per K group; encoded by `shrink_format::quant`) packed into the
//! kernels' 64-byte chunks.

use super::{Chunk, BLOCK_PANELS, MAX_K, PANEL};

/// Values from one K block's column sums to the next's, within a column block of `BLOCK_PANELS` panels.
pub(super) const BLOCK_SUM_STRIDE: usize = BLOCK_PANELS * PANEL;

/// Int8 weights packed for the kernels: panel p (columns 16p..16p+16) is kq = K_pad / 4 chunks, chunk (p, t) byte
/// 4c + i = q[16p + c, 4t + i] (zero past N or K), so panel-major `data[p * kq + t]`. Plus the per-column sums of q
/// (for the activation zero point) and the per-column scales, both zero-padded to whole panels.
pub struct PackedI8 {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) kq: usize,
    pub(super) data: Vec<Chunk>, // panels x kq
    pub(super) colsum: Vec<i32>, // panels * 16
    pub(super) scale: Vec<f32>,  // panels * 16
    /// Column sums per K block of `group` for activations quantized in blocks (`with_block_sums`), column block
    /// by column block (the panels a work unit reads): panel p, block g at
    /// `((p / BLOCK_PANELS) * blocks + g) * BLOCK_SUM_STRIDE + (p % BLOCK_PANELS) * 16`. A tile's sums then follow
    /// its weights block by block. Laid out block-major (one row of N per block), they were strided cache misses:
    /// int8 generation ran at 0.78x of per-token activations, 0.87x now. Empty until asked for.
    pub(super) group: usize,
    pub(super) block_sum: Vec<i32>, // column blocks x K / group x 48
}

impl PackedI8 {
    /// Adds the column sums per K block of `group`, which `gemm_i8` needs for activations quantized in such blocks.
    pub fn with_block_sums(mut self, group: usize) -> Self {
        assert!(group.is_multiple_of(4) && self.k.is_multiple_of(group), "int8 weight: K = {} is not in blocks of {group}", self.k);
        // The kernels take a block's column sums as i16 (vpmaddwd).
        assert!(group * 127 <= i16::MAX as usize, "int8 weight: blocks of {group} are above the {} the kernels take", i16::MAX / 127);
        let (panels, blocks) = (self.data.len() / self.kq.max(1), self.k / group);
        let mut sums = vec![0i32; panels.div_ceil(BLOCK_PANELS) * blocks * BLOCK_SUM_STRIDE];
        (self.group, self.block_sum) = (group, Vec::new());
        for p in 0..panels {
            for t in 0..self.k / 4 {
                let at = self.block_sum_at(p, 4 * t / group);
                for (c, q) in self.data[p * self.kq + t].0.chunks_exact(4).enumerate() {
                    sums[at + c] += q.iter().map(|&v| v as i8 as i32).sum::<i32>();
                }
            }
        }
        self.block_sum = sums;
        self
    }

    /// Where panel p's column sums of K block g start in `block_sum`.
    #[inline(always)]
    pub(super) fn block_sum_at(&self, p: usize, g: usize) -> usize {
        ((p / BLOCK_PANELS) * (self.k / self.group) + g) * BLOCK_SUM_STRIDE + (p % BLOCK_PANELS) * PANEL
    }

    /// Multiplies output columns `cols` by `s`, exactly: only their scales change (folds a constant into a layer).
    pub fn scale_columns(&mut self, cols: std::ops::Range<usize>, s: f32) {
        assert!(cols.end <= self.n, "columns {cols:?} outside {}", self.n);
        self.scale[cols].iter_mut().for_each(|v| *v *= s);
    }

    /// q is n x k row-major in [-127, 127], scale n.
    pub fn pack(q: &[i8], scale: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(q.len(), n * k, "int8 weight: {n}x{k} needs {} values, has {}", n * k, q.len());
        assert_eq!(scale.len(), n, "int8 weight: {n} scales needed, {} given", scale.len());
        assert!(k <= MAX_K, "int8 weight: K = {k} above MAX_K = {MAX_K}");
        let (panels, kq) = (n.div_ceil(PANEL), k.div_ceil(4));
        let mut data = vec![Chunk([0; 64]); panels * kq];
        let mut colsum = vec![0i32; panels * PANEL];
        let mut padded_scale = vec![0f32; panels * PANEL];
        for (j, row) in q.chunks_exact(k.max(1)).take(n).enumerate() {
            let (p, c) = (j / PANEL, j % PANEL);
            for (kk, &v) in row.iter().enumerate() {
                data[p * kq + kk / 4].0[4 * c + kk % 4] = v as u8;
            }
            colsum[j] = row.iter().map(|&v| v as i32).sum();
            padded_scale[j] = scale[j];
        }
        Self { n, k, kq, data, colsum, scale: padded_scale, group: 0, block_sum: Vec::new() }
    }

    /// Output column `j`'s K weights, decoded (scale * q): a tied embedding table's row read back from its head.
    pub fn column(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n && out.len() == self.k, "column {j} of {} x {} into {}", self.n, self.k, out.len());
        let (p, c) = (j / PANEL, j % PANEL);
        for (kk, o) in out.iter_mut().enumerate() {
            *o = self.scale[j] * self.data[p * self.kq + kk / 4].0[4 * c + kk % 4] as i8 as f32;
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64 + (self.colsum.len() + self.scale.len() + self.block_sum.len()) * 4
    }
}

/// The int4 group sizes the kernels take.
pub const INT4_GROUPS: [usize; 3] = [32, 64, 128];

pub(super) fn check_group(k: usize, group: usize) {
    assert!(INT4_GROUPS.contains(&group), "int4: group {group} is not one of {INT4_GROUPS:?}");
    assert!(k.is_multiple_of(group), "int4: K = {k} is not a multiple of the group {group}");
}

/// Int4 weights packed for the kernels. Panel p (columns 16p..16p+16) is K/8 chunks; chunk (p, t) byte 4c + i holds
/// q[16p + c, 8t + i] in its low nibble and q[16p + c, 8t + 4 + i] in its high nibble (K groups 2t and 2t+1), so
/// `data[p * k/8 + t]`. The kernels take each nibble into the high half of a byte (16 q, exact in i8), so the
/// per-(panel, group, column) metadata holds s / 16 (exact) and the i32 column sums of 16 q (|.| <= 2^14, an i16).
pub struct PackedI4 {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) group: usize,
    pub(super) data: Vec<Chunk>,   // panels x k/8
    pub(super) scale16: Vec<f32>,  // panels x groups x 16: s / 16
    pub(super) colsum16: Vec<i32>, // panels x groups x 16: 16 * sum of q over the group
}

impl PackedI4 {
    /// Multiplies output columns `cols` by `s`, exactly: only their group scales change.
    pub fn scale_columns(&mut self, cols: std::ops::Range<usize>, s: f32) {
        assert!(cols.end <= self.n, "columns {cols:?} outside {}", self.n);
        let groups = self.k / self.group;
        for j in cols {
            for g in 0..groups {
                self.scale16[((j / PANEL) * groups + g) * PANEL + j % PANEL] *= s;
            }
        }
    }

    /// q n x k row-major in [-7, 7], scale n x k/group.
    pub fn pack(q: &[i8], scale: &[f32], n: usize, k: usize, group: usize) -> Self {
        check_group(k, group);
        let groups = k / group;
        assert_eq!(q.len(), n * k, "int4 weight: {n}x{k} needs {} values, has {}", n * k, q.len());
        assert_eq!(scale.len(), n * groups, "int4 weight: {} scales needed, {} given", n * groups, scale.len());
        let (panels, kc) = (n.div_ceil(PANEL), k / 8);
        let mut data = vec![Chunk([0; 64]); panels * kc];
        let mut scale16 = vec![0f32; panels * groups * PANEL];
        let mut colsum16 = vec![0i32; panels * groups * PANEL];
        for (j, row) in q.chunks_exact(k).take(n).enumerate() {
            let (p, c) = (j / PANEL, j % PANEL);
            for t in 0..kc {
                for i in 0..4 {
                    let (lo, hi) = (row[8 * t + i], row[8 * t + 4 + i]);
                    data[p * kc + t].0[4 * c + i] = (lo as u8 & 0xF) | (hi as u8) << 4;
                }
            }
            for g in 0..groups {
                let at = (p * groups + g) * PANEL + c;
                scale16[at] = scale[j * groups + g] / 16.0;
                colsum16[at] = 16 * row[g * group..(g + 1) * group].iter().map(|&v| i32::from(v)).sum::<i32>();
            }
        }
        Self { n, k, group, data, scale16, colsum16 }
    }

    /// Output column `j`'s K weights, decoded (s * q): a tied embedding table's row read back from its head.
    pub fn column(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n && out.len() == self.k, "column {j} of {} x {} into {}", self.n, self.k, out.len());
        let (p, c, kc, groups) = (j / PANEL, j % PANEL, self.k / 8, self.k / self.group);
        for (kk, o) in out.iter_mut().enumerate() {
            let byte = self.data[p * kc + kk / 8].0[4 * c + kk % 4];
            // The nibble into a byte's high half, shifted back: sign-extended q.
            let q = if kk % 8 < 4 { (byte << 4) as i8 >> 4 } else { byte as i8 >> 4 };
            *o = self.scale16[(p * groups + kk / self.group) * PANEL + c] * 16.0 * q as f32;
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn group(&self) -> usize {
        self.group
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64 + self.scale16.len() * 4 + self.colsum16.len() * 4
    }
}
