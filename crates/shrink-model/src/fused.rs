//! Fused CPU ops with hand-written backward passes. candle builds LayerNorm, softmax and dropout from a chain of
//! elementwise ops, each allocating a full tensor and reading memory again, forward and backward; these do one pass
//! per direction, parallel over rows. The basic-op versions in `ops` are their references (tests compare them).

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use shrink_kernels::gemm::{matmul, matmul_serial, Mat};
use shrink_kernels::activation;
use shrink_kernels::qgemm::quantize_static;

use crate::ops::DropMask;
use rayon::prelude::*;

/// Rows per parallel task: enough work to amortise scheduling, small enough to balance two to many cores.
const ROWS_PER_TASK: usize = 64;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => bail!("fused op: input must be contiguous"),
        _ => bail!("fused op: input must be f32"),
    }
}

/// A zeroed output buffer, zeroed by all threads: a serial memset of every activation was a tenth of a training
/// step on two threads.
fn par_zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(slice(c, l)?),
        _ => bail!("fused op: CPU tensors only"),
    }
}

/// Post-norm residual block end in one node: LayerNorm(dropout(y) + residual) over the last dimension.
/// y, residual: (..., C); w, b: (C,). Backward recomputes the sum and regenerates the dropout mask.
pub fn residual_layer_norm(y: &Tensor, residual: &Tensor, w: &Tensor, b: &Tensor, eps: f64, drop: Option<DropMask>) -> Result<Tensor> {
    let wb = Tensor::stack(&[w, b], 0)?; // (2, C): a custom op takes at most three inputs
    y.contiguous()?.apply_op3(&residual.contiguous()?, &wb, ResidualLayerNormOp { eps: eps as f32, drop })
}

struct ResidualLayerNormOp {
    eps: f32,
    drop: Option<DropMask>,
}

impl ResidualLayerNormOp {
    /// Row `row` of z = dropout(y) + residual into `z`; returns its mean and 1/std.
    fn sum_row(&self, row: usize, y: &[f32], r: &[f32], z: &mut [f32]) -> (f32, f32) {
        let c = z.len();
        match &self.drop {
            Some(m) => {
                m.fill(row * c, z);
                z.iter_mut().zip(y).zip(r).for_each(|((z, &y), &r)| *z = y * *z + r);
            }
            None => z.iter_mut().zip(y).zip(r).for_each(|((z, &y), &r)| *z = y + r),
        }
        let n = c as f32;
        let mean = activation::lanes_sum(z) / n;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp3 for ResidualLayerNormOp {
    fn name(&self) -> &'static str {
        "fused-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        sy: &CpuStorage,
        ly: &Layout,
        sr: &CpuStorage,
        lr: &Layout,
        swb: &CpuStorage,
        lwb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, r, wb) = (slice(sy, ly)?, slice(sr, lr)?, slice(swb, lwb)?);
        let c = wb.len() / 2;
        if y.len() != r.len() || y.len() % c != 0 {
            bail!("residual layer norm: shapes {:?}, {:?} and width {c} do not fit", ly.shape(), lr.shape());
        }
        let (w, b) = wb.split_at(c);
        let mut out = par_zeros(y.len());
        out.par_chunks_mut(c * ROWS_PER_TASK).enumerate().for_each(|(task, ob)| {
            for (k, or) in ob.chunks_mut(c).enumerate() {
                let row = task * ROWS_PER_TASK + k;
                let (mean, rstd) = self.sum_row(row, &y[row * c..][..c], &r[row * c..][..c], or);
                for i in 0..c {
                    or[i] = (or[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(out), ly.shape().clone()))
    }

    fn bwd(&self, y: &Tensor, r: &Tensor, wb: &Tensor, _out: &Tensor, dout: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = wb.elem_count() / 2;
        let (dz, dwb) = with_data(y, |y| {
            with_data(r, |r| {
                with_data(wb, |wb| {
                    with_data(dout, |dout| {
                        let w = &wb[..c];
                        let mut dz = par_zeros(y.len());
                        let dwb = dz
                            .par_chunks_mut(c * ROWS_PER_TASK)
                            .enumerate()
                            .fold(
                                || vec![0f32; 2 * c],
                                |mut dwb, (task, db)| {
                                    let mut z = vec![0f32; c];
                                    for (k, dzr) in db.chunks_mut(c).enumerate() {
                                        let row = task * ROWS_PER_TASK + k;
                                        let (mean, rstd) = self.sum_row(row, &y[row * c..][..c], &r[row * c..][..c], &mut z);
                                        let g_out = &dout[row * c..][..c];
                                        // dz = rstd * (g - mean(g) - zhat * mean(g * zhat)), g = dout * w
                                        let (mut sum_g, mut sum_gz) = (0f32, 0f32);
                                        for i in 0..c {
                                            let zhat = (z[i] - mean) * rstd;
                                            let g = g_out[i] * w[i];
                                            sum_g += g;
                                            sum_gz += g * zhat;
                                            dwb[i] += g_out[i] * zhat;
                                            dwb[c + i] += g_out[i];
                                        }
                                        let (mg, mgz) = (sum_g / c as f32, sum_gz / c as f32);
                                        for i in 0..c {
                                            let zhat = (z[i] - mean) * rstd;
                                            dzr[i] = rstd * (g_out[i] * w[i] - mg - zhat * mgz);
                                        }
                                    }
                                    dwb
                                },
                            )
                            .reduce(|| vec![0f32; 2 * c], |mut a, b| {
                                a.iter_mut().zip(b).for_each(|(u, v)| *u += v);
                                a
                            });
                        Ok((dz, dwb))
                    })
                })
            })
        })?;
        // d residual = dz; d y = dz times the dropout mask.
        let dy = match &self.drop {
            Some(m) => {
                let mut dy = dz.clone();
                dy.par_chunks_mut(c * ROWS_PER_TASK).enumerate().for_each(|(k, ch)| m.apply(k * c * ROWS_PER_TASK, ch));
                dy
            }
            None => dz.clone(),
        };
        let dev = y.device();
        Ok((
            Some(Tensor::from_vec(dy, y.shape(), dev)?),
            Some(Tensor::from_vec(dz, r.shape(), dev)?),
            Some(Tensor::from_vec(dwb, (2, c), dev)?),
        ))
    }
}

/// Scaled dot-product attention with an additive key mask and dropout on the probabilities, in one node:
/// out = dropout(softmax(q k^T * scale + bias)) v, one (batch, head) at a time so the T x T scores live only in a
/// per-thread scratch buffer. Backward recomputes them (as flash attention does) and regenerates the mask.
/// q, k, v: (B, H, T, D), bias: (B, T) -> (B, H, T, D)
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64, drop: Option<DropMask>, band: Option<Band>) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    if t == 0 || d == 0 {
        bail!("attention: q {:?} has no tokens or no head width", q.dims());
    }
    if bias.dims() != [b, t] {
        bail!("attention: bias {:?} does not match (B, T) = ({b}, {t})", bias.dims());
    }
    let bias = bias.flatten_all()?.to_vec1::<f32>()?;
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, AttentionOp { bias, heads, scale: scale as f32, drop, band })
}

/// Sliding-window attention's mask: query i sees key j when |i - j| <= `window`, or either is one of the first
/// `global` tokens.
#[derive(Clone, Copy, Debug)]
pub struct Band {
    pub window: usize,
    pub global: usize,
}

impl Band {
    /// Sets the scores of keys row i may not see so that they get the padding mask's weight (exp underflows to 0),
    /// before the softmax that scales them by `scale`. Their probabilities are then 0, so no gradient flows there.
    fn mask_row(&self, i: usize, scores: &mut [f32], scale: f32) {
        if i < self.global {
            return;
        }
        let masked = crate::embeddings::MASKED / scale;
        let (lo, hi) = (i.saturating_sub(self.window), (i + self.window + 1).min(scores.len()));
        scores[self.global.min(lo)..lo].fill(masked);
        scores[hi..].fill(masked);
    }
}

struct AttentionOp {
    bias: Vec<f32>, // (B, T)
    heads: usize,
    scale: f32,
    drop: Option<DropMask>,
    band: Option<Band>,
}

impl AttentionOp {
    /// Probabilities of head-slice `bh` (row-major T x T) into `p`, before dropout; `scores` is T x T scratch.
    fn probs(&self, bh: usize, q: &[f32], k: &[f32], t: usize, scores: &mut [f32], p: &mut [f32]) {
        let d = q.len() / t;
        matmul_serial(scores, Mat::row_major(q, t, d), Mat::row_major(k, t, d).t(), false); // (T, T)
        let bias = &self.bias[(bh / self.heads) * t..][..t];
        for (i, (s, row)) in scores.chunks_mut(t).zip(p.chunks_mut(t)).enumerate() {
            if let Some(band) = &self.band {
                band.mask_row(i, s, self.scale);
            }
            activation::softmax_row(s, bias, self.scale, row);
        }
    }

    /// Applies the dropout mask of head-slice `bh` to a T x T buffer in place.
    fn apply_mask(&self, bh: usize, t: usize, buf: &mut [f32]) {
        if let Some(m) = &self.drop {
            m.apply(bh * t * t, buf);
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(sq, lq)?, slice(sk, lk)?, slice(sv, lv)?);
        let (_, _, t, d) = lq.shape().dims4()?;
        if lk.shape() != lq.shape() || lv.shape() != lq.shape() {
            bail!("attention: q {:?}, k {:?}, v {:?} differ", lq.shape(), lk.shape(), lv.shape());
        }
        let mut out = par_zeros(q.len());
        out.par_chunks_mut(t * d).enumerate().for_each_init(
            || (vec![0f32; t * t], vec![0f32; t * t]),
            |(scores, p), (bh, o)| {
                let span = bh * t * d..(bh + 1) * t * d;
                self.probs(bh, &q[span.clone()], &k[span.clone()], t, scores, p);
                self.apply_mask(bh, t, p);
                matmul_serial(o, Mat::row_major(p, t, t), Mat::row_major(&v[span], t, d), false); // (T, D)
            },
        );
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _out: &Tensor, dout: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, t, d) = q.dims4()?;
        let (dq, dk, dv) = with_data(q, |q| {
            with_data(k, |k| {
                with_data(v, |v| {
                    with_data(dout, |dout| {
                        let (mut dq, mut dk, mut dv) = (par_zeros(q.len()), par_zeros(q.len()), par_zeros(q.len()));
                        dq.par_chunks_mut(t * d)
                            .zip(dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d)))
                            .enumerate()
                            .for_each_init(
                                || (vec![0f32; t * t], vec![0f32; t * t], vec![0f32; t * t], vec![0f32; t]),
                                |(p, pd, dp, tmp), (bh, (dq, (dk, dv)))| {
                                    let span = bh * t * d..(bh + 1) * t * d;
                                    let (qs, ks, vs, gs) = (&q[span.clone()], &k[span.clone()], &v[span.clone()], &dout[span]);
                                    self.probs(bh, qs, ks, t, dp, p); // dp: scratch until dS lands in it
                                    pd.copy_from_slice(p);
                                    self.apply_mask(bh, t, pd);
                                    let g = Mat::row_major(gs, t, d);
                                    matmul_serial(dv, Mat::row_major(pd, t, t).t(), g, false); // dV = Pd^T dO
                                    matmul_serial(pd, g, Mat::row_major(vs, t, d).t(), false); // dPd = dO V^T
                                    self.apply_mask(bh, t, pd); // through dropout
                                    for ((prow, grow), dsrow) in p.chunks(t).zip(pd.chunks(t)).zip(dp.chunks_mut(t)) {
                                        activation::softmax_row_backward(prow, grow, self.scale, tmp, dsrow); // dS
                                    }
                                    let ds = Mat::row_major(dp, t, t);
                                    matmul_serial(dq, ds, Mat::row_major(ks, t, d), false); // dQ = dS K
                                    matmul_serial(dk, ds.t(), Mat::row_major(qs, t, d), false); // dK = dS^T Q
                                },
                            );
                        Ok((dq, dk, dv))
                    })
                })
            })
        })?;
        let (dev, shape) = (q.device(), q.shape());
        Ok((
            Some(Tensor::from_vec(dq, shape, dev)?),
            Some(Tensor::from_vec(dk, shape, dev)?),
            Some(Tensor::from_vec(dv, shape, dev)?),
        ))
    }
}

/// y = x W^T + b in one node: one GEMM with the bias as its starting value; backward is two GEMMs and a column
/// sum. x: (..., I), w: (O, I), b: (O,) -> (..., O)
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, b, LinearOp)
}

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(sx, lx)?, slice(sw, lw)?, slice(sb, lb)?);
        let (o, i) = lw.shape().dims2()?;
        if lx.shape().dims().last() != Some(&i) || b.len() != o {
            bail!("linear: x {:?}, w {:?}, b {:?} do not fit", lx.shape(), lw.shape(), lb.shape());
        }
        let n = x.len() / i;
        let mut y = par_zeros(n * o); // (N, O), starts as bias rows
        y.chunks_mut(o).for_each(|row| row.copy_from_slice(b));
        matmul(&mut y, Mat::row_major(x, n, i), Mat::row_major(w, o, i).t(), true);
        let mut dims = lx.shape().dims().to_vec();
        *dims.last_mut().expect("x has a last dim") = o;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (o, i) = w.dims2()?;
        let n = x.elem_count() / i;
        let (dx, dw, db) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(dy, |dy| {
                    let (dyv, xv) = (Mat::row_major(dy, n, o), Mat::row_major(x, n, i));
                    let mut dx = par_zeros(n * i);
                    matmul(&mut dx, dyv, Mat::row_major(w, o, i), false); // (N, O) (O, I)
                    let mut dw = par_zeros(o * i);
                    matmul(&mut dw, dyv.t(), xv, false); // (O, N) (N, I)
                    let mut db = vec![0f32; o];
                    for row in dy.chunks(o) {
                        db.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                    }
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, (o, i), dev)?),
            Some(Tensor::from_vec(db, b.shape(), dev)?),
        ))
    }
}

/// Exact (erf) GELU, elementwise.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluOp)
}

/// Elements per parallel task for elementwise ops.
const ELEMS_PER_TASK: usize = 1 << 14;

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = par_zeros(x.len());
        y.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(yb, xb)| {
            activation::gelu(xb, yb);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_data(x, |x| {
            with_data(dy, |dy| {
                let mut dx = par_zeros(x.len());
                dx.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK).zip(dy.par_chunks(ELEMS_PER_TASK))).for_each(
                    |(db, (xb, gb))| activation::gelu_backward(xb, gb, db),
                );
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Fake quantization of activations on the runtime's static u8 grid (`int8-static`): the value scale·(q − zero)
/// with q the u8 the runtime's quantizer stores for x (`qgemm::quantize_static`). Backward is the straight-through
/// estimator with the clip mask: dy where x lies inside the grid, 0 where it clips (as PyTorch's FakeQuantize).
/// `seen`, if given, is widened to the (min, max) of x: the batch range `shrink qat`'s moving average folds in.
pub fn fake_quant_u8(x: &Tensor, scale: f32, zero: i32, seen: Option<&std::sync::Mutex<Option<(f32, f32)>>>) -> Result<Tensor> {
    if !(scale > 0.0 && (0..=255).contains(&zero)) {
        bail!("fake_quant_u8: scale {scale} must be positive and zero {zero} in 0..=255");
    }
    let x = x.contiguous()?;
    if let Some(seen) = seen {
        let (lo, hi) = with_data(&x, |v| {
            Ok(v.par_chunks(ELEMS_PER_TASK)
                .map(|c| c.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v))))
                .reduce(|| (f32::INFINITY, f32::NEG_INFINITY), |(a, b), (c, d)| (a.min(c), b.max(d))))
        })?;
        let mut s = seen.lock().map_err(|_| candle_core::Error::Msg("fake_quant_u8: range lock poisoned".into()))?;
        *s = Some(s.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    x.apply_op1(FakeQuantOp { scale, zero })
}

struct FakeQuantOp {
    scale: f32,
    zero: i32,
}

impl CustomOp1 for FakeQuantOp {
    fn name(&self) -> &'static str {
        "fake-quant-u8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let (inv, scale, zero) = (1.0 / self.scale, self.scale, self.zero);
        let mut y = par_zeros(x.len());
        y.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(yb, xb)| {
            for (y, &x) in yb.iter_mut().zip(xb) {
                *y = scale * (i32::from(quantize_static(x, inv, zero).0) - zero) as f32;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let inv = 1.0 / self.scale;
        let dx = with_data(x, |x| {
            with_data(dy, |dy| {
                let mut dx = par_zeros(x.len());
                dx.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK).zip(dy.par_chunks(ELEMS_PER_TASK))).for_each(
                    |(db, (xb, gb))| {
                        for ((d, &x), &g) in db.iter_mut().zip(xb).zip(gb) {
                            *d = if quantize_static(x, inv, self.zero).1 { g } else { 0.0 };
                        }
                    },
                );
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops;
    use candle_core::{Device, Var};

    /// Fused vs basic-op reference, f32 both, different summation order only.
    const FUSED_TOL: f32 = 1e-5;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn residual_layer_norm_matches_reference_forward_and_backward() {
        use rand::SeedableRng;
        let dev = Device::Cpu;
        // 131 rows (not a multiple of the task size), odd width.
        let var = |mean: f32, std: f32, shape: &[usize]| Var::from_tensor(&Tensor::randn(mean, std, shape, &dev).unwrap()).unwrap();
        let (y, r) = (var(0.5, 2.0, &[131, 37]), var(-0.2, 1.0, &[131, 37]));
        let (w, b) = (var(1.0, 0.3, &[37]), var(0.0, 0.3, &[37]));
        let up = Tensor::randn(0f32, 1.0, (131, 37), &dev).unwrap(); // random upstream gradient
        for drop in [None, crate::ops::drop_mask(0.2, Some(&mut rand::rngs::StdRng::seed_from_u64(3)))] {
            let keep = match &drop {
                Some(m) => Tensor::from_vec((0..131 * 37).map(|i| m.factor(i)).collect::<Vec<_>>(), (131, 37), &dev).unwrap(),
                None => Tensor::ones((131, 37), candle_core::DType::F32, &dev).unwrap(),
            };
            let fused = residual_layer_norm(&y, &r, &w, &b, 1e-12, drop).unwrap();
            let z = (y.as_tensor() * &keep).unwrap().add(&r).unwrap();
            let reference = ops::layer_norm(&z, &w, &b, 1e-12).unwrap();
            assert!(max_diff(&fused, &reference) < FUSED_TOL);
            let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("y", &y), ("r", &r), ("w", &w), ("b", &b)] {
                let d = max_diff(gf.get(v).unwrap(), gr.get(v).unwrap());
                assert!(d < FUSED_TOL * 10.0, "d{name} (dropout {}): {d}", drop.is_some());
            }
        }
    }

    #[test]
    fn linear_matches_matmul_plus_bias_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 37), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.2, (11, 37), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.2, 11, &dev).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, (3, 5, 11), &dev).unwrap();
        let fused = linear(&x, &w, &b).unwrap();
        let reference = x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        assert!(max_diff(&fused, &reference) < FUSED_TOL);
        let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let d = max_diff(gf.get(v).unwrap(), gr.get(v).unwrap());
            assert!(d < FUSED_TOL * 10.0, "d{name}: {d}");
        }
    }

    #[test]
    fn gelu_matches_candle_erf_gelu_forward_and_backward() {
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (5, 1001), &Device::Cpu).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, (5, 1001), &Device::Cpu).unwrap();
        let (fused, reference) = (gelu(&x).unwrap(), x.as_tensor().gelu_erf().unwrap());
        assert!(max_diff(&fused, &reference) < FUSED_TOL);
        let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(gf.get(&x).unwrap(), gr.get(&x).unwrap()) < FUSED_TOL * 10.0);
    }

    #[test]
    fn fake_quant_matches_reference_forward_and_backward_and_records_the_range() {
        // Wide enough that both ends clip on the grid of [-2, 3]; fixed data, so a failure reproduces.
        let data = |seed| shrink_kernels::testdata::uniform(7 * 301, seed);
        let xv: Vec<f32> = data(31).iter().map(|v| 0.2 + 3.5 * v).collect(); // (7, 301) in [-3.3, 3.7)
        let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), (7, 301), &Device::Cpu).unwrap()).unwrap();
        let up = Tensor::from_vec(data(32), (7, 301), &Device::Cpu).unwrap();
        let (scale, zero) = (5.0 / 255.0, 102);
        let seen = std::sync::Mutex::new(Some((-0.5, 0.5)));
        let fused = fake_quant_u8(&x, scale, zero, Some(&seen)).unwrap();
        let reference = ops::fake_quant_u8(&x, scale, zero).unwrap();
        // Equal, except that a value within float error of a rounding tie may land one grid step off: the
        // reference rounds half away from zero after two roundings, the runtime's quantizer half to even.
        let (f, r) = (fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(), reference.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        for ((&f, &r), &x) in f.iter().zip(&r).zip(&xv) {
            let v = f64::from(x) / f64::from(scale) + f64::from(zero);
            let tie = (v - v.floor() - 0.5).abs() < 1e-4;
            assert!((f - r).abs() < FUSED_TOL || (tie && (f - r).abs() <= scale * 1.001), "x {x}: {f} vs {r}");
        }
        let xs = x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (lo, hi) = xs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!(*seen.lock().unwrap(), Some((lo, hi)));
        // On the grid: every value is scale·(integer − zero) within [-zero, 255 - zero] steps.
        for v in fused.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            let q = v / scale + zero as f32;
            assert!((q - q.round()).abs() < 1e-3 && (-1e-3..=255.001).contains(&q), "{v} is off the grid");
        }
        let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gr) = (gf.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), gr.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(gf, gr);
        let clipped = gf.iter().filter(|&&g| g == 0.0).count();
        assert!(clipped > 0 && clipped < gf.len() / 2, "{clipped} of {} clipped", gf.len());
        assert!(fake_quant_u8(&x, 0.0, 0, None).is_err() && fake_quant_u8(&x, 1.0, 256, None).is_err());
    }

    #[test]
    fn attention_matches_reference_forward_and_backward() {
        use rand::SeedableRng;
        let dev = Device::Cpu;
        let (b, h, t, d) = (3, 2, 7, 5);
        let var = || Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap()).unwrap();
        let (q, k, v) = (var(), var(), var());
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], &dev).unwrap();
        let bias = crate::embeddings::mask_bias(&mask).unwrap(); // (B, T)
        let bias4 = bias.reshape((b, 1, 1, t)).unwrap();
        let up = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap();
        let scale = 0.4;
        for drop in [None, crate::ops::drop_mask(0.3, Some(&mut rand::rngs::StdRng::seed_from_u64(1)))] {
            let keep = match &drop {
                Some(m) => Tensor::from_vec((0..b * h * t * t).map(|i| m.factor(i)).collect::<Vec<_>>(), (b, h, t, t), &dev).unwrap(),
                None => Tensor::ones((b, h, t, t), candle_core::DType::F32, &dev).unwrap(),
            };
            for band in [None, Some(Band { window: 2, global: 0 }), Some(Band { window: 1, global: 1 })] {
                let fused = attention(&q, &k, &v, &bias, scale, drop.clone(), band).unwrap();
                // The band as an additive (T, T) mask on the plain-op path.
                let allowed = |i: usize, j: usize| band.is_none_or(|b| i.abs_diff(j) <= b.window || i < b.global || j < b.global);
                let band_bias: Vec<f32> = (0..t * t).map(|x| if allowed(x / t, x % t) { 0.0 } else { crate::embeddings::MASKED }).collect();
                let band_bias = Tensor::from_vec(band_bias, (1, 1, t, t), &dev).unwrap();
                let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap().broadcast_add(&bias4).unwrap().broadcast_add(&band_bias).unwrap();
                let reference = ops::softmax(&scores).unwrap().mul(&keep).unwrap().matmul(&v).unwrap();
                assert!(max_diff(&fused, &reference) < FUSED_TOL * 2.0, "{band:?}");
                let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
                for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                    let diff = max_diff(gf.get(x).unwrap(), gr.get(x).unwrap());
                    assert!(diff < FUSED_TOL * 10.0, "d{name} (dropout {}, {band:?}): {diff}", drop.is_some());
                }
            }
        }
    }
}
