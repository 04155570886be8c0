//! GPTQ (Frantar et al. 2022) for the weights of one Linear layer: quantize W (n outputs x k inputs, row-major, HF
//! layout) column by column, and after each column push its rounding error onto the columns not yet quantized so
//! that the layer's *output* on calibration inputs moves as little as possible. The inputs enter only through the
//! Hessian H = (2 / rows) Σ xᵀx of the layer's squared output error. Rows of W are independent given H, so all the
//! per-column work is done one row at a time over contiguous memory; only the lazy block updates share H⁻¹ rows
//! across a small tile of rows.
//!
//! Only `std`: the numerics are small dense f64 kernels written out here. The grids, scales and rounding are the
//! storage formats' (`shrink_format::quant::grid`), so GPTQ and round-to-nearest store the same kind of values.

use std::thread;

pub use shrink_format::quant::grid::{rtn, Grid, Quantized};
use shrink_format::quant::grid::{round_q, scale_of};

/// Accumulates H = (2 / rows) Σ xᵀx (k x k, f64) over calibration rows: the curvature of the squared output error
/// ||x Wᵀ - x Ŵᵀ||² in the weights of one output row, shared by all n rows.
#[derive(Clone, Debug)]
pub struct Hessian {
    k: usize,
    /// Σ xᵀx, k x k; only the upper triangle is accumulated (H is symmetric), `matrix` mirrors it.
    sum: Vec<f64>,
    rows: usize,
}

/// Calibration rows converted to f64 at a time in `Hessian::add`: small enough to stay in L2 for k = 1536.
const ADD_CHUNK_ROWS: usize = 64;

impl Hessian {
    pub fn new(k: usize) -> Self {
        assert!(k > 0, "Hessian: k must be positive");
        Self { k, sum: vec![0.0; k * k], rows: 0 }
    }

    /// Adds calibration rows; x is rows x k row-major (the layer's inputs, one row per token).
    pub fn add(&mut self, x: &[f32]) {
        let k = self.k;
        assert!(x.len().is_multiple_of(k), "Hessian::add: {} values are not whole rows of k = {k}", x.len());
        let mut xs = vec![0f64; ADD_CHUNK_ROWS.min(x.len() / k) * k];
        for chunk in x.chunks(ADD_CHUNK_ROWS * k) {
            let xs = &mut xs[..chunk.len()];
            for (d, &v) in xs.iter_mut().zip(chunk) {
                *d = f64::from(v);
            }
            let m = chunk.len() / k;
            // Row i of the triangle costs k - i: split the rows of `sum` so each thread gets the same area.
            let threads = threads_for(m * k * k / 2);
            let mut bounds = vec![0];
            let (total, mut acc) = (k * (k + 1) / 2, 0);
            for i in 0..k {
                acc += k - i;
                if acc * threads >= total * bounds.len() && bounds.len() < threads {
                    bounds.push(i + 1);
                }
            }
            bounds.push(k);
            bounds.dedup();
            let xs = &*xs;
            thread::scope(|s| {
                let mut rest = &mut self.sum[..];
                for w in bounds.windows(2) {
                    let (part, tail) = rest.split_at_mut((w[1] - w[0]) * k);
                    rest = tail;
                    let i0 = w[0];
                    if w[1] == k {
                        accumulate(part, i0, k, xs); // the last part on this thread: no spawn for small adds
                    } else {
                        s.spawn(move || accumulate(part, i0, k, xs));
                    }
                }
            });
        }
        self.rows += x.len() / k;
    }

    /// Adds a precomputed Gram matrix Σ xᵀx (k x k, f32, e.g. from a GEMM) of `rows` calibration rows: much faster
    /// than `add` for big batches, at f32 accuracy within the batch. Both triangles are averaged.
    pub fn add_gram(&mut self, gram: &[f32], rows: usize) {
        let k = self.k;
        assert_eq!(gram.len(), k * k, "Hessian::add_gram: {} values, k x k = {k}x{k} needs {}", gram.len(), k * k);
        for i in 0..k {
            for j in i..k {
                self.sum[i * k + j] += 0.5 * (f64::from(gram[i * k + j]) + f64::from(gram[j * k + i]));
            }
        }
        self.rows += rows;
    }

    /// The Hessian of the inputs x ⊙ d (k factors): D H D. For inputs rescaled after calibration (SmoothQuant's
    /// x / s is d = 1 / s), so GPTQ sees the inputs the weights will meet.
    pub fn scaled(&self, d: &[f32]) -> Hessian {
        let k = self.k;
        assert_eq!(d.len(), k, "Hessian::scaled: {} factors for k = {k}", d.len());
        let mut sum = self.sum.clone();
        for i in 0..k {
            for j in i..k {
                sum[i * k + j] *= f64::from(d[i]) * f64::from(d[j]);
            }
        }
        Hessian { k, sum, rows: self.rows }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The full symmetric H = (2 / rows) Σ xᵀx; rows must be positive.
    fn matrix(&self) -> Vec<f64> {
        let (k, c) = (self.k, 2.0 / self.rows as f64);
        let mut h = vec![0f64; k * k];
        for i in 0..k {
            for j in i..k {
                let v = self.sum[i * k + j] * c;
                h[i * k + j] = v;
                h[j * k + i] = v;
            }
        }
        h
    }
}

/// sum[i][i..] += Σ_r x_r[i] x_r[i..] for the rows i0.. of `sum` it holds; xs is m x k. Four calibration rows per
/// pass, so each load and store of `sum` carries four multiply-adds.
fn accumulate(sum: &mut [f64], i0: usize, k: usize, xs: &[f64]) {
    for (di, srow) in sum.chunks_exact_mut(k).enumerate() {
        let i = i0 + di;
        let s = &mut srow[i..];
        let mut quads = xs.chunks_exact(4 * k);
        for quad in &mut quads {
            let (x0, x1, x2, x3) = (&quad[i..k], &quad[k + i..2 * k], &quad[2 * k + i..3 * k], &quad[3 * k + i..]);
            let (a0, a1, a2, a3) = (x0[0], x1[0], x2[0], x3[0]);
            if a0 == 0.0 && a1 == 0.0 && a2 == 0.0 && a3 == 0.0 {
                continue;
            }
            for ((((s, &p0), &p1), &p2), &p3) in s.iter_mut().zip(x0).zip(x1).zip(x2).zip(x3) {
                *s += a0 * p0 + a1 * p1 + a2 * p2 + a3 * p3;
            }
        }
        for x in quads.remainder().chunks_exact(k) {
            axpy(s, x[i], &x[i..]);
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GptqOptions {
    /// Added to diag(H) as a fraction of its mean: keeps the Cholesky defined when calibration rows are few or
    /// inputs are collinear, at the cost of slightly less error compensation.
    pub damp: f64,
    /// Quantize columns in descending diag(H) (the inputs with the largest activations first), so their errors can
    /// still be compensated by the many columns after them. With Groups the scales are then fixed up front
    /// ("static groups") so storage stays plain group-wise along k. Off by default as in the reference; with a few
    /// outlier input channels it cut the remaining output error by more than half in the tests here.
    pub act_order: bool,
    /// Lazy-batch width: errors inside a block of columns are applied at once, the rest of the row once per block.
    pub block: usize,
}

impl Default for GptqOptions {
    fn default() -> Self {
        Self { damp: 0.01, act_order: false, block: 128 }
    }
}

/// GPTQ: columns quantized one at a time (in activation order when asked), each one's rounding error spread onto
/// the not-yet-quantized columns through the Cholesky factor of H⁻¹, in blocks of `block` columns.
///
/// Scales: PerChannel and Groups with act_order ("static groups") take them from the original W up front; Groups
/// without act_order take each group's scales from the error-updated weights when its first column is reached (as
/// the reference), for which the block width is rounded to a multiple of the group so a group never straddles a
/// lazy update. Inputs that are never active (H[i][i] == 0) get W[:, i] = 0 before any scale is computed.
pub fn gptq(w: &[f32], n: usize, k: usize, h: &Hessian, grid: &Grid, opts: &GptqOptions, round_scale: &dyn Fn(f32) -> f32) -> Result<Quantized, String> {
    if w.len() != n * k {
        return Err(format!("weight has {} values, {n}x{k} needs {}", w.len(), n * k));
    }
    if h.k != k {
        return Err(format!("the Hessian is for k = {}, the weight has k = {k}", h.k));
    }
    if h.rows == 0 {
        return Err("the Hessian has no calibration rows".to_string());
    }
    grid.check(k)?;
    if !(opts.damp >= 0.0 && opts.damp.is_finite()) || opts.block == 0 {
        return Err(format!("{opts:?}: damp must be finite and >= 0, block positive"));
    }
    if let Some(p) = w.iter().position(|v| !v.is_finite()) {
        return Err(format!("weight [{}, {}] is {}", p / k, p % k, w[p]));
    }
    let mut hm = h.matrix();
    if let Some(p) = hm.iter().position(|v| !v.is_finite()) {
        return Err(format!("Hessian entry ({}, {}) is {} (non-finite calibration inputs?)", p / k, p % k, hm[p]));
    }
    let mut wd: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect(); // n x k, original order
    for i in 0..k {
        if hm[i * k + i] == 0.0 {
            // Never active: the weight cannot matter, and a zero pivot would stop the Cholesky.
            hm[i * k + i] = 1.0;
            for r in 0..n {
                wd[r * k + i] = 0.0;
            }
        }
    }

    let (g, groups, max_q) = (grid.group_len(k), grid.groups(k), grid.max_q());
    let dynamic = matches!(grid, Grid::Groups { .. }) && !opts.act_order;
    let mut scale = vec![0f32; n * groups];
    if !dynamic {
        for (wg, s) in wd.chunks_exact(g).zip(&mut scale) {
            *s = scale_of(wg.iter().fold(0f64, |a, v| a.max(v.abs())) as f32, max_q, round_scale);
        }
    }

    let mut perm: Vec<usize> = (0..k).collect();
    if opts.act_order {
        perm.sort_by(|&a, &b| hm[b * k + b].total_cmp(&hm[a * k + a]));
    }
    let damp = opts.damp * (0..k).map(|i| hm[i * k + i]).sum::<f64>() / k as f64;
    for i in 0..k {
        hm[i * k + i] += damp;
    }
    let u = inverse_cholesky_upper(&hm, k, &perm)?;

    let mut wp = vec![0f64; n * k]; // n x k, columns in processing order
    for (dst, src) in wp.chunks_exact_mut(k).zip(wd.chunks_exact(k)) {
        for (d, &c) in dst.iter_mut().zip(&perm) {
            *d = src[c];
        }
    }
    let bw = if dynamic { (opts.block / g).max(1) * g } else { opts.block };
    let ctx = Ctx { k, g, dynamic, bw, max_q, u: &u, perm: &perm };
    let mut q = vec![0i8; n * k];
    quantize_rows(&mut wp, &mut q, &mut scale, &ctx, round_scale);
    Ok(Quantized { q, scale })
}

/// What every row of one gptq call shares.
struct Ctx<'a> {
    k: usize,
    /// Inputs per scale (k for PerChannel).
    g: usize,
    /// Scales from the current weights at each group's first column (else fixed up front).
    dynamic: bool,
    /// Lazy-batch width in columns.
    bw: usize,
    max_q: i32,
    /// Upper Cholesky factor of H⁻¹ in processing order, k x k.
    u: &'a [f64],
    /// Processing position -> original column.
    perm: &'a [usize],
}

/// Rows of a tile share each H⁻¹ row loaded in the lazy update.
const TILE_ROWS: usize = 8;

/// GPTQ proper for the rows of wp (m x k, processing order; consumed), writing q (m x k, original order) and, when
/// dynamic, scale (m x groups; otherwise read).
fn quantize_rows(wp: &mut [f64], q: &mut [i8], scale: &mut [f32], c: &Ctx, round_scale: &dyn Fn(f32) -> f32) {
    let (k, bw, u) = (c.k, c.bw, c.u);
    let groups = k / c.g;
    let mut err = vec![0f64; TILE_ROWS * bw]; // tile rows x block: each column's error / U[j][j]
    let tiles = wp.chunks_mut(TILE_ROWS * k).zip(q.chunks_mut(TILE_ROWS * k)).zip(scale.chunks_mut(TILE_ROWS * groups));
    for ((wt, qt), st) in tiles {
        let m = wt.len() / k;
        for i1 in (0..k).step_by(bw) {
            let i2 = (i1 + bw).min(k);
            for r in 0..m {
                let (wr, qr) = (&mut wt[r * k..(r + 1) * k], &mut qt[r * k..(r + 1) * k]);
                let sr = &mut st[r * groups..(r + 1) * groups];
                let er = &mut err[r * bw..];
                for j in i1..i2 {
                    let col = c.perm[j];
                    if c.dynamic && j % c.g == 0 {
                        let amax = wr[j..j + c.g].iter().fold(0f64, |a, v| a.max(v.abs()));
                        sr[j / c.g] = scale_of(amax as f32, c.max_q, round_scale);
                    }
                    let s = f64::from(sr[col / c.g]);
                    let x = wr[j];
                    let qv = round_q(x, s, f64::from(c.max_q));
                    qr[col] = qv as i8;
                    let urow = &u[j * k..(j + 1) * k];
                    let e = (x - qv * s) / urow[j];
                    er[j - i1] = e;
                    axpy(&mut wr[j + 1..i2], -e, &urow[j + 1..i2]);
                }
            }
            if i2 == k {
                continue;
            }
            // Lazy update of the columns after the block: W[:, i2..] -= Err · U[i1..i2, i2..], four U rows per
            // pass over each W row.
            let mut j = i1;
            while j < i2 {
                if j + 4 <= i2 {
                    let ur = |t: usize| &u[(j + t) * k + i2..(j + t + 1) * k];
                    let (u0, u1, u2, u3) = (ur(0), ur(1), ur(2), ur(3));
                    for r in 0..m {
                        let e = &err[r * bw + j - i1..r * bw + j - i1 + 4];
                        let (e0, e1, e2, e3) = (e[0], e[1], e[2], e[3]);
                        let wr = &mut wt[r * k + i2..(r + 1) * k];
                        for ((((w, &v0), &v1), &v2), &v3) in wr.iter_mut().zip(u0).zip(u1).zip(u2).zip(u3) {
                            *w -= e0 * v0 + e1 * v1 + e2 * v2 + e3 * v3;
                        }
                    }
                    j += 4;
                } else {
                    for r in 0..m {
                        axpy(&mut wt[r * k + i2..(r + 1) * k], -err[r * bw + j - i1], &u[j * k + i2..(j + 1) * k]);
                    }
                    j += 1;
                }
            }
        }
    }
}

/// Upper U with (H[perm][perm])⁻¹ = UᵀU, i.e. the reference's chol(chol_inverse(chol(H)), upper), in one Cholesky
/// and one triangular inverse: with J the reversal, J Hp J = L Lᵀ gives Hp = V Vᵀ for the upper V = J L J, so
/// Hp⁻¹ = V⁻ᵀ V⁻¹ and U = V⁻¹ = J L⁻¹ J (unique, as its diagonal is positive).
fn inverse_cholesky_upper(h: &[f64], k: usize, perm: &[usize]) -> Result<Vec<f64>, String> {
    let rev = |a: usize| perm[k - 1 - a]; // position in J Hp J -> original column
    let mut l = vec![0f64; k * k];
    for a in 0..k {
        for b in 0..=a {
            l[a * k + b] = h[rev(a) * k + rev(b)];
        }
    }
    cholesky(&mut l, k).map_err(|(a, pivot)| {
        format!(
            "the damped Hessian is not positive definite: Cholesky pivot {pivot:e} at input column {} \
             (diagonal {:e}); raise damp or add calibration rows",
            rev(a),
            h[rev(a) * k + rev(a)]
        )
    })?;
    let y = lower_inverse_transposed(&l, k);
    let mut u = vec![0f64; k * k];
    for i in 0..k {
        for j in i..k {
            u[i * k + j] = y[(k - 1 - j) * k + (k - 1 - i)]; // (J L⁻¹ J)[i][j] = L⁻¹[k-1-i][k-1-j]
        }
    }
    Ok(u)
}

/// A pivot below this fraction of its diagonal is singular to working precision: GPTQ would divide by noise.
const PIVOT_RTOL: f64 = 1e-12;

/// Rows the factorizations handle together, so each row of the triangle above is read from memory once per tile
/// rather than once per row (the triangle is 9 MB at k = 1536).
const FACTOR_TILE: usize = 4;

/// In-place lower Cholesky of the lower triangle of a (k x k, row-major), row by row so every inner product runs
/// over two contiguous row prefixes. Err((row, pivot)) when a pivot is not safely positive.
fn cholesky(a: &mut [f64], k: usize) -> Result<(), (usize, f64)> {
    for i0 in (0..k).step_by(FACTOR_TILE) {
        let t = FACTOR_TILE.min(k - i0);
        let (above, rest) = a.split_at_mut(i0 * k);
        let tile = &mut rest[..t * k];
        for j in 0..i0 {
            let rj = &above[j * k..j * k + j + 1];
            let d = tile_dots(t, |r| &tile[r * k..r * k + j], &rj[..j]);
            for (r, d) in d.iter().enumerate().take(t) {
                tile[r * k + j] = (tile[r * k + j] - d) / rj[j];
            }
        }
        for r in 0..t {
            let i = i0 + r;
            for j in i0..i {
                let (rj, ri) = (&tile[(j - i0) * k..(j - i0) * k + j + 1], &tile[r * k..r * k + j]);
                tile[r * k + j] = (tile[r * k + j] - dot(ri, &rj[..j])) / rj[j];
            }
            let ri = &tile[r * k..r * k + i];
            let pivot = tile[r * k + i] - dot(ri, ri);
            if pivot.is_nan() || pivot <= PIVOT_RTOL * tile[r * k + i] || pivot.is_infinite() {
                return Err((i, pivot));
            }
            tile[r * k + i] = pivot.sqrt();
        }
    }
    Ok(())
}

/// Y = L⁻ᵀ (upper) for lower L (k x k): Y[j][i] = -(Σ_{j<=p<i} L[i][p] Y[j][p]) / L[i][i], each sum a dot of two
/// contiguous row segments; a tile of rows of L shares each row of Y.
fn lower_inverse_transposed(l: &[f64], k: usize) -> Vec<f64> {
    let mut y = vec![0f64; k * k];
    for i0 in (0..k).step_by(FACTOR_TILE) {
        let t = FACTOR_TILE.min(k - i0);
        let li = |r: usize| &l[(i0 + r) * k..(i0 + r + 1) * k];
        for j in 0..i0 {
            let yj = &mut y[j * k..(j + 1) * k];
            let d = tile_dots(t, |r| &li(r)[j..i0], &yj[j..i0]);
            for (r, d) in d.iter().enumerate().take(t) {
                let i = i0 + r;
                yj[i] = -(d + dot(&li(r)[i0..i], &yj[i0..i])) / li(r)[i];
            }
        }
        for j in i0..i0 + t {
            let yj = &mut y[j * k..(j + 1) * k];
            yj[j] = 1.0 / l[j * k + j];
            for i in j + 1..i0 + t {
                let lr = &l[i * k..(i + 1) * k];
                yj[i] = -dot(&lr[j..i], &yj[j..i]) / lr[i];
            }
        }
    }
    y
}

/// dot(a(r), b) for the t <= FACTOR_TILE rows of a tile (zeros past t), sharing each load of b when the tile is full.
fn tile_dots<'a>(t: usize, a: impl Fn(usize) -> &'a [f64], b: &[f64]) -> [f64; FACTOR_TILE] {
    if t == FACTOR_TILE {
        dots(std::array::from_fn(&a), b)
    } else {
        std::array::from_fn(|r| if r < t { dot(a(r), b) } else { 0.0 })
    }
}

/// ||X Wᵀ - X Ŵᵀ||² / rows computed from H (= tr((W-Ŵ) H (W-Ŵ)ᵀ) / 2): the output error a layer's quantization causes.
/// NaN for a Hessian without rows (no mean to take).
pub fn output_error(w: &[f32], w_hat: &[f32], n: usize, k: usize, h: &Hessian) -> f64 {
    assert!(w.len() == n * k && w_hat.len() == n * k, "output_error: both weights must be {n}x{k}");
    assert_eq!(h.k, k, "output_error: the Hessian is for k = {}, the weight has k = {k}", h.k);
    if h.rows == 0 {
        return f64::NAN;
    }
    let hm = h.matrix();
    let mut d = vec![0f64; k];
    let mut total = 0.0;
    for (w, wh) in w.chunks_exact(k).zip(w_hat.chunks_exact(k)) {
        for ((d, &a), &b) in d.iter_mut().zip(w).zip(wh) {
            *d = f64::from(a) - f64::from(b);
        }
        total += d.iter().zip(hm.chunks_exact(k)).map(|(&di, hrow)| di * dot(hrow, &d)).sum::<f64>();
    }
    total / 2.0
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    dots([a], b)[0]
}

/// N dot products against one shared b, with four independent sums each: several multiply-adds stay in flight (the
/// compiler does not reassociate f64 additions on its own) and each load of b serves N rows.
fn dots<const N: usize>(a: [&[f64]; N], b: &[f64]) -> [f64; N] {
    let body = b.len() / 4 * 4;
    let mut s = [[0f64; 4]; N];
    for c in (0..body).step_by(4) {
        let bc = &b[c..c + 4];
        for (s, a) in s.iter_mut().zip(&a) {
            let ac = &a[c..c + 4];
            for l in 0..4 {
                s[l] += ac[l] * bc[l];
            }
        }
    }
    std::array::from_fn(|t| {
        let tail: f64 = (body..b.len()).map(|c| a[t][c] * b[c]).sum();
        (s[t][0] + s[t][1]) + (s[t][2] + s[t][3]) + tail
    })
}

/// y += a x.
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Threads worth spawning for `work` multiply-adds: about a million per thread pays for the spawn.
fn threads_for(work: usize) -> usize {
    let avail = thread::available_parallelism().map_or(1, |t| t.get());
    avail.min(work >> 20).max(1)
}

#[cfg(test)]
mod tests;
