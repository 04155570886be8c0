//! One Linear y = x·Wᵀ + b as ONNX nodes, in the form each runtime fuses for the folder's storage:
//! - fp32 / fp16 / sparse: MatMul with W as a [K, N] initializer (fp16 through a Cast that ORT folds at load;
//!   sparse weights decoded dense);
//! - int8, dynamic activations per token: the runtime's u8 grid built from plain ops (row range, scale, zero
//!   point, a per-row `QuantizeLinear`), then `com.microsoft.MatMulIntegerToFloat` and a Gemm that adds the zero
//!   point's correction (through the weights' column sums) and the bias, so ONNX Runtime computes the runtime's
//!   integers;
//! - int8, dynamic per tensor: `DynamicQuantizeLinear` + `MatMulInteger` + the scale product, the form ONNX
//!   Runtime's own `quantize_dynamic` writes (and fuses into `DynamicQuantizeMatMul`): one grid for the whole
//!   tensor where shrink's is per token, so outputs differ a little;
//! - int8, static: QDQ with the calibrated grid (`QuantizeLinear` + `DequantizeLinear` on the input, a per-channel
//!   `DequantizeLinear` on W), which ORT fuses to `QLinearMatMul` and NNAPI / QNN take whole;
//! - int4 groups: `com.microsoft.MatMulNBits` with the stored nibbles (offset to its unsigned grid) and scales;
//!   accuracy level 4 (int8 activations) unless the folder computes in f32.

use anyhow::{bail, Result};
use shrink_format::quant::{leaf, ActGrid, Acts, Format, Int4Weight, Int8Weight, Smooth, SparseWeight, Storage};
use shrink_format::TensorFile;

use crate::graph::{Attr, Graph, MS};
use crate::proto::dtype;

/// How int8 activations are expressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Form {
    /// Per-token u8 activations as on shrink's runtime, then `MatMulIntegerToFloat` (CPU; calibrated grids of
    /// static folders are not used).
    Dynamic,
    /// `DynamicQuantizeLinear` + `MatMulInteger`: ONNX Runtime's own per-tensor form.
    DynamicTensor,
    /// QuantizeLinear / DequantizeLinear with the calibrated grid (needs a static folder).
    Qdq,
}

/// W (N, K) transposed to the [K, N] that MatMul's second input is.
fn transposed<T: Copy>(w: &[T], n: usize, k: usize) -> Vec<T> {
    let mut t = Vec::with_capacity(n * k);
    for c in 0..k {
        t.extend((0..n).map(|r| w[r * k + c]));
    }
    t
}

/// MatMulNBits' unsigned nibbles (q + 8, its default zero point) from shrink's two's complement ones.
pub fn nbits_nibbles(packed: &[u8]) -> Vec<u8> {
    packed.iter().map(|b| b ^ 0x88).collect()
}

/// x [M, K] (the graph runs flat for this form) quantized per token as the runtime does (kernels'
/// `qgemm/acts.rs`): the row's range widened to include 0, scale = (hi - lo) / 255, zero = round(-lo / scale),
/// q = round(x / scale) + zero saturated to u8 by a per-row QuantizeLinear, rounding half to even like the runtime.
/// (The runtime rounds x (1 / scale) + zero: an integer can differ by one where the two round apart.) Returns
/// q [M, K] u8, the scales [M, 1] and [scale * zero, 1] [M, 2], the rows that the zero point's correction and the
/// bias are multiplied by. Built once per input value (Q, K and V share theirs).
fn per_token(g: &mut Graph, x: &str) -> [String; 3] {
    if let Some(v) = g.per_token.get(x) {
        return v.clone();
    }
    let zero = g.scalar(0.0);
    let lo = g.reduce("ReduceMin", x, &[-1]);
    let lo = g.op("Min", &[&lo, &zero], vec![]);
    let hi = g.reduce("ReduceMax", x, &[-1]);
    let hi = g.op("Max", &[&hi, &zero], vec![]);
    let range = g.op("Sub", &[&hi, &lo], vec![]);
    let levels = g.scalar(255.0);
    let s = g.op("Div", &[&range, &levels], vec![]);
    // An all-zero row is exact on any grid (the runtime takes scale 1, this the smallest normal float).
    let tiny = g.scalar(f32::MIN_POSITIVE);
    let s = g.op("Max", &[&s, &tiny], vec![]); // [M, 1]
    let inv = g.op("Reciprocal", &[&s], vec![]);
    let neg = g.op("Neg", &[&lo], vec![]);
    let z = g.op("Mul", &[&neg, &inv], vec![]);
    let z = g.op("Round", &[&z], vec![]); // [M, 1], in 0..=255
    let flat = g.i64s(&[-1]);
    let s1 = g.op("Reshape", &[&s, &flat], vec![]);
    let z1 = g.op("Reshape", &[&z, &flat], vec![]);
    let z1 = g.op("Cast", &[&z1], vec![("to", Attr::I(dtype::UINT8 as i64))]);
    let q = g.op("QuantizeLinear", &[x, &s1, &z1], vec![("axis", Attr::I(0))]);
    let sz = g.op("Mul", &[&s, &z], vec![]);
    let ones = g.op("Div", &[&s, &s], vec![]); // s > 0: a column of exact ones
    let rows = g.op("Concat", &[&sz, &ones], vec![("axis", Attr::I(1))]);
    let out = [q, s, rows];
    g.per_token.insert(x.to_string(), out.clone());
    out
}

/// Emits the Linear `name` (N outputs, K inputs) stored as `format`, reading `x` [.., K]; returns y [.., N].
#[allow(clippy::too_many_arguments)]
pub fn linear(g: &mut Graph, file: &TensorFile, name: &str, n: usize, k: usize, format: Format, form: Int8Form, x: &str) -> Result<String> {
    let t = |l: &str| leaf::of(name, l);
    let path = file.file.display();
    let bias = g.f32(&t(leaf::BIAS), &[n], &file.f32(&t(leaf::BIAS), &[n])?);
    let quantized = format.acts != Acts::F32;
    // SmoothQuant: inputs divided by s before they are quantized.
    let x = match Smooth::read(file, name, k)?.filter(|_| quantized) {
        Some(s) => {
            let inv: Vec<f32> = s.0.iter().map(|v| 1.0 / v).collect();
            let inv = g.f32(&t("inv_smooth"), &[k], &inv);
            g.op("Mul", &[x, &inv], vec![])
        }
        None => x.to_string(),
    };
    let grid = ActGrid::read(file, name)?;
    let qdq = |g: &mut Graph, x: &str, grid: ActGrid| {
        let s = g.f32(&t("input_scale"), &[], &[grid.scale]);
        let z = g.u8_scalar(grid.zero as u8);
        let q = g.op("QuantizeLinear", &[x, &s, &z], vec![]);
        g.op("DequantizeLinear", &[&q, &s, &z], vec![])
    };
    let static_input = match (format.acts, form) {
        (Acts::Static, Int8Form::Qdq) => match grid {
            Some(grid) => Some(grid),
            None => bail!("{path}: {name} is {} but stores no input_scale / input_zero", format.name),
        },
        (Acts::Dynamic, Int8Form::Qdq) => {
            bail!("{path}: {name} is {}: QDQ needs calibrated activation scales (quantize with --scheme int8-static), or export with --int8 dynamic", format.name)
        }
        _ => None,
    };
    let y = match format.storage {
        Storage::F32 | Storage::F16 | Storage::Sparse => {
            let wt = t(leaf::WEIGHT);
            let w = match format.storage {
                Storage::F16 => {
                    let raw = transposed(&file.f16(&wt, &[n, k])?, n, k).iter().flat_map(|h| h.to_le_bytes()).collect();
                    let w = g.init(&wt, dtype::FLOAT16, &[k, n], raw);
                    g.op("Cast", &[&w], vec![("to", Attr::I(dtype::FLOAT as i64))])
                }
                Storage::Sparse => g.f32(&wt, &[k, n], &transposed(&SparseWeight::read(file, name, n, k)?.decode(), n, k)),
                _ => g.f32(&wt, &[k, n], &transposed(&file.f32(&wt, &[n, k])?, n, k)),
            };
            g.op("MatMul", &[&x, &w], vec![])
        }
        Storage::I8 => {
            let w = Int8Weight::read(file, name, n, k)?;
            let q = transposed(&w.q, n, k).iter().map(|&v| v as u8).collect();
            let wq = g.init(&t("weight_quantized"), dtype::INT8, &[k, n], q);
            let ws = g.f32(&t(leaf::WEIGHT_SCALE), &[n], &w.scale);
            match static_input {
                Some(grid) => {
                    let xq = qdq(g, &x, grid);
                    let wz = g.init(&t("weight_zero_point"), dtype::INT8, &[n], vec![0; n]);
                    let wd = g.op("DequantizeLinear", &[&wq, &ws, &wz], vec![("axis", Attr::I(1))]);
                    g.op("MatMul", &[&xq, &wd], vec![])
                }
                None if form == Int8Form::Dynamic => {
                    let [q, s, rows] = per_token(g, &x);
                    // s ws Σ (q - z) w + b = s ws Σ q w + [s z, 1] [-ws Σ w; b]: ONNX Runtime's MatMulIntegerToFloat
                    // gives the first term (per-row scales multiply its output), a Gemm adds the second. Σ w is
                    // exact in i32, then rounded once when scaled.
                    let y = g.node_in(MS, "MatMulIntegerToFloat", &[&q, &wq, &s, &ws], 1, vec![]).remove(0);
                    let sums: Vec<f32> = (0..n).map(|r| -w.scale[r] * w.q[r * k..(r + 1) * k].iter().map(|&v| v as i32).sum::<i32>() as f32).collect();
                    let sums = g.f32(&t("zero_point_correction"), &[1, n], &sums);
                    let axis = g.i64s(&[0]);
                    let b = g.op("Unsqueeze", &[&bias, &axis], vec![]);
                    let fix = g.op("Concat", &[&sums, &b], vec![("axis", Attr::I(0))]); // [2, N], folded at load
                    return Ok(g.op("Gemm", &[&rows, &fix, &y], vec![]));
                }
                None => {
                    let wz = g.init(&t("weight_zero_point"), dtype::INT8, &[n], vec![0; n]);
                    let d = g.node_in("", "DynamicQuantizeLinear", &[&x], 3, vec![]);
                    let acc = g.op("MatMulInteger", &[&d[0], &wq, &d[2], &wz], vec![]);
                    let acc = g.op("Cast", &[&acc], vec![("to", Attr::I(dtype::FLOAT as i64))]);
                    let scale = g.op("Mul", &[&d[1], &ws], vec![]);
                    g.op("Mul", &[&acc, &scale], vec![])
                }
            }
        }
        Storage::I4 { group } => {
            let w = Int4Weight::read(file, name, n, k, group)?;
            let blocks = k / group;
            let b = g.init(&t("weight_nbits"), dtype::UINT8, &[n, blocks, group / 2], nbits_nibbles(&w.packed));
            let s = g.f32(&t(leaf::WEIGHT_SCALE), &[n * blocks], &w.scale);
            let x = match static_input {
                Some(grid) => qdq(g, &x, grid),
                None => x,
            };
            // Level 4: int8 activations quantized per block inside the kernel; 0: f32 (weight-only folders).
            let level = if quantized { 4 } else { 0 };
            let attrs = vec![
                ("K", Attr::I(k as i64)),
                ("N", Attr::I(n as i64)),
                ("bits", Attr::I(4)),
                ("block_size", Attr::I(group as i64)),
                ("accuracy_level", Attr::I(level)),
            ];
            g.node_in(MS, "MatMulNBits", &[&x, &b, &s], 1, attrs).remove(0)
        }
    };
    Ok(g.op("Add", &[&y, &bias], vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_move_to_the_unsigned_grid() {
        // shrink: low nibble = even k, two's complement; MatMulNBits: q + 8, same order.
        let q: Vec<i8> = vec![-7, 7, 0, -1, 3, -4];
        let packed = shrink_format::quant::int4::pack(&q);
        let unsigned = nbits_nibbles(&packed);
        let back: Vec<i32> = unsigned.iter().flat_map(|b| [(b & 0xF) as i32 - 8, (b >> 4) as i32 - 8]).collect();
        assert_eq!(back, q.iter().map(|&v| v as i32).collect::<Vec<_>>());
    }

    #[test]
    fn weights_are_stored_k_by_n() {
        assert_eq!(transposed(&[1, 2, 3, 4, 5, 6], 2, 3), [1, 4, 2, 5, 3, 6]);
    }
}
