//! Fused CPU ops with hand-written backward passes. candle builds LayerNorm and softmax from a chain of
//! elementwise ops, each allocating a full tensor and reading memory again, forward and backward; these do one pass
//! per direction, parallel over rows. The basic-op versions in `ops` are their references (tests compare them).

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use shrink_kernels::gemm::{matmul, Mat};
use shrink_kernels::math;
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

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(slice(c, l)?),
        _ => bail!("fused op: CPU tensors only"),
    }
}

/// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * w + b.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(w, b, LayerNormOp { eps: eps as f32 })
}

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/std of one row.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let c = w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c * ROWS_PER_TASK).zip(x.par_chunks(c * ROWS_PER_TASK)).for_each(|(yb, xb)| {
            for (yr, xr) in yb.chunks_mut(c).zip(xb.chunks(c)) {
                let (mean, rstd) = moments(xr, self.eps);
                for i in 0..c {
                    yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let (dx, dw, db) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(dy, |dy| {
                    let mut dx = vec![0f32; x.len()];
                    let (dw, db) = dx
                        .par_chunks_mut(c * ROWS_PER_TASK)
                        .zip(x.par_chunks(c * ROWS_PER_TASK).zip(dy.par_chunks(c * ROWS_PER_TASK)))
                        .fold(
                            || (vec![0f32; c], vec![0f32; c]),
                            |(mut dw, mut db), (dxb, (xb, dyb))| {
                                for ((dxr, xr), dyr) in dxb.chunks_mut(c).zip(xb.chunks(c)).zip(dyb.chunks(c)) {
                                    let (mean, rstd) = moments(xr, self.eps);
                                    // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w
                                    let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                                    for i in 0..c {
                                        let xhat = (xr[i] - mean) * rstd;
                                        let g = dyr[i] * w[i];
                                        sum_g += g;
                                        sum_gx += g * xhat;
                                        dw[i] += dyr[i] * xhat;
                                        db[i] += dyr[i];
                                    }
                                    let (mg, mgx) = (sum_g / c as f32, sum_gx / c as f32);
                                    for i in 0..c {
                                        let xhat = (xr[i] - mean) * rstd;
                                        dxr[i] = rstd * (dyr[i] * w[i] - mg - xhat * mgx);
                                    }
                                }
                                (dw, db)
                            },
                        )
                        .reduce(
                            || (vec![0f32; c], vec![0f32; c]),
                            |(mut a, mut b), (a2, b2)| {
                                a.iter_mut().zip(a2).for_each(|(u, v)| *u += v);
                                b.iter_mut().zip(b2).for_each(|(u, v)| *u += v);
                                (a, b)
                            },
                        );
                    Ok((dx, dw, db))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

/// Attention probabilities: softmax over the last dim of `scores * scale + bias`, bias broadcast per batch row.
/// scores: (B, H, T, T), bias: (B, T) additive mask -> (B, H, T, T)
pub fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    scores.contiguous()?.apply_op2(&bias.contiguous()?, MaskedSoftmaxOp { scale: scale as f32 })
}

struct MaskedSoftmaxOp {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmaxOp {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(&self, ss: &CpuStorage, ls: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let (s, bias) = (slice(ss, ls)?, slice(sb, lb)?);
        let (b, _, _, t) = ls.shape().dims4()?;
        if bias.len() != b * t {
            bail!("masked softmax: bias has {} values, expected B*T = {}", bias.len(), b * t);
        }
        let rows_per_batch = s.len() / (b * t); // H * T
        let mut y = vec![0f32; s.len()];
        y.par_chunks_mut(t * ROWS_PER_TASK).enumerate().for_each(|(task, yb)| {
            for (r, yr) in yb.chunks_mut(t).enumerate() {
                let row = task * ROWS_PER_TASK + r;
                let (sr, br) = (&s[row * t..(row + 1) * t], &bias[(row / rows_per_batch) * t..][..t]);
                let mut max = f32::NEG_INFINITY;
                for j in 0..t {
                    yr[j] = sr[j] * self.scale + br[j];
                    max = max.max(yr[j]);
                }
                let mut sum = 0f32;
                for v in yr.iter_mut() {
                    *v = math::exp(*v - max);
                    sum += *v;
                }
                let inv = 1.0 / sum;
                yr.iter_mut().for_each(|v| *v *= inv);
            }
        });
        Ok((CpuStorage::F32(y), ls.shape().clone()))
    }

    fn bwd(&self, scores: &Tensor, _bias: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let t = scores.dims()[3];
        let ds = with_data(y, |y| {
            with_data(dy, |dy| {
                let mut ds = vec![0f32; y.len()];
                ds.par_chunks_mut(t * ROWS_PER_TASK)
                    .zip(y.par_chunks(t * ROWS_PER_TASK).zip(dy.par_chunks(t * ROWS_PER_TASK)))
                    .for_each(|(db, (yb, dyb))| {
                        for ((dr, yr), gr) in db.chunks_mut(t).zip(yb.chunks(t)).zip(dyb.chunks(t)) {
                            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                            for j in 0..t {
                                dr[j] = self.scale * yr[j] * (gr[j] - dot);
                            }
                        }
                    });
                Ok(ds)
            })
        })?;
        // The mask is not trainable: no gradient for it.
        Ok((Some(Tensor::from_vec(ds, scores.shape(), scores.device())?), None))
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
        let mut y = vec![0f32; n * o]; // (N, O), starts as bias rows
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
                    let mut dx = vec![0f32; n * i];
                    matmul(&mut dx, dyv, Mat::row_major(w, o, i), false); // (N, O) (O, I)
                    let mut dw = vec![0f32; o * i];
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
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK)).for_each(|(yb, xb)| {
            yb.iter_mut().zip(xb).for_each(|(y, &x)| *y = math::gelu(x));
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_data(x, |x| {
            with_data(dy, |dy| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ELEMS_PER_TASK).zip(x.par_chunks(ELEMS_PER_TASK).zip(dy.par_chunks(ELEMS_PER_TASK))).for_each(
                    |(db, (xb, gb))| {
                        for ((d, &x), &g) in db.iter_mut().zip(xb).zip(gb) {
                            *d = g * math::gelu_grad(x);
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
    fn layer_norm_matches_reference_forward_and_backward() {
        let dev = Device::Cpu;
        // 131 rows (not a multiple of the task size), odd width.
        let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (131, 37), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 37, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 37, &dev).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, (131, 37), &dev).unwrap(); // random upstream gradient
        let fused = layer_norm(&x, &w, &b, 1e-12).unwrap();
        let reference = ops::layer_norm(&x, &w, &b, 1e-12).unwrap();
        assert!(max_diff(&fused, &reference) < FUSED_TOL);
        let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let d = max_diff(gf.get(v).unwrap(), gr.get(v).unwrap());
            assert!(d < FUSED_TOL * 10.0, "d{name}: {d}");
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
    fn masked_softmax_matches_reference_forward_and_backward() {
        let dev = Device::Cpu;
        let (b, h, t) = (3, 2, 7);
        let s = Var::from_tensor(&Tensor::randn(0f32, 3.0, (b, h, t, t), &dev).unwrap()).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], &dev).unwrap();
        let bias = crate::embeddings::mask_bias(&mask).unwrap(); // (B, T)
        let up = Tensor::randn(0f32, 1.0, (b, h, t, t), &dev).unwrap();
        let scale = 0.125;
        let fused = masked_softmax(&s, &bias, scale).unwrap();
        let bias4 = bias.reshape((b, 1, 1, t)).unwrap();
        let reference = ops::softmax(&(s.as_tensor() * scale).unwrap().broadcast_add(&bias4).unwrap()).unwrap();
        assert!(max_diff(&fused, &reference) < FUSED_TOL);
        let gf = (fused * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let d = max_diff(gf.get(&s).unwrap(), gr.get(&s).unwrap());
        assert!(d < FUSED_TOL, "dscores: {d}");
    }
}
