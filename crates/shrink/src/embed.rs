//! Sentence embeddings for a list of texts, and writing them as JSONL or .npy.

use std::path::Path;

use anyhow::{bail, Context, Result};
use shrink_model::tokenizer::pad;
use shrink_runtime::Engine;

use crate::progress;

/// Mean-pooled, L2-normalised embeddings (N, C) in input order. Texts are batched by token length so little
/// padding is computed.
pub fn embed_texts(engine: &mut Engine, texts: &[String], batch: usize, what: &str) -> Result<Vec<Vec<f32>>> {
    let encoded = texts
        .iter()
        .enumerate()
        .map(|(i, t)| engine.tokenizer.encode(t).map_err(|e| e.context(format!("text {}", i + 1))))
        .collect::<Result<Vec<_>>>()?;
    let c = engine.config.hidden_size;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| encoded[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    let pb = progress::bar(texts.len(), what);
    for chunk in order.chunks(batch.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        // Sequence i of an error is the i-th of these texts.
        let numbers = || chunk.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(", ");
        let emb = engine.embed_batch(&pad(&seqs, 0)).with_context(|| format!("texts {}", numbers()))?; // (B, C)
        for (&i, e) in chunk.iter().zip(emb.chunks_exact(c)) {
            out[i] = e.to_vec();
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// `.npy` (float32, shape (N, C)) or JSONL (`{"embedding": [...]}` per line), chosen by extension; atomic.
pub fn write_embeddings(path: &Path, rows: &[Vec<f32>]) -> Result<()> {
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => npy_bytes(rows)?,
        Some("jsonl") => {
            let mut s = String::new();
            for r in rows {
                s.push_str(&serde_json::to_string(&serde_json::json!({ "embedding": r }))?);
                s.push('\n');
            }
            s.into_bytes()
        }
        _ => bail!("{}: output must end in .jsonl or .npy", path.display()),
    };
    shrink_model::checkpoint::write_atomic(path, &bytes)
}

/// NumPy format 1.0: magic, header dict padded to a multiple of 64 bytes, then little-endian f32 data.
fn npy_bytes(rows: &[Vec<f32>]) -> Result<Vec<u8>> {
    let c = rows.first().map_or(0, Vec::len);
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows.len(), c);
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for r in rows {
        out.extend(r.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn npy_header_is_aligned_and_well_formed() {
        let b = super::npy_bytes(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]).unwrap();
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (3, 2)") && header.ends_with('\n'));
        assert_eq!(b.len(), 10 + hlen + 6 * 4);
        assert_eq!(f32::from_le_bytes(b[10 + hlen..14 + hlen].try_into().unwrap()), 1.0);
    }
}
