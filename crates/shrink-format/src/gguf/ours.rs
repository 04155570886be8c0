//! Our int8 and int4 weights inside GGUF's Q8_0 and Q4_0 blocks, exactly, both ways:
//! - `Int8Weight` (one f16-exact scale per row, q in [-127, 127]) is Q8_0 whose blocks in a row share one d;
//! - `Int4Weight` with groups of 32 (f16 scales, q in [-7, 7]) is Q4_0 with no nibble 0 (q = nibble - 8).
//!
//! So llama.cpp runs the files `shrink quantize` writes, and the runtime reads them back as its own formats. A
//! llama.cpp-made Q8_0 / Q4_0 tensor is off these grids in general (a d per block, nibble 0 used): `None`, and the
//! caller dequantizes it.

use anyhow::{bail, Result};
use half::f16;

use super::{type_info, GgufFile, TensorInfo, TypeInfo};
use crate::quant::{int4, Int4Weight, Int8Weight};

const QK: usize = 32;
pub const Q4_0: u32 = 2;
pub const Q8_0: u32 = 8;

pub fn kind(id: u32) -> &'static TypeInfo {
    type_info(id).expect("the block table has Q4_0 and Q8_0")
}

fn f16_exact(s: f32, what: &str) -> Result<f16> {
    let h = f16::from_f32(s);
    if h.to_f32() != s {
        bail!("{what}: scale {s} is not an f16 value; GGUF blocks store f16 scales");
    }
    Ok(h)
}

/// Q8_0 bytes of `w`, row-major; K a multiple of 32 and the scales f16-exact.
pub fn q8_0_of(w: &Int8Weight, what: &str) -> Result<Vec<u8>> {
    if !w.k.is_multiple_of(QK) {
        bail!("{what}: K = {} is not a multiple of the Q8_0 block of {QK}", w.k);
    }
    let mut out = Vec::with_capacity(w.n * w.k / QK * (2 + QK));
    for (row, &s) in w.q.chunks_exact(w.k).zip(&w.scale) {
        let d = f16_exact(s, what)?.to_le_bytes();
        for block in row.chunks_exact(QK) {
            out.extend(d);
            out.extend(block.iter().map(|&q| q as u8));
        }
    }
    Ok(out)
}

/// Q4_0 bytes of `w` (groups of 32 along K).
pub fn q4_0_of(w: &Int4Weight, what: &str) -> Result<Vec<u8>> {
    if w.group != QK {
        bail!("{what}: int4 groups of {} have no GGUF block; Q4_0 holds groups of {QK}", w.group);
    }
    let q = w.values(); // (N, K)
    let mut out = Vec::with_capacity(q.len() / QK * (2 + QK / 2));
    for (block, &s) in q.chunks_exact(QK).zip(&w.scale) {
        out.extend(f16_exact(s, what)?.to_le_bytes());
        let nib = |j: usize| (block[j] + 8) as u8;
        out.extend((0..QK / 2).map(|j| nib(j) | nib(j + QK / 2) << 4));
    }
    Ok(out)
}

/// The rows of `t` (a Linear [N, K]) as N and K.
fn rows_of(t: &TensorInfo) -> (usize, usize) {
    let k = t.dims.first().copied().unwrap_or(1) as usize;
    (t.elems() / k.max(1), k)
}

/// `t` as our int8 weight, if it is Q8_0 with one non-negative d per row and no -128.
pub fn int8_of(f: &GgufFile, t: &TensorInfo) -> Option<Int8Weight> {
    if t.kind.id != Q8_0 {
        return None;
    }
    let (n, k) = rows_of(t);
    let (mut q, mut scale) = (Vec::with_capacity(n * k), Vec::with_capacity(n));
    for row in f.bytes(t).chunks_exact(k / QK * (2 + QK)) {
        let d = &row[..2];
        for block in row.chunks_exact(2 + QK) {
            if &block[..2] != d {
                return None;
            }
            q.extend(block[2..].iter().map(|&b| b as i8));
        }
        scale.push(f16::from_le_bytes([d[0], d[1]]).to_f32());
    }
    (scale.iter().all(|&s| s >= 0.0) && !q.contains(&i8::MIN)).then_some(Int8Weight { n, k, q, scale })
}

/// `t` as our int4 weight with groups of 32, if it is Q4_0 with non-negative scales and no nibble 0.
pub fn int4_of(f: &GgufFile, t: &TensorInfo) -> Option<Int4Weight> {
    if t.kind.id != Q4_0 {
        return None;
    }
    let (n, k) = rows_of(t);
    let (mut q, mut scale) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k / QK));
    for block in f.bytes(t).chunks_exact(2 + QK / 2) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs = &block[2..];
        if d < 0.0 || qs.iter().any(|b| b & 0xF == 0 || b >> 4 == 0) {
            return None;
        }
        q.extend(qs.iter().map(|b| (b & 0xF) as i8 - 8));
        q.extend(qs.iter().map(|b| (b >> 4) as i8 - 8));
        scale.push(d);
    }
    Some(Int4Weight { n, k, group: QK, packed: int4::pack(&q), scale })
}

#[cfg(test)]
mod tests {
    use super::super::blocks::BlockQ4_0;
    use super::super::write::{write, Tensor};
    use super::super::Value;
    use super::*;
    use std::path::Path;

    fn weights(n: usize, k: usize) -> Vec<f32> {
        (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / k) as f32)).collect()
    }

    fn file(tensors: Vec<Tensor>) -> (tempfile::TempDir, GgufFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let meta = vec![
            ("general.architecture".to_string(), Value::Str("llama".into())),
            ("tokenizer.ggml.tokens".to_string(), Value::Array(vec![Value::Str("a".into()), Value::Str("é".into())])),
            ("llama.rope.freq_base".to_string(), Value::F32(1e5)),
        ];
        write(&path, Path::new("/nonexistent"), &meta, &tensors).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.metadata, meta);
        (dir, f)
    }

    #[test]
    fn our_weights_round_trip_through_q8_0_and_q4_0() {
        let (n, k) = (5, 64);
        let w = weights(n, k);
        let i8w = Int8Weight::encode_f16(&w, n, k);
        let i4w = Int4Weight::encode(&w, n, k, 32).unwrap();
        let t = |name: &str, id, data| Tensor { name: name.into(), dims: vec![k as u64, n as u64], kind: kind(id), data };
        let (_dir, f) = file(vec![t("a", Q8_0, q8_0_of(&i8w, "a").unwrap().into()), t("b", Q4_0, q4_0_of(&i4w, "b").unwrap().into())]);
        let (a, b) = (f.tensor("a").unwrap(), f.tensor("b").unwrap());
        assert_eq!(int8_of(&f, a).as_ref(), Some(&i8w));
        assert_eq!(int4_of(&f, b).as_ref(), Some(&i4w));
        // ggml's own decode of the blocks gives our values: llama.cpp computes with the same weights.
        assert_eq!(f.dequantize("a").unwrap(), i8w.decode());
        assert_eq!(f.dequantize("b").unwrap(), i4w.decode());
        assert!(int4_of(&f, a).is_none() && int8_of(&f, b).is_none());
    }

    #[test]
    fn llama_cpp_blocks_off_our_grids_are_not_taken() {
        let (n, k) = (2, 64);
        let w = weights(n, k);
        // ggml's Q4_0 maps the largest magnitude to -8 (nibble 0); its Q8_0 has a d per block.
        let q4: Vec<u8> = w.chunks_exact(32).flat_map(|b| {
            let b = BlockQ4_0::encode(b.try_into().unwrap());
            [b.d.to_le_bytes().to_vec(), b.qs.to_vec()].concat()
        }).collect();
        let q8: Vec<u8> = w.chunks_exact(32).flat_map(|b| {
            let b = super::super::blocks::BlockQ8_0::encode(b.try_into().unwrap());
            [b.d.to_le_bytes().to_vec(), b.qs.iter().map(|&q| q as u8).collect()].concat()
        }).collect();
        let t = |name: &str, id, data: Vec<u8>| Tensor { name: name.into(), dims: vec![k as u64, n as u64], kind: kind(id), data: data.into() };
        let (_dir, f) = file(vec![t("a", Q4_0, q4), t("b", Q8_0, q8)]);
        assert!(int4_of(&f, f.tensor("a").unwrap()).is_none());
        assert!(int8_of(&f, f.tensor("b").unwrap()).is_none());
    }

    #[test]
    fn scales_off_f16_and_other_groups_are_errors() {
        let w = weights(1, 64);
        let mut i8w = Int8Weight::encode(&w, 1, 64);
        i8w.scale[0] = 0.1;
        assert!(q8_0_of(&i8w, "x").unwrap_err().to_string().contains("x: scale 0.1 is not an f16 value"));
        let i4w = Int4Weight::encode(&w, 1, 64, 64).unwrap();
        assert!(q4_0_of(&i4w, "y").unwrap_err().to_string().contains("y: int4 groups of 64 have no GGUF block"));
    }
}
