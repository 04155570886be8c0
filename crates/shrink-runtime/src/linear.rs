//! A Linear layer y = x·Wᵀ + b in the storage its folder chose. `Format` is the table of storage formats; this file
//! is the one place that dispatches on it.

use anyhow::{anyhow, bail, Result};
use shrink_format::TensorFile;
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::qgemm::{gemm_i8, PackedI8, QuantActs};
use shrink_kernels::sgemm::{gemm_f32, PackedF32};

/// How a Linear's weight is stored in the folder and packed in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `NAME.weight` F32/F16/BF16 [N, K].
    Fp32,
    /// `NAME.weight` I8 [N, K] + `NAME.weight_scale` F32 [N]: symmetric per output channel; activations are
    /// quantized per token at run time.
    Int8,
}

/// Name in config.json, format, bits per weight.
const FORMATS: [(&str, Format, u32); 2] = [("fp32", Format::Fp32, 32), ("int8", Format::Int8, 8)];

impl Format {
    pub fn parse(name: &str) -> Result<Self> {
        FORMATS.iter().find(|f| f.0 == name).map(|f| f.1).ok_or_else(|| {
            let known: Vec<&str> = FORMATS.iter().map(|f| f.0).collect();
            anyhow!("unknown weight format {name:?} (known: {})", known.join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        FORMATS.iter().find(|f| f.1 == self).map_or("?", |f| f.0)
    }

    pub fn bits(self) -> u32 {
        FORMATS.iter().find(|f| f.1 == self).map_or(32, |f| f.2)
    }
}

enum Weight {
    F32(PackedF32),
    Int8(PackedI8),
}

pub struct Linear {
    weight: Weight,
    bias: Vec<f32>, // N
    pub format: Format,
}

impl Linear {
    /// Loads the Linears `names` (each N_each x K) stacked along N into one layer, so Q, K and V run as one GEMM.
    pub fn load(file: &TensorFile, names: &[&str], n_each: usize, k: usize, format: Format) -> Result<Self> {
        let n = names.len() * n_each;
        let mut bias = Vec::with_capacity(n);
        for name in names {
            bias.extend_from_slice(&file.f32(&format!("{name}.bias"), &[n_each])?);
        }
        let weight = match format {
            Format::Fp32 => {
                let mut w = Vec::with_capacity(n * k); // (N, K)
                for name in names {
                    w.extend_from_slice(&file.f32(&format!("{name}.weight"), &[n_each, k])?);
                }
                Weight::F32(PackedF32::pack(&w, n, k))
            }
            Format::Int8 => {
                let (mut q, mut scale) = (Vec::with_capacity(n * k), Vec::with_capacity(n)); // (N, K), N
                for name in names {
                    q.extend_from_slice(file.i8(&format!("{name}.weight"), &[n_each, k])?);
                    let s = file.f32(&format!("{name}.weight_scale"), &[n_each])?;
                    if let Some(i) = s.iter().position(|&v| v < 0.0) {
                        bail!("{}: {name}.weight_scale[{i}] is negative ({})", file.file.display(), s[i]);
                    }
                    scale.extend_from_slice(&s);
                }
                Weight::Int8(PackedI8::pack(&q, &scale, n, k))
            }
        };
        Ok(Self { weight, bias, format })
    }

    pub fn n(&self) -> usize {
        self.bias.len()
    }

    /// Multiplies outputs `rows` (weight rows and bias) by `s`.
    pub fn scale_rows(&mut self, rows: std::ops::Range<usize>, s: f32) {
        match &mut self.weight {
            Weight::F32(p) => p.scale_columns(rows.clone(), s),
            Weight::Int8(p) => p.scale_columns(rows.clone(), s),
        }
        self.bias[rows].iter_mut().for_each(|v| *v *= s);
    }

    /// Bytes the packed weights hold in memory.
    pub fn bytes(&self) -> usize {
        match &self.weight {
            Weight::F32(p) => p.bytes(),
            Weight::Int8(p) => p.bytes(),
        }
    }

    /// out (M, N) = x (M, K)·Wᵀ + b, then GELU and/or + residual (M, N). `qa` is the reused activation buffer.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], qa: &mut QuantActs, gelu: bool, residual: Option<&[f32]>) {
        let ep = Epilogue { bias: Some(&self.bias), gelu, residual };
        match &self.weight {
            Weight::F32(p) => gemm_f32(out, x, m, p, ep),
            Weight::Int8(p) => {
                qa.quantize(x, m, p.k());
                gemm_i8(out, qa, p, ep);
            }
        }
    }
}
