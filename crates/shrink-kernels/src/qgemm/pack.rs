//! Weights quantized (int8 per channel, int4 per K group) and packed into the kernels' 64-byte chunks.

use super::{Chunk, MAX_K, PANEL};

/// Per-output-channel symmetric int8 of a Linear weight w (n x k row-major, the HF [out, in] layout):
/// returns (q n x k in [-127, 127], scale n) with w ≈ scale[j] * q[j, k]. An all-zero row gets scale 0.
pub fn quantize_per_channel(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(w.len(), n * k, "weight: {n}x{k} needs {} values, has {}", n * k, w.len());
    let mut q = vec![0i8; n * k]; // n x k
    let mut scale = vec![0f32; n]; // n
    for ((w, q), s) in w.chunks_exact(k.max(1)).zip(q.chunks_exact_mut(k.max(1))).zip(&mut scale) {
        let amax = w.iter().fold(0f32, |a, v| a.max(v.abs()));
        *s = amax / 127.0;
        if amax > 0.0 {
            for (q, &w) in q.iter_mut().zip(w) {
                *q = (w / *s).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    (q, scale)
}

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
}

impl PackedI8 {
    /// Multiplies output columns `cols` by `s`, exactly: only their scales change (folds a constant into a layer).
    pub fn scale_columns(&mut self, cols: std::ops::Range<usize>, s: f32) {
        assert!(cols.end <= self.n, "columns {cols:?} outside {}", self.n);
        self.scale[cols].iter_mut().for_each(|v| *v *= s);
    }

    /// q is n x k row-major (as `quantize_per_channel` returns), scale n.
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
        Self { n, k, kq, data, colsum, scale: padded_scale }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64 + self.colsum.len() * 4 + self.scale.len() * 4
    }
}

/// The int4 group sizes the kernels take.
pub const INT4_GROUPS: [usize; 3] = [32, 64, 128];

pub(super) fn check_group(k: usize, group: usize) {
    assert!(INT4_GROUPS.contains(&group), "int4: group {group} is not one of {INT4_GROUPS:?}");
    assert!(k.is_multiple_of(group), "int4: K = {k} is not a multiple of the group {group}");
}

/// The signed value of nibble `p` of a row of packed int4 (low nibble = even p).
#[inline(always)]
pub(super) fn nibble(row: &[u8], p: usize) -> i32 {
    ((row[p / 2] >> (4 * (p % 2)) << 4) as i8 >> 4) as i32
}

/// int4 weight-only quantization, group-wise along K, symmetric per (column, group): w ≈ s[n, g] * q with q in
/// [-7, 7] and s = max|w| / 7 over the group (an all-zero group gets s = 0). Returns (q n x k/2 bytes, low nibble =
/// even k, two's complement; s n x k/group). Group 32, 64 or 128; panics unless K is a multiple of it.
pub fn quantize_int4(w: &[f32], n: usize, k: usize, group: usize) -> (Vec<u8>, Vec<f32>) {
    check_group(k, group);
    assert_eq!(w.len(), n * k, "int4 weight: {n}x{k} needs {} values, has {}", n * k, w.len());
    let mut q = vec![0u8; n * k / 2]; // n x k/2
    let mut scale = vec![0f32; n * (k / group)]; // n x k/group
    for (j, w) in w.chunks_exact(k.max(1)).enumerate() {
        for (g, w) in w.chunks_exact(group).enumerate() {
            let amax = w.iter().fold(0f32, |a, v| a.max(v.abs()));
            let s = amax / 7.0;
            scale[j * (k / group) + g] = s;
            if amax > 0.0 {
                for (i, &v) in w.iter().enumerate() {
                    let p = g * group + i;
                    let nib = (v / s).round().clamp(-7.0, 7.0) as i8 as u8 & 0xF;
                    q[(j * k + p) / 2] |= nib << (4 * (p % 2));
                }
            }
        }
    }
    (q, scale)
}

/// w ≈ s[n, g] * q: the inverse of `quantize_int4` (n x k f32).
pub fn dequantize_int4(q: &[u8], scale: &[f32], n: usize, k: usize, group: usize) -> Vec<f32> {
    check_group(k, group);
    assert_eq!((q.len(), scale.len()), (n * k / 2, n * (k / group)), "int4 weight: {n}x{k} group {group} sizes");
    let mut w = Vec::with_capacity(n * k); // n x k
    for (row, s) in q.chunks_exact(k / 2).zip(scale.chunks_exact(k / group)) {
        w.extend((0..k).map(|p| s[p / group] * nibble(row, p) as f32));
    }
    w
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

    /// q, scale as `quantize_int4` returns them.
    pub fn pack(q: &[u8], scale: &[f32], n: usize, k: usize, group: usize) -> Self {
        check_group(k, group);
        let groups = k / group;
        assert_eq!(q.len(), n * k / 2, "int4 weight: {n}x{k} needs {} bytes, has {}", n * k / 2, q.len());
        assert_eq!(scale.len(), n * groups, "int4 weight: {} scales needed, {} given", n * groups, scale.len());
        let (panels, kc) = (n.div_ceil(PANEL), k / 8);
        let mut data = vec![Chunk([0; 64]); panels * kc];
        let mut scale16 = vec![0f32; panels * groups * PANEL];
        let mut colsum16 = vec![0i32; panels * groups * PANEL];
        for (j, row) in q.chunks_exact(k / 2).take(n).enumerate() {
            let (p, c) = (j / PANEL, j % PANEL);
            for t in 0..kc {
                for i in 0..4 {
                    let (lo, hi) = (nibble(row, 8 * t + i), nibble(row, 8 * t + 4 + i));
                    data[p * kc + t].0[4 * c + i] = (lo as u8 & 0xF) | (hi as u8) << 4;
                }
            }
            for g in 0..groups {
                let at = (p * groups + g) * PANEL + c;
                scale16[at] = scale[j * groups + g] / 16.0;
                colsum16[at] = 16 * (g * group..(g + 1) * group).map(|p| nibble(row, p)).sum::<i32>();
            }
        }
        Self { n, k, group, data, scale16, colsum16 }
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
