//! Sentence embeddings for a list of texts, and writing them as JSONL or .npy.

use std::path::Path;

use anyhow::{bail, Result};
use shrink_model::tokenizer::pad;
use shrink_runtime::Engine;

use shrink_io::{data, events};

/// `shrink embed`: the texts of `input` (.txt lines, or `text_field` of .jsonl rows) embedded by `model` and
/// written to `output` (.npy or .jsonl, checked first). Returns (texts, dimensions).
pub fn embed_file(model: &str, input: &Path, output: &Path, text_field: &str, max_len: Option<usize>, batch: usize, threads: usize) -> Result<(usize, usize)> {
    let format = OutputFormat::of(output)?;
    let texts = data::read_texts(input, text_field)?;
    let mut engine = shrink_io::model::engine(model, max_len, threads)?;
    let emb = embed_texts(&mut engine, input, &texts, batch, "embed")?;
    write_embeddings(output, format, &emb)?;
    Ok((emb.len(), emb[0].len()))
}

/// Mean-pooled, L2-normalised embeddings (N, C) in input order. Texts are batched by token length so little
/// padding is computed. `path`: the file the texts are rows of, for errors.
pub fn embed_texts(engine: &mut Engine, path: &Path, texts: &[String], batch: usize, what: &str) -> Result<Vec<Vec<f32>>> {
    let encoded = texts
        .iter()
        .enumerate()
        .map(|(i, t)| engine.tokenizer.encode(t).map_err(|e| e.context(format!("{}: row {}", path.display(), i + 1))))
        .collect::<Result<Vec<_>>>()?;
    let c = engine.config.hidden_size;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| encoded[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    let pb = events::bar(texts.len(), what);
    for chunk in order.chunks(batch.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let emb = engine.embed_batch(&pad(&seqs, 0)).map_err(|e| data::name_text(e, path, texts, |k| chunk[k]))?; // (B, C)
        for (&i, e) in chunk.iter().zip(emb.chunks_exact(c)) {
            out[i] = e.to_vec();
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// What `embed` writes, chosen by the output's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// float32, shape (N, C).
    Npy,
    /// `{"embedding": [...]}` per line.
    Jsonl,
}

impl OutputFormat {
    /// From `path`'s extension; checked before anything is computed.
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Ok(Self::Npy),
            Some("jsonl") => Ok(Self::Jsonl),
            _ => bail!("{}: output must end in .jsonl or .npy", path.display()),
        }
    }
}

/// Writes `rows` to `path` as `format`, atomically.
pub fn write_embeddings(path: &Path, format: OutputFormat, rows: &[Vec<f32>]) -> Result<()> {
    let bytes = match format {
        OutputFormat::Npy => npy_bytes(rows)?,
        OutputFormat::Jsonl => {
            let mut s = String::new();
            for r in rows {
                s.push_str(&serde_json::to_string(&serde_json::json!({ "embedding": r }))?);
                s.push('\n');
            }
            s.into_bytes()
        }
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
