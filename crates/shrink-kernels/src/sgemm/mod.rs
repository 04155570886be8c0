//! f32 GEMM against weights packed once: y (M x N) = x (M x K) · Wᵀ, W the HF Linear weight [N, K], with a fused
//! epilogue. BLIS-style: W is stored as NR-column panels [K][NR]; a KC x NR sliver of a panel stays in L1 while
//! MR-row tiles of x stream past it, and an MR x NR accumulator tile lives in registers. Threads split the panels,
//! so each writes its own columns and no thread waits on another.

use std::ops::Range;

use crate::epilogue::Epilogue;
use crate::ops::{self, Ops};

pub(crate) mod generic;
mod reference;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    pub(crate) mod avx2;
    pub(crate) mod avx512;
}
#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64 {
    pub(crate) mod neon;
}

pub use reference::gemm_f32_ref;

/// Weights in panels of `nr` columns: [ceil(N / NR)][K][NR], zero-padded past N.
pub struct PackedF32 {
    n: usize,
    k: usize,
    /// The microkernel the panels are laid out for (its NR).
    kernel: Kernel,
    data: Vec<Line>,
}

/// One cache line of weights: panels start on a line, so the kernel's vector loads never straddle two (the NR of
/// every SIMD level is a whole number of lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);
const _: () = assert!(std::mem::size_of::<Line>() == 64);

impl PackedF32 {
    fn values(&self) -> &[f32] {
        // SAFETY: Line is 16 plain f32s with no padding.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast(), self.data.len() * 16) }
    }

    fn values_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast(), self.data.len() * 16) }
    }
}

/// Microkernel tile (MR rows x NR columns) and the K block that keeps a KC x NR weight sliver within L1.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    pub(crate) kc: usize,
}

/// A microkernel and its geometry: what a table holds, and what a packed matrix is packed for.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    pub(crate) geometry: Geometry,
    pub(crate) run: KernelFn,
}

/// Rows of x a thread keeps hot (in L2) while it walks its panels.
const MC: usize = 256;

impl PackedF32 {
    /// Packs for the level in use.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack_for(ops::ops(), w, n, k)
    }

    /// Packs for the kernels of `ops`.
    pub fn pack_for(ops: &Ops, w: &[f32], n: usize, k: usize) -> Self {
        let mut p = Self::empty(ops);
        p.repack(w, n, k, k, 1);
        p
    }

    /// Holds nothing yet; `repack` fills it for the kernels of `ops`.
    pub fn empty(ops: &Ops) -> Self {
        Self { n: 0, k: 0, kernel: ops.sgemm, data: Vec::new() }
    }

    /// `empty` with the level's narrow panels, for matrices 32 or 64 wide (attention's per-head K and V, D or T
    /// wide), which the usual 48-wide AVX-512 panels would pad by a third and send down the short-tile path on
    /// every tile.
    pub fn empty_narrow(ops: &Ops) -> Self {
        Self { kernel: ops.sgemm_narrow, ..Self::empty(ops) }
    }

    fn geometry(&self) -> Geometry {
        self.kernel.geometry
    }

    /// Packs W (n x k) whose element (j, p) is `src[j * sn + p * sk]`, reusing this buffer: no allocation once it
    /// has held a matrix this large (attention repacks K and V per head this way).
    pub fn repack(&mut self, src: &[f32], n: usize, k: usize, sn: usize, sk: usize) {
        assert!(n == 0 || k == 0 || src.len() > (n - 1) * sn + (k - 1) * sk, "weight source too short for {n} x {k}");
        let nr = self.geometry().nr;
        let panels = n.div_ceil(nr);
        let lines = (panels * k * nr).div_ceil(16);
        if self.data.len() < lines {
            self.data.resize(lines, Line([0.0; 16]));
        }
        for (p, panel) in self.values_mut()[..panels * k * nr].chunks_exact_mut(k * nr).enumerate() {
            let cols = nr.min(n - p * nr);
            let first = &src[p * nr * sn..];
            for (kk, dst) in panel.chunks_exact_mut(nr).enumerate() {
                // [K][NR]: one NR-wide row per k; a contiguous copy when columns are adjacent in the source.
                if sn == 1 {
                    dst[..cols].copy_from_slice(&first[kk * sk..kk * sk + cols]);
                } else {
                    for (j, d) in dst[..cols].iter_mut().enumerate() {
                        *d = first[j * sn + kk * sk];
                    }
                }
                dst[cols..].fill(0.0);
            }
        }
        (self.n, self.k) = (n, k);
    }

    /// Multiplies output columns `cols` by `s` (folds a constant into a layer).
    pub fn scale_columns(&mut self, cols: Range<usize>, s: f32) {
        assert!(cols.end <= self.n, "columns {cols:?} outside {}", self.n);
        let nr = self.geometry().nr;
        for j in cols {
            let k = self.k;
            let panel = &mut self.values_mut()[j / nr * k * nr..][..k * nr];
            panel.iter_mut().skip(j % nr).step_by(nr).for_each(|v| *v *= s);
        }
    }

    /// Output column `j`'s K weights into `out`: a tied embedding table's row read back from its head.
    pub fn column(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n && out.len() == self.k, "column {j} of {} x {} into {}", self.n, self.k, out.len());
        let (nr, k) = (self.geometry().nr, self.k);
        let panel = &self.values()[j / nr * k * nr..][..k * nr];
        out.iter_mut().zip(panel.iter().skip(j % nr).step_by(nr)).for_each(|(o, &v)| *o = v);
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// NR: columns per panel; `gemm_f32_block` takes column ranges that start on one.
    pub fn panel_width(&self) -> usize {
        self.geometry().nr
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 64
    }
}

/// Output rows at stride `ld`, shared by threads that write disjoint column ranges.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ld: usize,
}
// SAFETY: every thread writes only the columns of its own panels.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// out (m x n) = x (m x k) · Wᵀ, then the epilogue, on the threads of the current rayon pool (see `gemm_f32_ex`).
pub fn gemm_f32(out: &mut [f32], x: &[f32], m: usize, w: &PackedF32, ep: Epilogue) {
    gemm_f32_ex(out, w.n, x, w.k, m, w, ep, rayon::current_num_threads())
}

/// `gemm_f32` with row strides: output row i at `out[i * ldc..]`, input row i at `x[i * lda..]`. Splits panels over
/// `threads` rayon tasks when above one; with one it runs on the caller and allocates nothing.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_ex(out: &mut [f32], ldc: usize, x: &[f32], lda: usize, m: usize, w: &PackedF32, ep: Epilogue, threads: usize) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k && x.len() >= (m - 1) * lda + k, "input too short for {m} x {k} at stride {lda}");
    assert!(ldc >= n && out.len() >= (m - 1) * ldc + n, "output too short for {m} x {n} at stride {ldc}");
    assert!(ep.residual.is_none() || ldc == n, "a residual needs a dense output");
    assert!(ep.bias.is_none_or(|b| b.len() >= n) && ep.residual.is_none_or(|r| r.len() >= m * n));
    let panels = n.div_ceil(w.geometry().nr);
    let threads = threads.min(panels).max(1);
    let o = Out { ptr: out.as_mut_ptr(), ld: ldc };
    if threads == 1 {
        // SAFETY: shapes checked above; this call owns all panels.
        unsafe { run(o, x, lda, m, w, &ep, 0..panels, n, 0..k, false) };
        return;
    }
    use rayon::prelude::*;
    (0..threads).into_par_iter().for_each(|t| {
        let span = panels * t / threads..panels * (t + 1) / threads;
        // SAFETY: panel ranges are disjoint, so the written columns are.
        unsafe { run(o, x, lda, m, w, &ep, span, n, 0..k, false) };
    });
}

/// out (m x cols.len()) = x (m x depth.len()) · W[cols, depth]ᵀ for one block of a packed matrix, added to what
/// `out` holds when `accumulate`: attention's key blocks, scores against a range of K's columns (`cols`, starting on a
/// panel boundary: a multiple of `panel_width`) and context from a range of Vᵀ's depth. x's column 0 is depth
/// `depth.start`; output column 0 is column `cols.start`. One thread, no epilogue.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_block(
    out: &mut [f32], ldc: usize, x: &[f32], lda: usize, m: usize, w: &PackedF32, cols: Range<usize>, depth: Range<usize>, accumulate: bool,
) {
    let (n, k) = (cols.len(), depth.len());
    assert!(cols.end <= w.n && depth.end <= w.k, "block {cols:?} x {depth:?} outside {} x {}", w.n, w.k);
    assert!(cols.start % w.panel_width() == 0, "block columns start at {}, not on a panel of {}", cols.start, w.panel_width());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.chunks_mut(ldc).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    assert!(lda >= k && x.len() >= (m - 1) * lda + k, "input too short for {m} x {k} at stride {lda}");
    assert!(ldc >= n && out.len() >= (m - 1) * ldc + n, "output too short for {m} x {n} at stride {ldc}");
    let o = Out { ptr: out.as_mut_ptr().wrapping_sub(cols.start), ld: ldc };
    let nr = w.panel_width();
    // SAFETY: shapes checked above; columns cols.start.. land at out's column 0 (the kernel adds p * NR).
    unsafe { run(o, x, lda, m, w, &Epilogue::default(), cols.start / nr..cols.end.div_ceil(nr), cols.end, depth, accumulate) };
}

/// Loops MC row blocks, KC depth blocks of `depth` (x's column 0 is `depth.start`), the given panels (their columns
/// clipped at `n`), then MR-row tiles, adding to `out` from the first depth block when `accumulate`; the epilogue runs on each
/// finished tile while it is still in cache.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    out: Out, x: &[f32], lda: usize, m: usize, w: &PackedF32, ep: &Epilogue, panels: Range<usize>, n: usize, depth: Range<usize>, accumulate: bool,
) {
    let Geometry { mr, nr, kc } = w.geometry();
    let k = w.k;
    let kernel = w.kernel.run;
    for m0 in (0..m).step_by(MC) {
        let m1 = (m0 + MC).min(m);
        for k0 in depth.clone().step_by(kc) {
            let kb = kc.min(depth.end - k0);
            let last = k0 + kb == depth.end;
            // Each row tile prefetches its share of the sliver after this one (the next panel's, or the next depth
            // block's first) into L2: the first tile of a panel then reads L2, not L3 (fp32 forward -12%).
            let share = (kb * nr).div_ceil((m1 - m0).div_ceil(mr)).next_multiple_of(16);
            for p in panels.clone() {
                let (j0, cols) = (p * nr, nr.min(n - p * nr));
                let b = w.values().as_ptr().add(p * k * nr + k0 * nr);
                let next = match p + 1 < panels.end {
                    true => b.add(k * nr),
                    false => w.values().as_ptr().wrapping_add(panels.start * k * nr + (k0 + kb) * nr),
                };
                for i0 in (m0..m1).step_by(mr) {
                    let rows = mr.min(m1 - i0);
                    let c = out.ptr.wrapping_add(i0 * out.ld + j0);
                    let ahead = next.wrapping_add((i0 - m0) / mr * share);
                    let ep = (last && !ep.is_identity()).then_some((ep, i0, j0, n));
                    let tile = Tile { c, ldc: out.ld, rows, cols, accumulate: accumulate || k0 > depth.start, ep };
                    // SAFETY: the kernel came from a table of this CPU; the tile lies inside x, w and out.
                    kernel(x.as_ptr().add(i0 * lda + k0 - depth.start), lda, b, kb, ahead, &tile);
                }
            }
        }
    }
}

/// Where a kernel's tile goes: `rows` x `cols` at `c` (stride `ldc`), added to what is there or not, and once the
/// last depth block is in, the epilogue of output rows from `ep.1`, columns from `ep.2` of an output `ep.3` wide.
/// The kernel applies it inlined at its own level: a dispatched call per tile row cost more than a bias add.
pub(crate) struct Tile<'a> {
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
    ep: Option<(&'a Epilogue<'a>, usize, usize, usize)>,
}

/// (a: MR rows of x at stride lda, b: kc x NR sliver, kc, ahead: weights to prefetch, one line per `PREFETCH_EVERY`
/// k steps, the tile)
pub(crate) type KernelFn = unsafe fn(*const f32, usize, *const f32, usize, *const f32, &Tile);

/// k steps between two lines of the next weight sliver that a tile prefetches into L2. Spread through the k loop: a
/// burst of L2 misses stalls on the fill buffers (36 prefetches in a loop before each tile took 8% of the forward).
pub(crate) const PREFETCH_EVERY: usize = 4;

#[inline(always)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(unused_variables))] // no hint here
pub(crate) fn prefetch_l2(p: *const f32) {
    // SAFETY (both): a prefetch never faults, even past the data.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
}

