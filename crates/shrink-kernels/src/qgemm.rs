//! int8 / int4 GEMM for inference. Activations are quantized per row (token) to asymmetric u8, weights per output
//! channel to symmetric i8, or per (channel, K group) to i4; products accumulate exactly in i32, then one f32
//! epilogue applies the scales, bias, GELU and residual.
//!
//! Weights are packed once into 16-column panels of 64-byte chunks, one chunk = 16 columns x 4 K bytes (one zmm for
//! vpdpbusd). The AVX-512 VNNI, AVX2 and scalar microkernels all read that packing and produce the same integers,
//! and every level then does the reference's float operations in the reference's order, so all levels and the naive
//! references (`gemm_*_ref`, on the unpacked data) give bit-identical outputs.
//!
//! Dimensions: M rows (tokens), K inputs, N outputs; weights come in the HF Linear [N, K] layout.

pub use crate::epilogue::Epilogue;
use crate::isa::{self, Isa};
use crate::ROWS_PER_TASK;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

/// Columns per weight panel: one zmm of i32 sums.
const PANEL: usize = 16;
/// Largest K: |sum of u8 x i8 products| and |zero point x column sum| each stay below 2^30, so i32 never wraps.
pub const MAX_K: usize = 32_768;
/// Work unit of the thread split: a multiple of every level's tile rows (48 = 3 AMX tiles, 8, 6, 4, 2), and 3 panels (every level's
/// tile is 1 or 3 panels wide). Units run column-block-major, so consecutive units reuse one weight block.
const ROW_BLOCK: usize = 48;
const _: () = assert!(ROW_BLOCK.is_multiple_of(TILE_ROWS));
const BLOCK_PANELS: usize = 3;

/// 64 bytes, 64-aligned, so a zmm load of a chunk never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

/// Activations quantized per row (per token), asymmetric u8: x[m, k] ≈ scale[m] * (q[m, k] - zero[m]).
/// Rows are stored with K padded up to a multiple of 4; the padding bytes hold the zero point (weights are zero there).
/// The data holds whole groups of 16 rows (AMX tiles load 16 rows; the sums of rows past m are never stored).
#[derive(Default)]
pub struct QuantActs {
    m: usize,
    k: usize,
    k_pad: usize,
    data: Vec<u8>,   // m rounded up to 16 x k_pad
    scale: Vec<f32>, // m
    zero: Vec<i32>,  // m, in 0..=255
    /// f32 staging of the sparse kernel (the activations transposed), reused like the rest.
    pub transposed: Vec<f32>,
}

/// How `QuantActs::quantize_with` quantizes: the default is dynamic per row with no multiplier.
#[derive(Clone, Copy, Default)]
pub struct ActQuant<'a> {
    /// (scale, zero point) for every row, fixed at calibration (static quantization): no range pass per call, and
    /// values outside the calibrated range clip.
    pub fixed: Option<(f32, i32)>,
    /// Multiplies column k before quantizing: SmoothQuant's 1 / s, whose s the weights carry instead.
    pub col: Option<&'a [f32]>,
}

impl QuantActs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes x (m x k, row-major f32, finite), each row from its own range. The range of each row is widened
    /// to include 0 (so 0 is exact and the zero point is a u8). Reuses its buffers: no heap allocation once grown to
    /// this size.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        self.quantize_with(x, m, k, ActQuant::default())
    }

    /// `quantize` with fixed parameters and/or a per-column multiplier (see `ActQuant`).
    pub fn quantize_with(&mut self, x: &[f32], m: usize, k: usize, p: ActQuant) {
        assert_eq!(x.len(), m * k, "activations: {m}x{k} needs {} values, has {}", m * k, x.len());
        if let Some(c) = p.col {
            assert_eq!(c.len(), k, "activations: {k} column multipliers needed, {} given", c.len());
        }
        if let Some((s, z)) = p.fixed {
            assert!(s > 0.0 && (0..=255).contains(&z), "activations: fixed scale {s} / zero point {z} out of range");
        }
        let k_pad = k.next_multiple_of(4);
        (self.m, self.k, self.k_pad) = (m, k, k_pad);
        // Grown, never shrunk: every byte of the m rows is written below, and the rows past m (to a whole tile
        // group) only feed sums that are never stored. A resize to each call's size re-zeroed the growth every
        // time calls alternated between K = 384 and 1536 (1% of an int8 forward in memset).
        let need = m.next_multiple_of(TILE_ROWS) * k_pad;
        if self.data.len() < need {
            self.data.resize(need, 0);
        }
        let data = &mut self.data[..m * k_pad];
        self.scale.resize(m, 0.0);
        self.zero.resize(m, 0);
        let (lvl, tasks) = (level(isa::isa()), rayon::current_num_threads().min(m / ROWS_PER_TASK).max(1));
        if tasks == 1 {
            quantize_rows(lvl, x, k, p, data, &mut self.scale, &mut self.zero);
            return;
        }
        let rows = m.div_ceil(tasks);
        data.par_chunks_mut(rows * k_pad)
            .zip(self.scale.par_chunks_mut(rows))
            .zip(self.zero.par_chunks_mut(rows))
            .zip(x.par_chunks(rows * k))
            .for_each(|(((d, s), z), x)| quantize_rows(lvl, x, k, p, d, s, z));
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// scale * (q - zero), m x k: for tests.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut x = Vec::with_capacity(self.m * self.k);
        for (i, row) in self.data.chunks_exact(self.k_pad.max(1)).take(self.m).enumerate() {
            x.extend(row[..self.k].iter().map(|&q| self.scale[i] * (q as i32 - self.zero[i]) as f32));
        }
        x
    }
}


/// 1.5 * 2^23: adding it to an f32 in [0, 2^22) leaves round-to-nearest-even of it in the low mantissa bits, which
/// vectorises where `f32::round` is a libm call and `as u8` a saturating conversion.
const ROUND_MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn round_u8(v: f32) -> u8 {
    ((v.clamp(0.0, 255.0) + ROUND_MAGIC).to_bits() - ROUND_MAGIC.to_bits()) as u8
}

/// The u8 that static quantization (`ActQuant::fixed` = (1 / `inv`, `zero`), no column multiplier) stores for x,
/// and whether x lay inside the grid (not clipped). QAT's fake quantization computes with scale·(q − zero).
#[inline(always)]
pub fn quantize_static(x: f32, inv: f32, zero: i32) -> (u8, bool) {
    let v = x * inv + zero as f32;
    (round_u8(v), (0.0..=255.0).contains(&v))
}

/// The ISA levels of this module: AVX-512 runs only with VNNI (plain AVX-512BW takes the AVX2 code); AMX takes the
/// int8 GEMM, its other kernels are the VNNI ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Scalar,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Vnni,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Amx,
}

#[cfg(target_arch = "x86_64")]
pub(crate) use amx::tile_config as amx_tile_config;

/// Rows of an AMX tile (kept readable in `QuantActs` on every target).
#[cfg(target_arch = "x86_64")]
use amx::TILE_ROWS;
#[cfg(not(target_arch = "x86_64"))]
const TILE_ROWS: usize = 16;

/// The level `isa` asks for, capped at what this CPU has.
fn level(isa: Isa) -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        if isa >= Isa::Amx && isa::best() == Isa::Amx && avx2 && vnni {
            return Level::Amx;
        }
        if isa >= Isa::Avx512 && avx2 && vnni {
            return Level::Vnni;
        }
        if isa >= Isa::Avx2 && avx2 {
            return Level::Avx2;
        }
    }
    let _ = isa;
    Level::Scalar
}

/// `per_level!(fn name<M>(args) body)` defines `name(level, args)`, running `body` compiled for `level` with `M` the
/// level's microkernels. Like `isa::multiversion!`, with the VNNI level added.
macro_rules! per_level {
    ($(#[$meta:meta])* fn $name:ident<$m:ident>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name(level: Level, $($arg: $ty),*) {
            #[inline(always)]
            fn imp<$m: Micro>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
                unsafe fn amx($($arg: $ty),*) {
                    imp::<amx::Amx>($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
                unsafe fn vnni($($arg: $ty),*) {
                    imp::<avx512::Vnni>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    imp::<avx2::Avx2>($($arg),*)
                }
                // SAFETY: `level` comes from `level()`, which checked these features.
                match level {
                    Level::Amx => return unsafe { amx($($arg),*) },
                    Level::Vnni => return unsafe { vnni($($arg),*) },
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Scalar => {}
                }
            }
            imp::<scalar::Scalar>($($arg),*)
        }
    };
}

per_level!(
    /// Per row: scale and zero point from the row's range (or `p.fixed`), then q = round(x c / scale) + zero,
    /// padding = zero.
    fn quantize_rows<M>(x: &[f32], k: usize, p: ActQuant, data: &mut [u8], scale: &mut [f32], zero: &mut [i32]) {
        let k_pad = data.len() / scale.len().max(1);
        for (((x, q), s), z) in x.chunks_exact(k.max(1)).zip(data.chunks_exact_mut(k_pad.max(1))).zip(scale).zip(zero) {
            let zq = match p.fixed {
                Some((fs, fz)) => {
                    *s = fs;
                    fz as u8
                }
                None => {
                    let (lo, hi) = match p.col {
                        // SAFETY: any slice.
                        None => unsafe { M::range_with_zero(x) },
                        Some(c) => scaled_range_with_zero(x, c),
                    };
                    // An all-zero row gets scale 1 (any scale represents it exactly).
                    *s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                    round_u8(-lo * (1.0 / *s))
                }
            };
            *z = zq as i32;
            let (inv, zf) = (1.0 / *s, zq as f32);
            match p.col {
                None => q.iter_mut().zip(x).for_each(|(q, &x)| *q = round_u8(x * inv + zf)),
                Some(c) => q.iter_mut().zip(x).zip(c).for_each(|((q, &x), &c)| *q = round_u8(x * c * inv + zf)),
            }
            q[k..].fill(zq);
        }
    }
);

/// (min(x c, 0), max(x c, 0)); the compare-and-select form vectorises as min/max instructions.
#[inline(always)]
fn scaled_range_with_zero(x: &[f32], c: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for (&x, &c) in x.iter().zip(c) {
        let v = x * c;
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    (lo, hi)
}

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
    n: usize,
    k: usize,
    kq: usize,
    data: Vec<Chunk>, // panels x kq
    colsum: Vec<i32>, // panels * 16
    scale: Vec<f32>,  // panels * 16
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

fn check_group(k: usize, group: usize) {
    assert!(INT4_GROUPS.contains(&group), "int4: group {group} is not one of {INT4_GROUPS:?}");
    assert!(k.is_multiple_of(group), "int4: K = {k} is not a multiple of the group {group}");
}

/// The signed value of nibble `p` of a row of packed int4 (low nibble = even p).
#[inline(always)]
fn nibble(row: &[u8], p: usize) -> i32 {
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
    n: usize,
    k: usize,
    group: usize,
    data: Vec<Chunk>,   // panels x k/8
    scale16: Vec<f32>,  // panels x groups x 16: s / 16
    colsum16: Vec<i32>, // panels x groups x 16: 16 * sum of q over the group
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

/// `mr` rows of quantized activations for a microkernel: row r at `ptr + r * lda`, its zero point and scale at
/// `zero + r`, `scale + r`.
#[derive(Clone, Copy)]
struct Rows {
    ptr: *const u8,
    lda: usize,
    mr: usize,
    zero: *const i32,
    scale: *const f32,
}

/// `np` int8 panels from `ptr`, `stride` chunks apart, each `kq` chunks long; their column sums and scales.
struct I8Panels {
    ptr: *const Chunk,
    stride: usize,
    np: usize,
    kq: usize,
    colsum: *const i32,
    scale: *const f32,
    /// Chunks of weights a later unit reads (`ahead..ahead + ahead_len`, maybe empty), for a kernel to prefetch
    /// into L2 while it works on these.
    ahead: *const Chunk,
    ahead_len: usize,
}

/// `np` int4 panels: chunks from `ptr` (`stride` apart), `groups` groups of `per_group` chunks; the 16 scales / 16
/// sums of panel v, group g at `scale` / `colsum` + (v * groups + g) * 16.
struct I4Panels {
    ptr: *const Chunk,
    stride: usize,
    np: usize,
    groups: usize,
    per_group: usize,
    scale: *const f32,
    colsum: *const i32,
}

impl I4Panels {
    #[inline(always)]
    unsafe fn scale(&self, v: usize, g: usize) -> *const f32 {
        self.scale.add((v * self.groups + g) * PANEL)
    }

    #[inline(always)]
    unsafe fn colsum(&self, v: usize, g: usize) -> *const i32 {
        self.colsum.add((v * self.groups + g) * PANEL)
    }
}

/// Where a tile's rows go: row r at `ptr + r * ld`, its first `nc` columns (nc <= 16 np; the rest are padding).
struct Out {
    ptr: *mut f32,
    ld: usize,
    nc: usize,
}

/// One level's register-blocked microkernels on the packed layouts, called with `a.mr` <= the tile's rows and
/// `w.np` <= its panels. They end with the reference's float steps, in its order, and store the tile to `out`.
trait Micro {
    /// Largest tile (rows, panels) of each kernel; panels is 1 or 3 (a column block).
    const I8_TILE: (usize, usize);
    const I4_TILE: (usize, usize);
    /// out[r][j] = (sum_k a[r, k] q[k, j] - zero[r] colsum[j]) as f32 * (scale_a[r] * scale_w[j]).
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out);
    /// out[r][j] = f * scale_a[r], f = fma over groups g in order (from 0) of
    /// (sum_{k in g} (a[r, k] - zero[r]) 16 q[k, j]) as f32 * s[g, j] / 16.
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out);
    /// (min(x, 0), max(x, 0)) of finite x (written out: `f32::min`'s NaN rule keeps a plain loop scalar).
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32);
    /// Before and after a run of units on one thread (AMX configures and releases its tiles there).
    unsafe fn begin() {}
    unsafe fn end() {}
}

enum Weights<'a> {
    I8(&'a PackedI8),
    I4(&'a PackedI4),
}

/// The output pointer shared by the workers; each unit writes a disjoint block.
struct OutPtr(*mut f32);
// SAFETY: units write disjoint rows x columns blocks of the output.
unsafe impl Sync for OutPtr {}

struct Job<'a> {
    a: &'a QuantActs,
    w: Weights<'a>,
    ep: Epilogue<'a>,
    out: OutPtr, // m x n
    n: usize,
    /// Units go column block by column block (each block's row blocks in turn), and each unit prefetches a share
    /// of the next column block; else row block by row block (see `run`).
    by_columns: bool,
    row_blocks: usize,
    col_blocks: usize,
}

per_level!(
    /// Units `units` in turn, between one `begin` and `end`: configuring AMX's tiles costs ~130 ns, a tenth of a
    /// unit at K = 384, so it is done once per run of units, not per unit.
    fn units<M>(job: &Job, units: std::ops::Range<usize>) {
        // SAFETY: `end` follows on this thread, after the units.
        unsafe { M::begin() };
        for u in units {
            let (rb, cb) = match job.by_columns {
                true => (u % job.row_blocks, u / job.row_blocks),
                false => (u / job.col_blocks, u % job.col_blocks),
            };
            unit::<M>(job, cb, rb);
        }
        unsafe { M::end() };
    }
);

/// One work unit: output rows of row block `rb` x columns of column block `cb`, tile by tile.
#[inline(always)]
fn unit<M: Micro>(job: &Job, cb: usize, rb: usize) {
    let (a, n) = (job.a, job.n);
    let rows = rb * ROW_BLOCK..(rb * ROW_BLOCK + ROW_BLOCK).min(a.m);
    let panels = cb * BLOCK_PANELS..(cb * BLOCK_PANELS + BLOCK_PANELS).min(n.div_ceil(PANEL));
    let (tile_rows, tile_panels) = match job.w {
        Weights::I8(_) => M::I8_TILE,
        Weights::I4(_) => M::I4_TILE,
    };
    for p0 in panels.clone().step_by(tile_panels) {
        let np = tile_panels.min(panels.end - p0);
        let (j0, nc) = (p0 * PANEL, (np * PANEL).min(n - p0 * PANEL));
        for i0 in rows.clone().step_by(tile_rows) {
            let mr = tile_rows.min(rows.end - i0);
            let rows = Rows {
                ptr: a.data[i0 * a.k_pad..].as_ptr(),
                lda: a.k_pad,
                mr,
                zero: a.zero[i0..].as_ptr(),
                scale: a.scale[i0..].as_ptr(),
            };
            // SAFETY: rows i0..i0+mr and panels p0..p0+np exist, and this unit alone writes output rows of
            // its row block x columns of its column block.
            unsafe {
                let out = Out { ptr: job.out.0.add(i0 * n + j0), ld: n, nc };
                match job.w {
                    Weights::I8(w) => {
                        // The next column block (contiguous after these panels), a 1/R share per row block:
                        // the R units of this column block together bring all of it into L2.
                        let next = ((p0 + np) * w.kq).min(w.data.len());
                        let len = if job.by_columns { (w.data.len() - next).min(BLOCK_PANELS * w.kq) } else { 0 };
                        let share = len * rb / job.row_blocks..len * (rb + 1) / job.row_blocks;
                        let panels = I8Panels {
                            ptr: w.data.as_ptr().add(p0 * w.kq),
                            stride: w.kq,
                            np,
                            kq: w.kq,
                            colsum: w.colsum.as_ptr().add(j0),
                            scale: w.scale.as_ptr().add(j0),
                            ahead: w.data.as_ptr().add(next + share.start),
                            ahead_len: share.len(),
                        };
                        M::i8(rows, &panels, &out);
                    }
                    Weights::I4(w) => {
                        let (kc, groups) = (w.k / 8, w.k / w.group);
                        let meta = p0 * groups * PANEL;
                        let panels = I4Panels {
                            ptr: w.data.as_ptr().add(p0 * kc),
                            stride: kc,
                            np,
                            groups,
                            per_group: w.group / 8,
                            scale: w.scale16.as_ptr().add(meta),
                            colsum: w.colsum16.as_ptr().add(meta),
                        };
                        M::i4(rows, &panels, &out);
                    }
                }
                for r in 0..mr {
                    job.ep.apply_inline(std::slice::from_raw_parts_mut(out.ptr.add(r * n), nc), i0 + r, j0, n);
                }
            }
        }
    }
}

fn check(out: &[f32], a: &QuantActs, k: usize, n: usize, ep: &Epilogue) {
    let m = a.m;
    assert_eq!(a.k, k, "activations have K = {}, weights K = {k}", a.k);
    assert!(out.len() >= m * n, "output: {m}x{n} needs {} values, has {}", m * n, out.len());
    if let Some(b) = ep.bias {
        assert!(b.len() >= n, "bias: {n} values needed, has {}", b.len());
    }
    if let Some(r) = ep.residual {
        assert!(r.len() >= m * n, "residual: {m}x{n} needs {} values, has {}", m * n, r.len());
    }
}

/// Runs every unit: over the current rayon pool when it has more than one thread, else in order on this thread
/// (no allocation there).
fn run(level: Level, out: &mut [f32], a: &QuantActs, w: Weights, n: usize, ep: Epilogue) {
    if a.m == 0 || n == 0 {
        return;
    }
    let (row_blocks, col_blocks) = (a.m.div_ceil(ROW_BLOCK), n.div_ceil(PANEL * BLOCK_PANELS));
    // Few rows (a batch of one): a weight block serves all row blocks while hot, and the weights, which outweigh
    // the activations, stream from L3 once. Many rows (32 x 128 = 4096): the activations outweigh the weights,
    // which then stay in L2 while a row block's activations stay in L1 (column-major order re-read all activations
    // from L3 for every column block: int8 32 x 128 on 2 threads ran at a third of the 1 x 128 GOP/s).
    let by_columns = row_blocks <= col_blocks;
    let job = Job { a, w, ep, out: OutPtr(out.as_mut_ptr()), n, by_columns, row_blocks, col_blocks };
    let count = row_blocks * col_blocks;
    if rayon::current_num_threads() > 1 && count > 1 {
        // Tasks of a few consecutive units: fewer tile configurations, and still enough tasks to balance.
        const PER_TASK: usize = 4;
        (0..count.div_ceil(PER_TASK))
            .into_par_iter()
            .for_each(|t| units(level, &job, t * PER_TASK..(t * PER_TASK + PER_TASK).min(count)));
    } else {
        units(level, &job, 0..count);
    }
}

/// out (m x n row-major f32) = dequant(a) x dequant(w)^T with the epilogue, at the level `isa::isa()`. On the rayon
/// threads of the current pool when it has more than one (split over 48-row x 48-column blocks), else on this
/// thread without heap allocation.
pub fn gemm_i8(out: &mut [f32], a: &QuantActs, w: &PackedI8, ep: Epilogue) {
    gemm_i8_on(isa::isa(), out, a, w, ep)
}

/// `gemm_i8` at level `isa` (capped at what this CPU has; AVX-512 without VNNI runs the AVX2 code).
pub fn gemm_i8_on(isa: Isa, out: &mut [f32], a: &QuantActs, w: &PackedI8, ep: Epilogue) {
    check(out, a, w.k, w.n, &ep);
    run(level(isa), out, a, Weights::I8(w), w.n, ep)
}

/// Naive reference of `gemm_i8` on the unpacked data (q n x k, scale n): exact i32 sums, then the same epilogue.
pub fn gemm_i8_ref(out: &mut [f32], a: &QuantActs, q: &[i8], scale: &[f32], n: usize, ep: Epilogue) {
    let k = a.k;
    check(out, a, k, n, &ep);
    for i in 0..a.m {
        let (row, z, sa) = (&a.data[i * a.k_pad..i * a.k_pad + k], a.zero[i], a.scale[i]);
        let y = &mut out[i * n..(i + 1) * n];
        for (j, y) in y.iter_mut().enumerate() {
            let dot: i32 = row.iter().zip(&q[j * k..(j + 1) * k]).map(|(&x, &w)| (x as i32 - z) * w as i32).sum();
            *y = dot as f32 * (sa * scale[j]);
        }
        ep.apply_inline(y, i, 0, n);
    }
}

/// out (m x n) = dequant(a) x dequant(w)^T with the epilogue, int8 activations x int4 weights: i32 sums within each
/// group, then an f32 fma with the group's scale. Threads and allocation as `gemm_i8`.
pub fn gemm_i4(out: &mut [f32], a: &QuantActs, w: &PackedI4, ep: Epilogue) {
    gemm_i4_on(isa::isa(), out, a, w, ep)
}

/// `gemm_i4` at level `isa` (capped at what this CPU has).
pub fn gemm_i4_on(isa: Isa, out: &mut [f32], a: &QuantActs, w: &PackedI4, ep: Epilogue) {
    check(out, a, w.k, w.n, &ep);
    run(level(isa), out, a, Weights::I4(w), w.n, ep)
}

/// Naive reference of `gemm_i4` on the unpacked data (`quantize_int4`'s q n x k/2 and scale n x k/group).
pub fn gemm_i4_ref(out: &mut [f32], a: &QuantActs, q: &[u8], scale: &[f32], n: usize, group: usize, ep: Epilogue) {
    let k = a.k;
    check_group(k, group);
    check(out, a, k, n, &ep);
    let groups = k / group;
    for i in 0..a.m {
        let (row, z, sa) = (&a.data[i * a.k_pad..], a.zero[i], a.scale[i]);
        let y = &mut out[i * n..(i + 1) * n];
        for (j, y) in y.iter_mut().enumerate() {
            let wrow = &q[j * k / 2..(j + 1) * k / 2];
            let mut acc = 0f32;
            for g in 0..groups {
                let dot: i32 = (g * group..(g + 1) * group).map(|p| (row[p] as i32 - z) * nibble(wrow, p)).sum();
                acc = (dot as f32).mul_add(scale[j * groups + g], acc);
            }
            *y = acc * sa;
        }
        ep.apply_inline(y, i, 0, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantization rounds to the nearest step; x * (1 / scale) instead of x / scale may move a value a few ulps
    /// across a rounding midpoint, so the bound is half a step plus this fraction of a step.
    const ROUND_SLACK: f32 = 1e-4;
    /// gemm_i8 against the f32 product of the original gaussian data, relative Frobenius error: two uniform
    /// rounding errors of step ~6 sigma / 255 (activation rows) and ~6 sigma / 254 (weight rows): measured 0.0099.
    const I8_FROB_TOL: f64 = 1.5e-2;
    /// The same for int4 weights ([-7, 7], step max|w| / 7 over a group: ~2.1 sigma for 32, ~2.6 sigma for 128),
    /// whose rounding dominates: measured 0.098 and 0.118.
    const I4_FROB_TOL: [(usize, f64); 2] = [(32, 0.12), (128, 0.14)];

    use crate::testdata::uniform;

    /// Standard normal by Box-Muller on `uniform`.
    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let u = uniform(2 * n, seed);
        u.chunks_exact(2)
            .map(|p| {
                let (a, b) = ((p[0] + 1.0) * 0.5 + 1e-7, (p[1] + 1.0) * 0.5);
                (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
            })
            .collect()
    }

    /// Activations with awkward rows: offset (all positive), all negative, all zero, constant.
    fn acts(m: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut x = uniform(m * k, seed);
        for (i, row) in x.chunks_exact_mut(k).enumerate() {
            match i % 5 {
                1 => row.iter_mut().for_each(|v| *v = *v * 3.0 + 3.5),
                2 => row.iter_mut().for_each(|v| *v = *v * 0.01 - 0.02),
                3 if i > 5 => row.fill(0.0),
                4 if i > 5 => row.fill(1.25),
                _ => {}
            }
        }
        x
    }

    fn epilogues<'a>(bias: &'a [f32], residual: &'a [f32]) -> [Epilogue<'a>; 5] {
        let none = Epilogue::default();
        [
            none,
            Epilogue { bias: Some(bias), ..none },
            Epilogue { gelu: true, ..none },
            Epilogue { residual: Some(residual), ..none },
            Epilogue { bias: Some(bias), gelu: true, residual: Some(residual) },
        ]
    }

    #[test]
    fn activations_dequantize_within_half_a_step() {
        for (m, k) in [(1, 1), (3, 5), (17, 33), (10, 384)] {
            let x = acts(m, k, 1);
            let mut a = QuantActs::new();
            a.quantize(&x, m, k);
            assert_eq!((a.rows(), a.cols(), a.k_pad % 4), (m, k, 0));
            for (i, (xr, dr)) in x.chunks_exact(k).zip(a.dequantize().chunks_exact(k)).enumerate() {
                let bound = a.scale[i] * (0.5 + ROUND_SLACK);
                for (v, d) in xr.iter().zip(dr) {
                    assert!((v - d).abs() <= bound, "{m}x{k} row {i}: {v} -> {d}, scale {}", a.scale[i]);
                }
                let pad = &a.data[i * a.k_pad + k..(i + 1) * a.k_pad];
                assert!(pad.iter().all(|&q| q as i32 == a.zero[i]), "padding holds the zero point");
                if xr.iter().all(|&v| v == 0.0) {
                    assert!(dr.iter().all(|&d| d == 0.0));
                }
            }
        }
    }

    #[test]
    fn fixed_and_column_scaled_activations() {
        let (m, k) = (7, 37);
        let x = acts(m, k, 9);
        let c: Vec<f32> = (0..k).map(|i| 0.25 + (i % 5) as f32 * 0.5).collect();
        let xc: Vec<f32> = x.chunks_exact(k).flat_map(|r| r.iter().zip(&c).map(|(v, c)| v * c)).collect();
        // A column multiplier is the same as quantizing x * c.
        let (mut a, mut b) = (QuantActs::new(), QuantActs::new());
        a.quantize_with(&x, m, k, ActQuant { col: Some(&c), ..ActQuant::default() });
        b.quantize(&xc, m, k);
        assert_eq!((&a.data, &a.zero), (&b.data, &b.zero));
        // Fixed parameters: every row uses them, values inside the range within half a step, outside clipped.
        let (s, z) = (0.02f32, 100);
        a.quantize_with(&x, m, k, ActQuant { fixed: Some((s, z)), ..ActQuant::default() });
        assert!(a.scale.iter().all(|&v| v == s) && a.zero.iter().all(|&v| v == z));
        let (lo, hi) = (-(z as f32) * s, (255 - z) as f32 * s);
        for (v, d) in x.iter().zip(a.dequantize()) {
            let want = v.clamp(lo, hi);
            assert!((want - d).abs() <= s * (0.5 + ROUND_SLACK), "{v} -> {d} with range [{lo}, {hi}]");
        }
    }

    #[test]
    fn quantize_reuses_its_buffers() {
        let mut a = QuantActs::new();
        a.quantize(&acts(17, 33, 2), 17, 33);
        let ptrs = (a.data.as_ptr(), a.scale.as_ptr(), a.zero.as_ptr());
        a.quantize(&acts(3, 5, 3), 3, 5);
        a.quantize(&acts(17, 33, 4), 17, 33);
        assert_eq!(ptrs, (a.data.as_ptr(), a.scale.as_ptr(), a.zero.as_ptr()));
    }

    #[test]
    fn weights_dequantize_within_half_a_step() {
        let (n, k) = (9, 256);
        let mut w = gaussian(n * k, 5);
        w[k..2 * k].fill(0.0); // an all-zero channel
        let (q, s) = quantize_per_channel(&w, n, k);
        for (j, (wr, qr)) in w.chunks_exact(k).zip(q.chunks_exact(k)).enumerate() {
            for (&v, &q) in wr.iter().zip(qr) {
                assert!(q >= -127 && (v - s[j] * q as f32).abs() <= s[j] * (0.5 + ROUND_SLACK), "int8 channel {j}");
            }
        }
        for group in INT4_GROUPS {
            let (q, s) = quantize_int4(&w, n, k, group);
            for j in 0..n {
                for p in 0..k {
                    let (v, qv, sv) = (w[j * k + p], nibble(&q[j * k / 2..], p), s[j * (k / group) + p / group]);
                    assert!((-7..=7).contains(&qv), "int4 range");
                    assert!(
                        (v - sv * qv as f32).abs() <= sv * (0.5 + ROUND_SLACK),
                        "int4 channel {j} k {p} group {group}"
                    );
                }
            }
        }
    }

    fn assert_same(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(g.to_bits() == w.to_bits(), "{what}: element {i}: {g} vs reference {w}");
        }
    }

    // Every level does the reference's integer sums exactly and its float operations in the same order, so the
    // outputs are bit-identical (no error budget needed).
    #[test]
    fn i8_every_level_matches_reference() {
        // AMX: m 22 and 59 end in tiles of 6 and 11 real rows (the other rows padding), 20 in a VNNI group of 4.
        for (m, k, n) in shapes(&[1, 3, 17, 20, 22, 59, 128], &[1, 5, 33, 384, 1536], &[1, 7, 16, 33, 384]) {
            let mut a = QuantActs::new();
            a.quantize(&acts(m, k, 7), m, k);
            let (q, s) = quantize_per_channel(&gaussian(n * k, 8), n, k);
            let w = PackedI8::pack(&q, &s, n, k);
            let (bias, residual) = (uniform(n, 9), uniform(m * n, 10));
            for (e, ep) in epilogues(&bias, &residual).into_iter().enumerate() {
                let mut want = vec![0.0; m * n];
                gemm_i8_ref(&mut want, &a, &q, &s, n, ep);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; m * n];
                    gemm_i8_on(isa, &mut got, &a, &w, ep);
                    assert_same(&got, &want, &format!("i8 {isa:?} {m}x{k}x{n} epilogue {e}"));
                }
            }
        }
    }

    #[test]
    fn i4_every_level_matches_reference() {
        for group in INT4_GROUPS {
            let ks: Vec<usize> = [32, 64, 128, 384, 1536].into_iter().filter(|k| k % group == 0).collect();
            for (m, k, n) in shapes(&[1, 3, 17, 128], &ks, &[1, 7, 16, 33, 384]) {
                let mut a = QuantActs::new();
                a.quantize(&acts(m, k, 11), m, k);
                let (q, s) = quantize_int4(&gaussian(n * k, 12), n, k, group);
                let w = PackedI4::pack(&q, &s, n, k, group);
                let (bias, residual) = (uniform(n, 13), uniform(m * n, 14));
                for (e, ep) in epilogues(&bias, &residual).into_iter().enumerate() {
                    let mut want = vec![0.0; m * n];
                    gemm_i4_ref(&mut want, &a, &q, &s, n, group, ep);
                    for isa in Isa::available() {
                        let mut got = vec![f32::NAN; m * n];
                        gemm_i4_on(isa, &mut got, &a, &w, ep);
                        assert_same(&got, &want, &format!("i4 g{group} {isa:?} {m}x{k}x{n} epilogue {e}"));
                    }
                }
            }
        }
    }

    #[test]
    fn scaled_columns_and_dequantized_int4() {
        let (m, k, n, group) = (5, 64, 40, 32);
        let mut a = QuantActs::new();
        a.quantize(&acts(m, k, 21), m, k);
        let w = gaussian(n * k, 22);
        let (q, s) = quantize_int4(&w, n, k, group);
        // dequantize_int4 is the product the GEMM computes: its f32 GEMM on dequantized acts matches.
        let wd = dequantize_int4(&q, &s, n, k, group);
        assert!(wd.iter().zip(&w).all(|(d, w)| (d - w).abs() <= s.iter().fold(0f32, |a, v| a.max(*v)) * 0.5 + 1e-6));
        let (mut base, mut scaled) = (vec![0.0; m * n], vec![0.0; m * n]);
        gemm_i4(&mut base, &a, &PackedI4::pack(&q, &s, n, k, group), Epilogue::default());
        let mut packed = PackedI4::pack(&q, &s, n, k, group);
        packed.scale_columns(3..20, 0.25); // a power of two: exact
        gemm_i4(&mut scaled, &a, &packed, Epilogue::default());
        for (i, (b, c)) in base.iter().zip(&scaled).enumerate() {
            let want = if (3..20).contains(&(i % n)) { b * 0.25 } else { *b };
            assert_eq!(*c, want, "element {i}");
        }
        let mut ref_out = vec![0.0; m * n];
        let ad = a.dequantize();
        crate::sgemm::gemm_f32_ref(&mut ref_out, &ad, m, &wd, n, k, Epilogue::default());
        for (g, r) in base.iter().zip(&ref_out) {
            assert!((g - r).abs() <= 1e-3 * (1.0 + r.abs()), "{g} vs {r}");
        }
    }

    /// Every (m, k, n) of the three lists.
    fn shapes(ms: &[usize], ks: &[usize], ns: &[usize]) -> Vec<(usize, usize, usize)> {
        ms.iter().flat_map(|&m| ks.iter().flat_map(move |&k| ns.iter().map(move |&n| (m, k, n)))).collect()
    }

    fn frobenius_error(got: &[f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> f64 {
        let (mut err, mut norm) = (0f64, 0f64);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
                err += (got[i * n + j] as f64 - want).powi(2);
                norm += want * want;
            }
        }
        (err / norm).sqrt()
    }

    #[test]
    fn close_to_f32_product_of_original_data() {
        let (m, k, n) = (64, 384, 96);
        let (x, w) = (gaussian(m * k, 15), gaussian(n * k, 16));
        let mut a = QuantActs::new();
        a.quantize(&x, m, k);
        let mut y = vec![0.0; m * n];
        let (q, s) = quantize_per_channel(&w, n, k);
        gemm_i8(&mut y, &a, &PackedI8::pack(&q, &s, n, k), Epilogue::default());
        let e = frobenius_error(&y, &x, &w, m, k, n);
        assert!(e < I8_FROB_TOL, "int8 relative Frobenius error {e}");
        for (group, tol) in I4_FROB_TOL {
            let (q, s) = quantize_int4(&w, n, k, group);
            gemm_i4(&mut y, &a, &PackedI4::pack(&q, &s, n, k, group), Epilogue::default());
            let e = frobenius_error(&y, &x, &w, m, k, n);
            assert!(e < tol, "int4 group {group} relative Frobenius error {e}");
        }
    }

    #[test]
    fn threads_match_single_thread_exactly() {
        let (m, k, n) = (128, 384, 400);
        let mut a = QuantActs::new();
        a.quantize(&acts(m, k, 17), m, k);
        let w = gaussian(n * k, 18);
        let (q8, s8) = quantize_per_channel(&w, n, k);
        let (q4, s4) = quantize_int4(&w, n, k, 64);
        let (w8, w4) = (PackedI8::pack(&q8, &s8, n, k), PackedI4::pack(&q4, &s4, n, k, 64));
        let (bias, residual) = (uniform(n, 19), uniform(m * n, 20));
        let ep = Epilogue { bias: Some(&bias), gelu: true, residual: Some(&residual) };
        let run = |threads: usize, isa: Isa| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (mut y8, mut y4) = (vec![0.0; m * n], vec![0.0; m * n]);
                gemm_i8_on(isa, &mut y8, &a, &w8, ep);
                gemm_i4_on(isa, &mut y4, &a, &w4, ep);
                (y8, y4)
            })
        };
        for isa in Isa::available() {
            let one = run(1, isa);
            let two = run(2, isa);
            assert_same(&two.0, &one.0, &format!("i8 {isa:?} 2 threads"));
            assert_same(&two.1, &one.1, &format!("i4 {isa:?} 2 threads"));
        }
    }

    #[test]
    #[should_panic(expected = "not a multiple of the group")]
    fn int4_rejects_k_off_the_group() {
        quantize_int4(&[0.0; 96], 1, 96, 64);
    }

    /// Counts heap allocations of the current thread.
    struct Counting;
    thread_local!(static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
    // SAFETY: forwards to the system allocator.
    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            std::alloc::System.alloc(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
            std::alloc::System.dealloc(p, l)
        }
    }
    #[global_allocator]
    static COUNTING: Counting = Counting;

    #[test]
    fn single_thread_calls_do_not_allocate() {
        let (m, k, n) = (17, 384, 100);
        let x = acts(m, k, 21);
        let w = gaussian(n * k, 22);
        let (q8, s8) = quantize_per_channel(&w, n, k);
        let (q4, s4) = quantize_int4(&w, n, k, 128);
        let (w8, w4) = (PackedI8::pack(&q8, &s8, n, k), PackedI4::pack(&q4, &s4, n, k, 128));
        let (bias, residual) = (uniform(n, 23), uniform(m * n, 24));
        let ep = Epilogue { bias: Some(&bias), gelu: true, residual: Some(&residual) };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| {
            let (mut a, mut y) = (QuantActs::new(), vec![0.0; m * n]);
            let mut calls = || {
                a.quantize(&x, m, k);
                gemm_i8(&mut y, &a, &w8, ep);
                gemm_i4(&mut y, &a, &w4, ep);
                for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx] {
                    gemm_i8_on(isa, &mut y, &a, &w8, ep);
                    gemm_i4_on(isa, &mut y, &a, &w4, ep);
                }
            };
            calls(); // grows the buffers, initialises `isa()`
            let before = ALLOCS.with(|c| c.get());
            calls();
            assert_eq!(ALLOCS.with(|c| c.get()), before, "heap allocations in single-thread calls");
        });
    }
}
