//! A Linear layer y = x·Wᵀ + b in the storage its folder chose. The formats and what each stores are
//! `shrink_format::quant`'s; this file is the one place the runtime dispatches on them.

use anyhow::{bail, Result};
use shrink_format::quant::{leaf, ActGrid, Acts, Format, Int4Weight, Int8Weight, Smooth, SparseWeight, Storage};
use shrink_format::TensorFile;
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::qgemm::{gemm_i4, gemm_i8, ActQuant, PackedI4, PackedI8, QuantActs, INT4_GROUPS, MAX_K};
use shrink_kernels::sgemm::{gemm_f32, PackedF32};
use shrink_kernels::spmm::{gemm_sparse, SparseF32};

const _: () = {
    let (a, b) = (shrink_format::quant::int4::GROUPS, INT4_GROUPS);
    assert!(a.len() == b.len() && a[0] == b[0] && a[1] == b[1] && a[2] == b[2], "the kernels take every int4 group the formats name");
};

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
    /// K block of the activation scales (llama.cpp's 32 for decoders); 0: one per token.
    act_block: usize,
    pub format: Format,
}

/// A bias-free weight already in memory (a GGUF file's), for `Linear::stack`.
pub enum Stored {
    F32 { w: Vec<f32>, n: usize }, // (N, K)
    Int8(Int8Weight),
    Int4(Int4Weight),
}

impl Stored {
    fn n(&self) -> usize {
        match self {
            Stored::F32 { n, .. } => *n,
            Stored::Int8(w) => w.n,
            Stored::Int4(w) => w.n,
        }
    }

    fn decode(self) -> Vec<f32> {
        match self {
            Stored::F32 { w, .. } => w,
            Stored::Int8(w) => w.decode(),
            Stored::Int4(w) => w.decode(),
        }
    }
}

/// What every stacked Linear must hold alike (they share one input).
fn shared<T: PartialEq>(file: &TensorFile, names: &[&str], what: &str, mut get: impl FnMut(&str) -> Result<Option<T>>) -> Result<Option<T>> {
    let first = get(names[0])?;
    for name in &names[1..] {
        if get(name)? != first {
            bail!("{}: {}.{what} and {name}.{what} differ; they share one input", file.file.display(), names[0]);
        }
    }
    Ok(first)
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
        let mut bias = Vec::with_capacity(n);
        for name in names {
            bias.extend_from_slice(&file.f32(&leaf::of(name, leaf::BIAS), &[n_each])?);
        }
        let weight = match format.storage {
            Storage::F32 | Storage::F16 => {
                let mut w = Vec::with_capacity(n * k); // (N, K)
                for name in names {
                    w.extend_from_slice(&file.f32(&leaf::of(name, leaf::WEIGHT), &[n_each, k])?);
                }
                Weight::F32(PackedF32::pack(&w, n, k))
            }
            Storage::I8 => {
                let w = Int8Weight::concat(names.iter().map(|t| Int8Weight::read(file, t, n_each, k)).collect::<Result<_>>()?);
                Weight::Int8(PackedI8::pack(&w.q, &w.scale, n, k))
            }
            Storage::I4 { group } => {
                let w = Int4Weight::concat(names.iter().map(|t| Int4Weight::read(file, t, n_each, k, group)).collect::<Result<_>>()?);
                match format.acts {
                    Acts::F32 => Weight::F32(PackedF32::pack(&w.decode(), n, k)),
                    _ => Weight::Int4(PackedI4::pack(&w.values(), &w.scale, n, k, group)),
                }
            }
            Storage::Sparse => {
                // Decoded per Linear, then stacked: Q, K and V still run as one GEMM.
                let mut w = Vec::with_capacity(n * k); // (N, K)
                for name in names {
                    w.extend(SparseWeight::read(file, name, n_each, k)?.decode());
                }
                Weight::Sparse(SparseF32::from_dense(&w, n, k))
            }
        };
        let fixed = match format.acts {
            Acts::Static => {
                let Some(g) = shared(file, names, "input_scale", |t| ActGrid::read(file, t))? else {
                    bail!("{path}: {} is {} (static activations) but has no input_scale / input_zero", names[0], format.name);
                };
                Some((g.scale, g.zero))
            }
            _ => None,
        };
        let smooth = shared(file, names, "smooth", |t| Smooth::read(file, t, k))?;
        let inv_smooth = match (smooth, format.acts) {
            (None, _) => None,
            (Some(_), Acts::F32) => bail!("{path}: {} has a smooth vector but {} takes f32 inputs", names[0], format.name),
            (Some(s), _) => Some(s.0.iter().map(|v| 1.0 / v).collect()),
        };
        Ok(Self { weight, bias, fixed, inv_smooth, act_block: 0, format })
    }

    /// Bias-free weights (each N_i x K) stacked along N into one layer. int8 and int4 run on int8 activations with
    /// one scale per block of 32 (as llama.cpp's Q8_0 dot: per token, a decoder's outlier channels cost int8 1.5%
    /// perplexity on SmolLM2, per block 0.1%); parts of different kinds all run as f32.
    pub fn stack(parts: Vec<Stored>, k: usize) -> Result<Self> {
        let n: usize = parts.iter().map(Stored::n).sum();
        let same = |f: fn(&Stored) -> bool| parts.iter().all(f);
        let (weight, name) = if same(|p| matches!(p, Stored::Int8(_))) {
            let w = Int8Weight::concat(parts.into_iter().map(|p| if let Stored::Int8(w) = p { w } else { unreachable!() }).collect());
            (Weight::Int8(PackedI8::pack(&w.q, &w.scale, n, k).with_block_sums(ACT_BLOCK)), "int8")
        } else if same(|p| matches!(p, Stored::Int4(w) if w.group == 32)) {
            let w = Int4Weight::concat(parts.into_iter().map(|p| if let Stored::Int4(w) = p { w } else { unreachable!() }).collect());
            (Weight::Int4(PackedI4::pack(&w.values(), &w.scale, n, k, 32)), "int4-g32")
        } else {
            let w: Vec<f32> = parts.into_iter().flat_map(Stored::decode).collect();
            (Weight::F32(PackedF32::pack(&w, n, k)), "fp32")
        };
        if name != "fp32" && (k > MAX_K || !k.is_multiple_of(ACT_BLOCK)) {
            bail!("K = {k}: the int8 kernels take K up to {MAX_K}, in blocks of {ACT_BLOCK}");
        }
        let act_block = if name == "fp32" { 0 } else { ACT_BLOCK };
        Ok(Self { weight, bias: vec![0.0; n], fixed: None, inv_smooth: None, act_block, format: Format::parse(name)? })
    }

    pub fn n(&self) -> usize {
        self.bias.len()
    }

    /// Output `j`'s weights (K), decoded: a tied embedding table reads its rows from the head this way.
    pub fn weight_row(&self, j: usize, out: &mut [f32]) {
        match &self.weight {
            Weight::F32(p) => p.column(j, out),
            Weight::Int8(p) => p.column(j, out),
            Weight::Int4(p) => p.column(j, out),
            Weight::Sparse(p) => p.column(j, out),
        }
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
                self.quantize(qa, x, m, p.k(), quant);
                gemm_i8(out, qa, p, ep);
            }
            Weight::Int4(p) => {
                self.quantize(qa, x, m, p.k(), quant);
                gemm_i4(out, qa, p, ep);
            }
            Weight::Sparse(p) => gemm_sparse(out, x, m, p, ep, &mut qa.transposed),
        }
    }
}

/// The activation block of `Linear::stack`'s int8 and int4 layers: int4's group, llama.cpp's Q8_0 block.
const ACT_BLOCK: usize = 32;

impl Linear {
    fn quantize(&self, qa: &mut QuantActs, x: &[f32], m: usize, k: usize, quant: ActQuant) {
        match self.act_block {
            0 => qa.quantize_with(x, m, k, quant),
            b => qa.quantize_blocks(x, m, k, b),
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
