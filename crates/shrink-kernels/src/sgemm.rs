//! f32 GEMM against weights packed once: y (M x N) = x (M x K) · Wᵀ, W the HF Linear weight [N, K], with a fused
//! epilogue. BLIS-style: W is stored as NR-column panels [K][NR]; a KC x NR sliver of a panel stays in L1 while
//! MR-row tiles of x stream past it, and an MR x NR accumulator tile lives in registers. Threads split the panels,
//! so each writes its own columns and no thread waits on another.

use std::ops::Range;

use crate::epilogue::Epilogue;
use crate::isa::{self, Isa};

/// Weights in panels of `nr` columns: [ceil(N / NR)][K][NR], zero-padded past N.
pub struct PackedF32 {
    n: usize,
    k: usize,
    isa: Isa,
    /// Panels of the level's narrow width (see `geometry`).
    narrow: bool,
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
struct Geometry {
    mr: usize,
    nr: usize,
    kc: usize,
}

/// `narrow`: 32 columns at AVX-512 instead of 48, for matrices 32 or 64 wide (attention's per-head K and V, D or T
/// wide), which 48-wide panels would pad by a third and send down the short-tile path on every tile.
const fn geometry(isa: Isa, narrow: bool) -> Geometry {
    match isa {
        // 8 x 2 zmm accumulators: 16 chains still cover the FMA latency at 2 per cycle.
        Isa::Avx512 | Isa::Amx if narrow => Geometry { mr: 8, nr: 32, kc: 192 },
        // 8 x 3 zmm accumulators + 3 weight registers + 1 broadcast of 32 registers. KC 192: the 192 x 48 weight
        // sliver (36 KB) stays in L1 across the row tiles; at 384 it streamed from L2 (measured 106 -> 139 GOP/s at
        // 128 x 384 x 1536, one thread).
        Isa::Avx512 | Isa::Amx => Geometry { mr: 8, nr: 48, kc: 192 },
        // 6 x 2 ymm accumulators + 2 + 1 of 16.
        Isa::Avx2 => Geometry { mr: 6, nr: 16, kc: 384 },
        Isa::Scalar => Geometry { mr: 4, nr: 8, kc: 768 },
    }
}

/// Rows of x a thread keeps hot (in L2) while it walks its panels.
const MC: usize = 256;

impl PackedF32 {
    /// Packs for the kernel level in use.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack_for(isa::isa(), w, n, k)
    }

    /// Packs for a given level (capped at what this CPU runs).
    pub fn pack_for(isa: Isa, w: &[f32], n: usize, k: usize) -> Self {
        let mut p = Self::empty(isa);
        p.repack(w, n, k, k, 1);
        p
    }

    /// Holds nothing yet; `repack` fills it.
    pub fn empty(isa: Isa) -> Self {
        Self { n: 0, k: 0, isa: isa.min(isa::best()), narrow: false, data: Vec::new() }
    }

    /// `empty` with narrow panels (see `geometry`).
    pub fn empty_narrow(isa: Isa) -> Self {
        Self { narrow: true, ..Self::empty(isa) }
    }

    fn geometry(&self) -> Geometry {
        geometry(self.isa, self.narrow)
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

    pub fn n(&self) -> usize {
        self.n
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
        unsafe { run(o, x, lda, m, w, &ep, 0..panels) };
        return;
    }
    use rayon::prelude::*;
    (0..threads).into_par_iter().for_each(|t| {
        let span = panels * t / threads..panels * (t + 1) / threads;
        // SAFETY: panel ranges are disjoint, so the written columns are.
        unsafe { run(o, x, lda, m, w, &ep, span) };
    });
}

/// Naive reference: w is the unpacked [N, K] weight.
pub fn gemm_f32_ref(out: &mut [f32], x: &[f32], m: usize, w: &[f32], n: usize, k: usize, ep: Epilogue) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
        }
        ep.apply(&mut out[i * n..(i + 1) * n], i, 0, n);
    }
}

/// Loops MC row blocks, KC depth blocks, the given panels, then MR-row tiles; the epilogue runs on each finished tile
/// while it is still in cache.
unsafe fn run(out: Out, x: &[f32], lda: usize, m: usize, w: &PackedF32, ep: &Epilogue, panels: Range<usize>) {
    let Geometry { mr, nr, kc } = w.geometry();
    let (n, k) = (w.n, w.k);
    let kernel = KERNELS[w.narrow as usize][w.isa as usize];
    for m0 in (0..m).step_by(MC) {
        let m1 = (m0 + MC).min(m);
        for k0 in (0..k).step_by(kc) {
            let kb = kc.min(k - k0);
            let last = k0 + kb == k;
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
                    let c = out.ptr.add(i0 * out.ld + j0);
                    let ahead = next.wrapping_add((i0 - m0) / mr * share);
                    let ep = (last && !ep.is_identity()).then_some((ep, i0, j0, n));
                    let tile = Tile { c, ldc: out.ld, rows, cols, accumulate: k0 > 0, ep };
                    kernel(x.as_ptr().add(i0 * lda + k0), lda, b, kb, ahead, &tile);
                }
            }
        }
    }
}

/// Where a kernel's tile goes: `rows` x `cols` at `c` (stride `ldc`), added to what is there or not, and once the
/// last depth block is in, the epilogue of output rows from `ep.1`, columns from `ep.2` of an output `ep.3` wide.
/// The kernel applies it inlined at its own level: a dispatched call per tile row cost more than a bias add.
struct Tile<'a> {
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
    ep: Option<(&'a Epilogue<'a>, usize, usize, usize)>,
}

/// (a: MR rows of x at stride lda, b: kc x NR sliver, kc, ahead: weights to prefetch, one line per `PREFETCH_EVERY`
/// k steps, the tile)
type Kernel = unsafe fn(*const f32, usize, *const f32, usize, *const f32, &Tile);

/// k steps between two lines of the next weight sliver that a tile prefetches into L2. Spread through the k loop: a
/// burst of L2 misses stalls on the fill buffers (36 prefetches in a loop before each tile took 8% of the forward).
const PREFETCH_EVERY: usize = 4;

/// Indexed by [narrow as usize][Isa as usize] (AMX has no f32 tiles here: its level runs the AVX-512 kernels; only
/// AVX-512 has a narrow geometry of its own).
const KERNELS: [[Kernel; 4]; 2] = [
    [kernel_scalar, kernel_avx2, kernel_avx512, kernel_avx512],
    [kernel_scalar, kernel_avx2, kernel_avx512_narrow, kernel_avx512_narrow],
];

/// One register-blocked kernel per level. Short edge tiles go through stack copies so the register loop is always
/// full size; zero-padded panels make the extra columns harmless.
macro_rules! microkernel {
    ($(#[$attr:meta])* $name:ident, $geom:expr, $V:ty, $w:expr, $zero:expr, $load:expr, $splat:expr, $fma:expr, $add:expr, $store:expr) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(a: *const f32, lda: usize, b: *const f32, kc: usize, ahead: *const f32, tile: &Tile) {
            let &Tile { c, ldc, rows, cols, accumulate, ep } = tile;
            const G: Geometry = $geom;
            const MR: usize = G.mr;
            const NV: usize = G.nr / $w;
            // (MR, kc) copy of a short tile; uninitialised so full tiles pay no memset, and only its first `rows`
            // rows are written: the rows below feed accumulators that are never stored.
            let mut a_pad = std::mem::MaybeUninit::<[f32; G.mr * G.kc]>::uninit();
            let (a, lda) = if rows < MR {
                let pad = a_pad.as_mut_ptr().cast::<f32>();
                for r in 0..MR {
                    if r < rows {
                        std::ptr::copy_nonoverlapping(a.add(r * lda), pad.add(r * kc), kc);
                    } else {
                        std::ptr::write_bytes(pad.add(r * kc), 0, kc);
                    }
                }
                (pad as *const f32, kc)
            } else {
                (a, lda)
            };
            let mut acc: [[$V; NV]; MR] = [[$zero; NV]; MR];
            // One base pointer per row and k as the shared index: each broadcast is one addressing mode, where
            // row i at a + i lda cost integer ops per step that took FMA slots.
            let mut rows_at = [a; MR];
            for (i, r) in rows_at.iter_mut().enumerate() {
                *r = a.add(i * lda);
            }
            let full = kc / PREFETCH_EVERY * PREFETCH_EVERY;
            let mut step = |p: usize| {
                let bp = b.add(p * G.nr);
                let mut bv: [$V; NV] = [$zero; NV];
                for j in 0..NV {
                    bv[j] = $load(bp.add(j * $w));
                }
                for i in 0..MR {
                    let av = $splat(*rows_at[i].add(p));
                    for j in 0..NV {
                        acc[i][j] = $fma(av, bv[j], acc[i][j]);
                    }
                }
            };
            for p0 in (0..full).step_by(PREFETCH_EVERY) {
                prefetch_l2(ahead.wrapping_add(p0 / PREFETCH_EVERY * 16));
                for u in 0..PREFETCH_EVERY {
                    step(p0 + u);
                }
            }
            for p in full..kc {
                step(p);
            }
            if rows == MR && cols == G.nr {
                for i in 0..MR {
                    for j in 0..NV {
                        let cp = c.add(i * ldc + j * $w);
                        let v = if accumulate { $add($load(cp), acc[i][j]) } else { acc[i][j] };
                        $store(cp, v);
                    }
                }
            } else {
                let mut part = [0f32; G.mr * G.nr]; // (MR, NR)
                for i in 0..MR {
                    for j in 0..NV {
                        $store(part.as_mut_ptr().add(i * G.nr + j * $w), acc[i][j]);
                    }
                }
                for i in 0..rows {
                    for j in 0..cols {
                        let cp = c.add(i * ldc + j);
                        *cp = if accumulate { *cp } else { 0.0 } + part[i * G.nr + j];
                    }
                }
            }
            if let Some((ep, row, col, n)) = ep {
                for r in 0..rows {
                    ep.apply_inline(std::slice::from_raw_parts_mut(c.add(r * ldc), cols), row + r, col, n);
                }
            }
        }
    };
}

#[inline(always)]
fn prefetch_l2(p: *const f32) {
    // SAFETY: a prefetch never faults, even past the data.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        _mm_prefetch::<_MM_HINT_T1>(p.cast())
    };
}

microkernel!(kernel_scalar, geometry(Isa::Scalar, false), f32, 1, 0.0, |p: *const f32| *p, |x| x, |a: f32, b: f32, c: f32| a * b + c,
    |a: f32, b: f32| a + b, |p: *mut f32, v| *p = v);

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
microkernel!(#[target_feature(enable = "avx2,fma")] kernel_avx2, geometry(Isa::Avx2, false), __m256, 8, _mm256_setzero_ps(),
    _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps);

// The AVX-512 kernels take the multiversioned epilogue's features, so the epilogue they inline compiles as it does
// there (fma for mul_add).
#[cfg(target_arch = "x86_64")]
microkernel!(#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")] kernel_avx512,
    geometry(Isa::Avx512, false), __m512, 16,
    _mm512_setzero_ps(), _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps);

#[cfg(target_arch = "x86_64")]
microkernel!(#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")] kernel_avx512_narrow,
    geometry(Isa::Avx512, true), __m512, 16,
    _mm512_setzero_ps(), _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps);

#[cfg(not(target_arch = "x86_64"))]
use kernel_scalar as kernel_avx2;
#[cfg(not(target_arch = "x86_64"))]
use kernel_scalar as kernel_avx512;
#[cfg(not(target_arch = "x86_64"))]
use kernel_scalar as kernel_avx512_narrow;

#[cfg(test)]
mod tests {
    use super::*;

    /// |fast - ref| <= budget x sum_k |x w|: reordered f32 sums differ by a few ulps of the absolute sum.
    const F32_GEMM_REL_BUDGET: f32 = 1e-5;

    use crate::testdata::uniform as rand_vec;

    #[test]
    fn packed_matches_reference_on_awkward_shapes() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for &(m, k, n) in &[(1, 1, 1), (1, 5, 7), (3, 33, 17), (9, 130, 50), (17, 384, 97), (128, 384, 384), (2, 1536, 48)] {
            let (x, w, bias, res) = (rand_vec(m * k, 1), rand_vec(n * k, 2), rand_vec(n, 3), rand_vec(m * n, 4));
            let mag: Vec<f32> = (0..m * n).map(|i| (0..k).map(|p| (x[i / n * k + p] * w[i % n * k + p]).abs()).sum()).collect();
            for ep in [
                Epilogue::default(),
                Epilogue { bias: Some(&bias), gelu: true, residual: None },
                Epilogue { bias: Some(&bias), gelu: false, residual: Some(&res) },
            ] {
                let mut want = vec![0f32; m * n];
                gemm_f32_ref(&mut want, &x, m, &w, n, k, ep);
                for (level, narrow) in Isa::available().into_iter().flat_map(|l| [(l, false), (l, true)]) {
                    let mut packed = if narrow { PackedF32::empty_narrow(level) } else { PackedF32::empty(level) };
                    packed.repack(&w, n, k, k, 1);
                    for threads in [1, 2] {
                        let mut got = vec![f32::NAN; m * n];
                        pool.install(|| {
                            if threads == 1 {
                                rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
                                    gemm_f32(&mut got, &x, m, &packed, ep)
                                })
                            } else {
                                gemm_f32(&mut got, &x, m, &packed, ep)
                            }
                        });
                        for i in 0..m * n {
                            let tol = F32_GEMM_REL_BUDGET * (mag[i] + 1.0);
                            assert!(
                                (got[i] - want[i]).abs() <= tol,
                                "{level:?} narrow {narrow} {threads}t m{m} k{k} n{n} [{i}]: {} vs {}",
                                got[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strided_input_output_and_transposed_repack() {
        let (m, k, n, lda, ldc) = (19, 40, 33, 57, 70);
        let x = rand_vec(m * lda, 5);
        let w = rand_vec(n * k, 6);
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect(); // (K, N)
        let dense: Vec<f32> = (0..m * k).map(|i| x[i / k * lda + i % k]).collect();
        let mut want = vec![0f32; m * n];
        gemm_f32_ref(&mut want, &dense, m, &w, n, k, Epilogue::default());
        for (level, narrow) in Isa::available().into_iter().flat_map(|l| [(l, false), (l, true)]) {
            let mut p = if narrow { PackedF32::empty_narrow(level) } else { PackedF32::empty(level) };
            p.repack(&rand_vec(3 * n * k, 7), n + 5, k, k, 1); // leaves stale panels behind
            p.repack(&wt, n, k, 1, n);
            let mut got = vec![-7f32; m * ldc];
            gemm_f32_ex(&mut got, ldc, &x, lda, m, &p, Epilogue::default(), 2);
            for i in 0..m {
                for j in 0..n {
                    assert!((got[i * ldc + j] - want[i * n + j]).abs() < 1e-4, "{level:?} narrow {narrow} ({i},{j})");
                }
                assert!(got[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == -7.0), "{level:?} narrow {narrow}: wrote past n");
            }
        }
    }
}
