//! A Linear layer y = x·Wᵀ + b in the storage its folder chose. `FORMATS` is the table of storage formats; this file
//! is the one place that dispatches on it.

use anyhow::{anyhow, bail, Result};
use shrink_format::TensorFile;
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::qgemm::{dequantize_int4, gemm_i4, gemm_i8, ActQuant, PackedI4, PackedI8, QuantActs, INT4_GROUPS, MAX_K};
use shrink_kernels::sgemm::{gemm_f32, PackedF32};
use shrink_kernels::spmm::{gemm_sparse, SparseF32};

/// How a weight is stored in the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `NAME.weight` F32 [N, K].
    F32,
    /// `NAME.weight` F16 [N, K], widened to f32 at load.
    F16,
    /// `NAME.weight` I8 [N, K] + `NAME.weight_scale` F32 [N]: symmetric per output channel (a per-tensor scale is
    /// the same value N times).
    I8,
    /// `NAME.weight` U8 [N, K/2] (two's complement nibbles, low = even k, values in [-7, 7]) + `NAME.weight_scale`
    /// F32 or F16 [N, K/group]: symmetric per (channel, group of K).
    I4 { group: usize },
    /// Pruned f32: `NAME.weight` F32 [nnz] holds the kept values row by row, placed by either `NAME.weight_mask`
    /// U8 [N, ceil(K/8)] (bit k % 8 of byte k / 8) or `NAME.weight_index` U16 [nnz] + `NAME.weight_row_nnz` U16 [N],
    /// whichever the writer found smaller. Runs on the sparse kernel, which skips the zeros.
    Sparse,
}

/// How the input of a Linear is fed to its GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acts {
    F32,
    /// u8 per token, scale and zero point from each token's range at run time.
    Dynamic,
    /// u8 with one scale and zero point fixed at calibration: `NAME.input_scale` F32 [1], `NAME.input_zero` F32 [1]
    /// (an integer in 0..=255).
    Static,
}

/// A storage format by name: what config.json's `quantization.layers` says for a Linear. Any format with int8
/// activations may also carry `NAME.smooth` F32 [K] (SmoothQuant): inputs are divided by it before quantizing and
/// the stored weights were multiplied by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub name: &'static str,
    pub storage: Storage,
    pub acts: Acts,
    /// Bits per stored weight value (scales not counted).
    pub bits: u32,
}

const fn format(name: &'static str, storage: Storage, acts: Acts, bits: u32) -> Format {
    Format { name, storage, acts, bits }
}

pub const FORMATS: [Format; 14] = [
    format("fp32", Storage::F32, Acts::F32, 32),
    format("fp16", Storage::F16, Acts::F32, 16),
    format("int8", Storage::I8, Acts::Dynamic, 8),
    format("int8-static", Storage::I8, Acts::Static, 8),
    format("int4-g32", Storage::I4 { group: 32 }, Acts::Dynamic, 4),
    format("int4-g64", Storage::I4 { group: 64 }, Acts::Dynamic, 4),
    format("int4-g128", Storage::I4 { group: 128 }, Acts::Dynamic, 4),
    // Weight-only: int4 on disk, widened to f32 at load (small files; speed of fp32).
    format("int4-g32-f32act", Storage::I4 { group: 32 }, Acts::F32, 4),
    format("int4-g64-f32act", Storage::I4 { group: 64 }, Acts::F32, 4),
    format("int4-g128-f32act", Storage::I4 { group: 128 }, Acts::F32, 4),
    // int4 weights with int8-static's activations (input_scale / input_zero): what `shrink qat` trains for.
    format("int4-g32-static", Storage::I4 { group: 32 }, Acts::Static, 4),
    format("int4-g64-static", Storage::I4 { group: 64 }, Acts::Static, 4),
    format("int4-g128-static", Storage::I4 { group: 128 }, Acts::Static, 4),
    format("sparse", Storage::Sparse, Acts::F32, 32),
];
const _: () = assert!(INT4_GROUPS.len() == 3, "one int4 format per kernel group size");

impl Format {
    pub fn parse(name: &str) -> Result<Self> {
        FORMATS.iter().find(|f| f.name == name).copied().ok_or_else(|| {
            let known: Vec<&str> = FORMATS.iter().map(|f| f.name).collect();
            anyhow!("unknown weight format {name:?} (known: {})", known.join(", "))
        })
    }

    pub const FP32: Format = FORMATS[0];
}

enum Weight {
    F32(PackedF32),
    Int8(PackedI8),
    Int4(PackedI4),
    Sparse(SparseF32),
}

pub struct Linear {
    weight: Weight,
    bias: Vec<f32>, // N
    fixed: Option<(f32, i32)>,
    inv_smooth: Option<Vec<f32>>, // K
    pub format: Format,
}

/// One tensor per stacked Linear, concatenated along N, each checked to have `shape`.
fn stacked<T: Clone>(names: &[&str], suffix: &str, mut get: impl FnMut(&str) -> Result<Vec<T>>) -> Result<Vec<T>> {
    let mut all = Vec::new();
    for name in names {
        all.extend(get(&format!("{name}.{suffix}"))?);
    }
    Ok(all)
}

/// A tensor that every stacked Linear must hold with the same values (they share one input).
fn shared(file: &TensorFile, names: &[&str], suffix: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
    let first = format!("{}.{suffix}", names[0]);
    if !file.contains(&first) {
        return Ok(None);
    }
    let v = file.f32(&first, shape)?.into_owned();
    for name in &names[1..] {
        if file.f32(&format!("{name}.{suffix}"), shape)?[..] != v[..] {
            bail!("{}: {first} and {name}.{suffix} differ; they share one input", file.file.display());
        }
    }
    Ok(Some(v))
}

fn check_scales(file: &TensorFile, what: &str, s: &[f32]) -> Result<()> {
    match s.iter().position(|&v| v < 0.0) {
        Some(i) => bail!("{}: {what}[{i}] is negative ({})", file.file.display(), s[i]),
        None => Ok(()),
    }
}

/// One sparse Linear (N, K) as `Storage::Sparse` describes it.
fn load_sparse(file: &TensorFile, name: &str, n: usize, k: usize) -> Result<SparseF32> {
    let path = file.file.display();
    let wname = format!("{name}.weight");
    let nnz = match file.shape(&wname) {
        Some(&[nnz]) => nnz,
        other => bail!("{path}: tensor {wname} has shape {other:?}; a sparse weight stores its kept values in one row"),
    };
    let val = file.f32(&wname, &[nnz])?;
    let mask = format!("{name}.weight_mask");
    let s = if file.contains(&mask) {
        SparseF32::from_mask(n, k, file.u8(&mask, &[n, k.div_ceil(8)])?, &val)
    } else {
        let rows = file.u16(&format!("{name}.weight_row_nnz"), &[n])?;
        SparseF32::from_csr(n, k, &rows, &file.u16(&format!("{name}.weight_index"), &[nnz])?, &val)
    };
    s.map_err(|e| anyhow!("{path}: sparse {wname}: {e}"))
}

impl Linear {
    /// Loads the Linears `names` (each N_each x K) stacked along N into one layer, so Q, K and V run as one GEMM.
    pub fn load(file: &TensorFile, names: &[&str], n_each: usize, k: usize, format: Format) -> Result<Self> {
        let n = names.len() * n_each;
        let path = file.file.display();
        // The int8 kernels' i32 sums are exact up to MAX_K (int4 values are smaller, so the same bound covers them).
        if format.acts != Acts::F32 && k > MAX_K {
            bail!("{path}: {}: K = {k} is above {MAX_K}, the most the int8 kernels ({}) take", names[0], format.name);
        }
        let bias = stacked(names, "bias", |t| Ok(file.f32(t, &[n_each])?.into_owned()))?;
        let weight = match format.storage {
            Storage::F32 | Storage::F16 => {
                let w = stacked(names, "weight", |t| Ok(file.f32(t, &[n_each, k])?.into_owned()))?; // (N, K)
                Weight::F32(PackedF32::pack(&w, n, k))
            }
            Storage::I8 => {
                let q = stacked(names, "weight", |t| Ok(file.i8(t, &[n_each, k])?.to_vec()))?; // (N, K)
                let scale = stacked(names, "weight_scale", |t| Ok(file.f32(t, &[n_each])?.into_owned()))?; // (N)
                check_scales(file, &format!("{}.weight_scale", names[0]), &scale)?;
                Weight::Int8(PackedI8::pack(&q, &scale, n, k))
            }
            Storage::I4 { group } => {
                if !k.is_multiple_of(group) {
                    bail!("{path}: {}: K = {k} is not a multiple of the int4 group {group}", names[0]);
                }
                let q = stacked(names, "weight", |t| Ok(file.u8(t, &[n_each, k / 2])?.to_vec()))?; // (N, K/2)
                let scale = stacked(names, "weight_scale", |t| Ok(file.f32(t, &[n_each, k / group])?.into_owned()))?; // (N, K/group)
                check_scales(file, &format!("{}.weight_scale", names[0]), &scale)?;
                match format.acts {
                    Acts::F32 => Weight::F32(PackedF32::pack(&dequantize_int4(&q, &scale, n, k, group), n, k)),
                    _ => Weight::Int4(PackedI4::pack(&q, &scale, n, k, group)),
                }
            }
            Storage::Sparse => {
                // Decoded per Linear, then stacked: Q, K and V still run as one GEMM.
                let mut w = Vec::with_capacity(n * k); // (N, K)
                for name in names {
                    w.extend(load_sparse(file, name, n_each, k)?.to_dense());
                }
                Weight::Sparse(SparseF32::from_dense(&w, n, k))
            }
        };
        let fixed = match format.acts {
            Acts::Static => {
                let scale = shared(file, names, "input_scale", &[1])?;
                let zero = shared(file, names, "input_zero", &[1])?;
                let (Some(s), Some(z)) = (scale, zero) else {
                    bail!("{path}: {} is {} (static activations) but has no input_scale / input_zero", names[0], format.name);
                };
                let (s, z) = (s[0], z[0]);
                if s.is_nan() || s <= 0.0 || z.fract() != 0.0 || !(0.0..=255.0).contains(&z) {
                    bail!("{path}: {}: input_scale {s} must be positive and input_zero {z} an integer in 0..=255", names[0]);
                }
                Some((s, z as i32))
            }
            _ => None,
        };
        let smooth = shared(file, names, "smooth", &[k])?;
        let inv_smooth = match (smooth, format.acts) {
            (None, _) => None,
            (Some(_), Acts::F32) => bail!("{path}: {} has a smooth vector but {} takes f32 inputs", names[0], format.name),
            (Some(s), _) => {
                if let Some(i) = s.iter().position(|&v| v.is_nan() || v <= 0.0) {
                    bail!("{path}: {}.smooth[{i}] = {} must be positive", names[0], s[i]);
                }
                Some(s.iter().map(|v| 1.0 / v).collect())
            }
        };
        Ok(Self { weight, bias, fixed, inv_smooth, format })
    }

    pub fn n(&self) -> usize {
        self.bias.len()
    }

    /// Multiplies outputs `rows` (weight rows and bias) by `s`.
    pub fn scale_rows(&mut self, rows: std::ops::Range<usize>, s: f32) {
        match &mut self.weight {
            Weight::F32(p) => p.scale_columns(rows.clone(), s),
            Weight::Int8(p) => p.scale_columns(rows.clone(), s),
            Weight::Int4(p) => p.scale_columns(rows.clone(), s),
            Weight::Sparse(p) => p.scale_columns(rows.clone(), s),
        }
        self.bias[rows].iter_mut().for_each(|v| *v *= s);
    }

    /// Bytes the packed weights hold in memory.
    pub fn bytes(&self) -> usize {
        let extra = (self.bias.len() + self.inv_smooth.as_ref().map_or(0, Vec::len)) * 4;
        extra
            + match &self.weight {
                Weight::F32(p) => p.bytes(),
                Weight::Int8(p) => p.bytes(),
                Weight::Int4(p) => p.bytes(),
                Weight::Sparse(p) => p.bytes(),
            }
    }

    /// out (M, N) = x (M, K)·Wᵀ + b, then GELU and/or + residual (M, N). `qa` is the reused activation buffer.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], qa: &mut QuantActs, gelu: bool, residual: Option<&[f32]>) {
        let ep = Epilogue { bias: Some(&self.bias), gelu, residual };
        let quant = ActQuant { fixed: self.fixed, col: self.inv_smooth.as_deref() };
        match &self.weight {
            Weight::F32(p) => gemm_f32(out, x, m, p, ep),
            Weight::Int8(p) => {
                qa.quantize_with(x, m, p.k(), quant);
                gemm_i8(out, qa, p, ep);
            }
            Weight::Int4(p) => {
                qa.quantize_with(x, m, p.k(), quant);
                gemm_i4(out, qa, p, ep);
            }
            Weight::Sparse(p) => gemm_sparse(out, x, m, p, ep, &mut qa.transposed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_format::tensors::{serialize, OwnedTensor};

    /// PackedI8::pack asserts K <= MAX_K: a folder with a wider int8 Linear must be a load error, not a panic.
    #[test]
    fn int8_activations_past_max_k_are_an_error() {
        let k = MAX_K + 4;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let tensors = vec![
            OwnedTensor::i8("l.weight", vec![1, k], &vec![1; k]),
            OwnedTensor::f32("l.weight_scale", vec![1], &[0.5]),
            OwnedTensor::f32("l.bias", vec![1], &[0.0]),
        ];
        std::fs::write(&path, serialize(tensors).unwrap()).unwrap();
        let file = TensorFile::open(&path).unwrap();
        let err = Linear::load(&file, &["l"], 1, k, Format::parse("int8").unwrap()).err().expect("K above MAX_K loaded");
        assert!(err.to_string().contains("l: K = 32772 is above 32768"), "{err}");
    }
}
