//! int8 / int4 GEMM for inference. Activations are quantized per row (token) to asymmetric u8, weights per output
//! channel to symmetric i8, or per (channel, K group) to i4; products accumulate exactly in i32, then one f32
//! epilogue applies the scales, bias, GELU and residual.
//!
//! Weights are packed once into 16-column panels of 64-byte chunks, one chunk = 16 columns x 4 K bytes (one zmm for
//! vpdpbusd, four q registers for sdot). The AMX, AVX-512 VNNI, AVX-VNNI, AVX2, aarch64 i8mm, dotprod and NEON, and
//! generic microkernels (`x86/`, `aarch64/`, `generic.rs`; a level's table picks them, `crate::ops`) all read that
//! packing and produce the same integers, and every level then does the reference's float operations in the reference's order, so all levels and the naive
//! references (`gemm_*_ref`, on the unpacked data) give bit-identical outputs.
//!
//! Dimensions: M rows (tokens), K inputs, N outputs; weights come in the HF Linear [N, K] layout.

pub use crate::epilogue::Epilogue;
use crate::ops::{self, Ops};
use rayon::prelude::*;

mod acts;
pub(crate) mod generic;
mod pack;
mod reference;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    #[macro_use]
    mod shape;
    pub(crate) mod amx;
    pub(crate) mod avx2;
    pub(crate) mod avx512;
    pub(crate) mod avxvnni;
    mod ymm;
}
#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64 {
    pub(crate) mod dotprod;
    pub(crate) mod i8mm;
    pub(crate) mod neon;
    mod qreg;
}

pub use acts::{quantize_static, ActQuant, QuantActs};
pub use pack::{PackedI4, PackedI8, INT4_GROUPS};
pub use reference::{gemm_i4_ref, gemm_i8_ref};

/// Columns per weight panel: one zmm of i32 sums.
const PANEL: usize = 16;
/// Largest K: |sum of u8 x i8 products| and |zero point x column sum| each stay below 2^30, so i32 never wraps.
pub const MAX_K: usize = 32_768;
/// Work unit of the thread split: a multiple of every level's tile rows (48 = 3 AMX tiles, 8, 6, 4, 2), and 3 panels (every level's
/// tile is 1 or 3 panels wide). Units run column-block-major, so consecutive units reuse one weight block.
const ROW_BLOCK: usize = 48;
const _: () = assert!(ROW_BLOCK.is_multiple_of(TILE_ROWS));
const BLOCK_PANELS: usize = 3;
/// Multiply-adds below which a product runs on the calling thread, unless a caller measured otherwise on this
/// machine (`set_parallel_min_macs`).
pub const PARALLEL_MIN_MACS: usize = 1 << 21;
static PARALLEL_MIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(PARALLEL_MIN_MACS);

/// Sets the multiply-adds from which `gemm_i8` / `gemm_i4` split a product over the pool's threads (outputs are
/// the same either way; only the speed changes).
pub fn set_parallel_min_macs(macs: usize) {
    PARALLEL_MIN.store(macs, std::sync::atomic::Ordering::Relaxed)
}

/// 64 bytes, 64-aligned, so a zmm load of a chunk never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

/// Rows of the largest tile a level loads at once (an AMX tile): `QuantActs` keeps whole groups of this many rows
/// readable on every target.
const TILE_ROWS: usize = 16;

/// `mr` rows of quantized activations for a microkernel: row r at `ptr + r * lda`, its zero point and scale at
/// `zero + r`, `scale + r`.
// `block_stride` is read by the kernels that take blocks in one call (x86 AVX-512).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
struct Rows {
    ptr: *const u8,
    lda: usize,
    mr: usize,
    zero: *const i32,
    scale: *const f32,
    /// Activations in K blocks, for a level with `Micro::BLOCKS`: block g's zero points and scales at
    /// `zero + g * block_stride + r` (0: one per row).
    block_stride: usize,
}

/// `np` int8 panels from `ptr`, `stride` chunks apart, each `kq` chunks long; their column sums and scales.
// The multi-panel and prefetch fields are read by the x86 kernels; the generic and aarch64 ones take a panel at a
// time.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
    /// K of an activation block (0: per row; else a multiple of 4), and the values from one block's column
    /// sums at `colsum` to the next's.
    group: usize,
    block_stride: usize,
}

/// `np` int4 panels: chunks from `ptr` (`stride` apart), `groups` groups of `per_group` chunks; the 16 scales / 16
/// sums of panel v, group g at `scale` / `colsum` + (v * groups + g) * 16.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct I4Panels {
    ptr: *const Chunk,
    stride: usize,
    np: usize,
    groups: usize,
    per_group: usize,
    scale: *const f32,
    colsum: *const i32,
    /// Values from one panel's metadata to the next's: groups * 16, unless a call takes some of the groups.
    meta_stride: usize,
}

impl I4Panels {
    #[inline(always)]
    unsafe fn scale(&self, v: usize, g: usize) -> *const f32 {
        self.scale.add(v * self.meta_stride + g * PANEL)
    }

    #[inline(always)]
    unsafe fn colsum(&self, v: usize, g: usize) -> *const i32 {
        self.colsum.add(v * self.meta_stride + g * PANEL)
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
    /// The kernels take activations in K blocks in one call (`Rows::block_stride`, `I8Panels::group`); else the
    /// driver calls them block by block and adds the blocks' tiles.
    const BLOCKS: bool = false;
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

/// One level's entries in the table: the row quantizer and the GEMM's unit runner, both built from the level's
/// `Micro` (`kernels!`).
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub(crate) quantize_rows: QuantizeRows,
    units: unsafe fn(&Job, std::ops::Range<usize>),
}

/// (x rows of K values, K, how, their u8 rows, scales, zero points): `acts::quantize_rows`.
pub(crate) type QuantizeRows = unsafe fn(&[f32], usize, ActQuant, &mut [u8], &mut [f32], &mut [i32]);

/// `kernels!(M [, "features"])`: the `Kernels` of microkernels `M`, the generic driver compiled with the target
/// features `M` needs (none: the portable build).
macro_rules! kernels {
    ($m:ty $(, $features:literal)?) => {{
        use $crate::qgemm::{acts, ActQuant, Job, Kernels};
        $(#[target_feature(enable = $features)])?
        unsafe fn quantize_rows(x: &[f32], k: usize, p: ActQuant, d: &mut [u8], s: &mut [f32], z: &mut [i32]) {
            acts::quantize_rows::<$m>(x, k, p, d, s, z)
        }
        $(#[target_feature(enable = $features)])?
        unsafe fn units(job: &Job, units: std::ops::Range<usize>) {
            $crate::qgemm::units::<$m>(job, units)
        }
        Kernels { quantize_rows, units }
    }};
}
pub(crate) use kernels;

enum Weights<'a> {
    I8(&'a PackedI8),
    I4(&'a PackedI4),
}

/// The output pointer shared by the workers; each unit writes a disjoint block.
struct OutPtr(*mut f32);
// SAFETY: units write disjoint rows x columns blocks of the output.
unsafe impl Sync for OutPtr {}

pub(crate) struct Job<'a> {
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

/// Units `units` in turn, between one `begin` and `end`: configuring AMX's tiles costs ~130 ns, a tenth of a
/// unit at K = 384, so it is done once per run of units, not per unit.
#[inline(always)]
fn units<M: Micro>(job: &Job, units: std::ops::Range<usize>) {
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
            // SAFETY: rows i0..i0+mr and panels p0..p0+np exist, and this unit alone writes output rows of
            // its row block x columns of its column block.
            unsafe {
                let out = Out { ptr: job.out.0.add(i0 * n + j0), ld: n, nc };
                if a.group > 0 && !M::BLOCKS {
                    blocks::<M>(job, i0, mr, p0, np, &out);
                } else {
                    whole::<M>(job, rb, i0, mr, p0, np, &out);
                }
                for r in 0..mr {
                    job.ep.apply_inline(std::slice::from_raw_parts_mut(out.ptr.add(r * n), nc), i0 + r, j0, n);
                }
            }
        }
    }
}

/// A tile in one microkernel call over all of K (activations per row, or in blocks at a level that takes them).
#[inline(always)]
unsafe fn whole<M: Micro>(job: &Job, rb: usize, i0: usize, mr: usize, p0: usize, np: usize, out: &Out) {
    let a = job.a;
    let (zero, scale, block_stride) = match a.group {
        0 => (&a.zero, &a.scale, 0),
        _ => (&a.gzero, &a.gscale, a.m),
    };
    let rows = Rows { ptr: a.data[i0 * a.k_pad..].as_ptr(), lda: a.k_pad, mr, zero: zero[i0..].as_ptr(), scale: scale[i0..].as_ptr(), block_stride };
    match job.w {
        Weights::I8(w) => {
            // The next column block (contiguous after these panels), a 1/R share per row block: the R units of
            // this column block together bring all of it into L2.
            let next = ((p0 + np) * w.kq).min(w.data.len());
            let len = if job.by_columns { (w.data.len() - next).min(BLOCK_PANELS * w.kq) } else { 0 };
            let share = len * rb / job.row_blocks..len * (rb + 1) / job.row_blocks;
            let colsum = if a.group > 0 { w.block_sum.as_ptr().add(w.block_sum_at(p0, 0)) } else { w.colsum.as_ptr().add(p0 * PANEL) };
            let panels = I8Panels {
                ahead: w.data.as_ptr().add(next + share.start),
                ahead_len: share.len(),
                group: a.group,
                block_stride: pack::BLOCK_SUM_STRIDE,
                ..w.panels(p0, np, 0, w.kq, colsum)
            };
            M::i8(rows, &panels, out);
        }
        Weights::I4(w) => M::i4(rows, &w.panels(p0, np, 0, w.k / w.group), out),
    }
}

impl PackedI8 {
    /// Panels p0..p0+np over K chunks t0..t0+kq, subtracting the column sums at `colsum`; activations per row,
    /// nothing to prefetch.
    #[inline(always)]
    unsafe fn panels(&self, p0: usize, np: usize, t0: usize, kq: usize, colsum: *const i32) -> I8Panels {
        let ptr = self.data.as_ptr().add(p0 * self.kq + t0);
        let scale = self.scale.as_ptr().add(p0 * PANEL);
        I8Panels { ptr, stride: self.kq, np, kq, colsum, scale, ahead: ptr, ahead_len: 0, group: 0, block_stride: 0 }
    }
}

impl PackedI4 {
    /// Panels p0..p0+np over K groups g0..g0+groups.
    #[inline(always)]
    unsafe fn panels(&self, p0: usize, np: usize, g0: usize, groups: usize) -> I4Panels {
        let (kc, all) = (self.k / 8, self.k / self.group);
        let meta = p0 * all * PANEL + g0 * PANEL;
        I4Panels {
            ptr: self.data.as_ptr().add(p0 * kc + g0 * self.group / 8),
            stride: kc,
            np,
            groups,
            per_group: self.group / 8,
            scale: self.scale16.as_ptr().add(meta),
            colsum: self.colsum16.as_ptr().add(meta),
            meta_stride: all * PANEL,
        }
    }
}

/// A tile on activations quantized in K blocks: the microkernel runs once per block (its rows' scales and zero
/// points are that block's), and the blocks' f32 tiles add up in order; block 0 is stored, the others added.
#[inline(always)]
unsafe fn blocks<M: Micro>(job: &Job, i0: usize, mr: usize, p0: usize, np: usize, out: &Out) {
    const WIDTH: usize = BLOCK_PANELS * PANEL;
    let a = job.a;
    let (group, m) = (a.group, a.m);
    // Not zeroed (9 KB per tile, on a decode step's every tile): the kernel stores the mr x nc values read below.
    let mut tile = std::mem::MaybeUninit::<[f32; ROW_BLOCK * WIDTH]>::uninit();
    let tile = tile.as_mut_ptr().cast::<f32>();
    for g in 0..a.k / group {
        let rows = Rows {
            ptr: a.data.as_ptr().add(i0 * a.k_pad + g * group),
            lda: a.k_pad,
            mr,
            zero: a.gzero.as_ptr().add(g * m + i0),
            scale: a.gscale.as_ptr().add(g * m + i0),
            block_stride: 0,
        };
        let to = if g == 0 { Out { ptr: out.ptr, ld: out.ld, nc: out.nc } } else { Out { ptr: tile, ld: WIDTH, nc: out.nc } };
        match job.w {
            Weights::I8(w) => M::i8(rows, &w.panels(p0, np, g * group / 4, group / 4, w.block_sum.as_ptr().add(w.block_sum_at(p0, g))), &to),
            Weights::I4(w) => M::i4(rows, &w.panels(p0, np, g, 1), &to),
        }
        if g > 0 {
            for r in 0..mr {
                let y = std::slice::from_raw_parts_mut(out.ptr.add(r * out.ld), out.nc);
                let t = std::slice::from_raw_parts(tile.add(r * WIDTH), out.nc);
                y.iter_mut().zip(t).for_each(|(y, t)| *y += t);
            }
        }
    }
}

pub(super) fn check(out: &[f32], a: &QuantActs, k: usize, n: usize, ep: &Epilogue) {
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
fn run(ops: &Ops, out: &mut [f32], a: &QuantActs, w: Weights, n: usize, ep: Epilogue) {
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
    let units = ops.qgemm.units;
    // SAFETY (both calls): a table's kernels run on this CPU; units write disjoint blocks.
    // A small product (a decode step's Linear: M = 1, well under a megabyte of weights) runs in the time a worker
    // takes to wake: splitting it made 2-thread generation slower than 1-thread.
    if rayon::current_num_threads() > 1 && count > 1 && a.m * n * a.k >= PARALLEL_MIN.load(std::sync::atomic::Ordering::Relaxed) {
        // Tasks of a few consecutive units: fewer tile configurations, and still enough tasks to balance.
        const PER_TASK: usize = 4;
        (0..count.div_ceil(PER_TASK))
            .into_par_iter()
            .for_each(|t| unsafe { units(&job, t * PER_TASK..(t * PER_TASK + PER_TASK).min(count)) });
    } else {
        unsafe { units(&job, 0..count) };
    }
}

/// out (m x n row-major f32) = dequant(a) x dequant(w)^T with the epilogue, at the level in use. On the rayon
/// threads of the current pool when it has more than one (split over 48-row x 48-column blocks), else on this
/// thread without heap allocation.
pub fn gemm_i8(out: &mut [f32], a: &QuantActs, w: &PackedI8, ep: Epilogue) {
    gemm_i8_on(ops::ops(), out, a, w, ep)
}

/// `gemm_i8` on the kernels of `ops`.
pub fn gemm_i8_on(ops: &Ops, out: &mut [f32], a: &QuantActs, w: &PackedI8, ep: Epilogue) {
    check(out, a, w.k, w.n, &ep);
    assert!(a.group == 0 || a.group == w.group, "activations in blocks of {} need the weights' sums per block (have {})", a.group, w.group);
    run(ops, out, a, Weights::I8(w), w.n, ep)
}

/// out (m x n) = dequant(a) x dequant(w)^T with the epilogue, int8 activations x int4 weights: i32 sums within each
/// group, then an f32 fma with the group's scale. Threads and allocation as `gemm_i8`.
pub fn gemm_i4(out: &mut [f32], a: &QuantActs, w: &PackedI4, ep: Epilogue) {
    gemm_i4_on(ops::ops(), out, a, w, ep)
}

/// `gemm_i4` on the kernels of `ops`.
pub fn gemm_i4_on(ops: &Ops, out: &mut [f32], a: &QuantActs, w: &PackedI4, ep: Epilogue) {
    check(out, a, w.k, w.n, &ep);
    assert!(a.group == 0 || a.group == w.group, "activations in blocks of {} need int4 groups of that size (have {})", a.group, w.group);
    run(ops, out, a, Weights::I4(w), w.n, ep)
}

