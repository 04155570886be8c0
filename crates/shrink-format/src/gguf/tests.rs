use super::blocks::BlockQ8_0;
use super::*;

/// A GGUF file written by hand for the tests: metadata entries as (key, type id, value bytes), tensors as
/// (name, dims, ggml type, data).
fn gguf(version: u32, kv: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64], u32, Vec<u8>)]) -> Vec<u8> {
    let str_bytes = |s: &str| [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat();
    let mut b = [&MAGIC[..], &version.to_le_bytes(), &(tensors.len() as u64).to_le_bytes(), &(kv.len() as u64).to_le_bytes()].concat();
    for (k, t, v) in kv {
        b.extend(str_bytes(k));
        b.extend(t.to_le_bytes());
        b.extend(v);
    }
    let mut offset = 0u64;
    for (name, dims, kind, data) in tensors {
        b.extend(str_bytes(name));
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(kind.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (data.len() as u64).next_multiple_of(32);
    }
    b.resize(b.len().next_multiple_of(32), 0);
    for (_, _, _, data) in tensors {
        b.extend(data);
        b.resize(b.len().next_multiple_of(32), 0);
    }
    b
}

fn write(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn err(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
    format!("{:#}", GgufFile::open(&write(dir, bytes)).err().expect("the file should be refused"))
}

#[test]
fn reads_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<u8> = [&8u32.to_le_bytes()[..], &2u64.to_le_bytes(), &1u64.to_le_bytes(), b"a", &2u64.to_le_bytes(), "é".as_bytes()].concat();
    let kv = [
        ("general.architecture", 8, [&5u64.to_le_bytes()[..], b"llama"].concat()),
        ("llama.block_count", 4, 30u32.to_le_bytes().to_vec()),
        ("llama.rope.freq_base", 6, 100000f32.to_le_bytes().to_vec()),
        ("tokenizer.ggml.tokens", 9, tokens),
        ("general.flag", 7, vec![1]),
    ];
    let f32s: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let row: [f32; 32] = std::array::from_fn(|i| (i as f32 - 16.0) / 8.0);
    let q8: Vec<u8> = [BlockQ8_0::encode(&row).to_bytes(), BlockQ8_0::encode(&row.map(|v| -v)).to_bytes()].concat();
    let tensors = [
        ("norm.weight", &[3u64, 2][..], 0, f32s.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("token_embd.weight", &[32u64, 2][..], 8, q8),
    ];
    let f = GgufFile::open(&write(&dir, &gguf(3, &kv, &tensors))).unwrap();
    assert_eq!((f.version, f.string("general.architecture").unwrap(), f.uint("llama.block_count").unwrap()), (3, "llama", 30));
    assert_eq!(f.float("llama.rope.freq_base").unwrap(), 1e5);
    assert_eq!(f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap(), &[Value::Str("a".into()), Value::Str("é".into())]);
    assert_eq!(f.get("general.flag"), Some(&Value::Bool(true)));
    assert_eq!(f.dequantize("norm.weight").unwrap(), f32s);
    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!((t.shape(), t.kind.name, t.len), (vec![2, 32], "Q8_0", 68));
    let both = f.dequantize("token_embd.weight").unwrap();
    let second = f.dequantize_rows("token_embd.weight", &[1]).unwrap();
    assert_eq!(&both[32..], &second[..]);
    assert!(second.iter().zip(&row).all(|(a, b)| (a + b).abs() <= 1e-2), "{second:?}");
    assert!(format!("{:#}", f.dequantize_rows("token_embd.weight", &[2]).unwrap_err()).contains("row 2 of token_embd.weight, which has 2"));
    assert!(format!("{:#}", f.uint("general.architecture").unwrap_err()).contains("metadata general.architecture missing or not an integer"));
    assert!(format!("{:#}", f.tensor("output.weight").unwrap_err()).contains("m.gguf: no tensor output.weight"));
}

#[test]
fn refuses_bad_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let f32_tensor = |kind: u32| [("w", &[32u64][..], kind, vec![0u8; 128])];
    let ok = gguf(3, &[], &f32_tensor(0));
    assert!(GgufFile::open(&write(&dir, &ok)).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GGML....".to_vec(), "no GGUF magic"),
        (gguf(1, &[], &[]), "GGUF version 1: versions 2 and 3 are read"),
        (ok[..20].to_vec(), "the metadata count"),
        (ok[..ok.len() - 1].to_vec(), "tensor w: [32] F32 at offset 0 runs past the end of the file"),
        (gguf(3, &[], &f32_tensor(23)), "tensor w is IQ4_XS, which shrink does not read yet"),
        (gguf(3, &[], &f32_tensor(99)), "tensor w has ggml type 99, unknown"),
        (gguf(3, &[], &[("w", &[16u64][..], 8, vec![0u8; 64])]), "tensor w: rows of 16 values are not whole Q8_0 blocks of 32"),
        (gguf(3, &[("general.alignment", 4, 24u32.to_le_bytes().to_vec())], &[]), "general.alignment is U32(24): expected a power of two"),
        (gguf(3, &[("k", 13, vec![])], &[]), "metadata k: unknown metadata type 13"),
        (gguf(3, &[("k", 8, u64::MAX.to_le_bytes().to_vec())], &[]), "runs past the end of the file"),
    ];
    for (bytes, want) in cases {
        let e = err(&dir, &bytes);
        assert!(e.contains("m.gguf") && e.contains(want), "want {want:?} in: {e}");
    }
    // A misaligned offset, patched into the valid file (the u64 after the tensor's type).
    let mut bad = ok.clone();
    let info_end = 24 + 8 + 1 + 4 + 8 + 4; // header, name, dims count, one dim, type
    bad[info_end..info_end + 8].copy_from_slice(&4u64.to_le_bytes());
    assert!(err(&dir, &bad).contains("tensor w: offset 4 is not a multiple of the alignment 32"));
}

/// Every type against the `gguf` package's dequantization of the same random blocks
/// (testdata/blocks.gguf, written by scripts/gguf-blocks-fixture.py): NAME decoded equals NAME.expected.
#[test]
fn blocks_decode_as_gguf_py_does() {
    let f = GgufFile::open(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/blocks.gguf")).unwrap();
    let mut seen = Vec::new();
    for t in f.tensors.iter().filter(|t| !t.name.ends_with(".expected")) {
        let (got, want) = (f.dequantize(&t.name).unwrap(), f.dequantize(&format!("{}.expected", t.name)).unwrap());
        assert_eq!(got.len(), want.len(), "{}", t.name);
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{}: decoded values differ from gguf-py's", t.name);
        seen.push(t.kind.name);
    }
    assert_eq!(seen, ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16"]);
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// SmolLM2-135M-Instruct's Q4_1 file (fetched by scripts/fetch-assets.sh): its metadata, every tensor decoded, and
/// the token embeddings of golden prompt 0 equal to transformers' hidden_states[0] (its embedding output, from the
/// `gguf` package's dequantization of the same Q8_0 table).
#[test]
fn smollm2_file_matches_transformers() {
    let path = root().join("assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e:#} (run scripts/fetch-assets.sh)"));
    assert_eq!(f.string("general.architecture").unwrap(), "llama");
    let geometry: Vec<u64> = ["block_count", "embedding_length", "feed_forward_length", "attention.head_count", "attention.head_count_kv"]
        .iter()
        .map(|k| f.uint(&format!("llama.{k}")).unwrap())
        .collect();
    assert_eq!(geometry, [30, 576, 1536, 9, 3]);
    assert_eq!(f.float("llama.rope.freq_base").unwrap(), 1e5);
    assert_eq!(f.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(<[Value]>::len), Some(49152));
    let count = |kind: &str| f.tensors.iter().filter(|t| t.kind.name == kind).count();
    assert_eq!((count("Q4_1") + count("Q8_0") + count("F32"), f.tensors.len()), (f.tensors.len(), 30 * 9 + 2));
    assert_eq!(f.tensor("token_embd.weight").unwrap().kind.name, "Q8_0");
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().shape(), [576, 576]);
    assert_eq!(f.tensor("blk.0.attn_k.weight").unwrap().shape(), [192, 576]);
    for t in &f.tensors {
        let v = f.dequantize(&t.name).unwrap();
        assert!(v.len() == t.elems() && v.iter().all(|x| x.is_finite()), "{}", t.name);
    }
    // safetensors itself: the ids are I64, which TensorFile (a runtime reader) has no accessor for.
    let bytes = std::fs::read(root().join("../shared/golden/smollm2-135m/golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let want: Vec<f32> = st.tensor("p0.hidden_states.0").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(want.len(), 5 * 576);
    let rows: Vec<usize> = st.tensor("p0.input_ids").unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize).collect();
    let got = f.dequantize_rows("token_embd.weight", &rows).unwrap();
    let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "token embeddings off transformers' by {worst}");
    // The tokenizer rebuilt from the metadata gives transformers' ids for the 5 prompts (ASCII, story, code,
    // accents / CJK / emoji, the chat template with its control tokens), without a BOS.
    let tok = super::tokenizer::tokenizer(&f).unwrap();
    let prompts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join("../shared/golden/smollm2-135m/golden.json")).unwrap()).unwrap();
    for (p, prompt) in prompts["prompts"].as_array().unwrap().iter().enumerate() {
        let text = prompt["text"].as_str().unwrap();
        let want: Vec<u32> = st.tensor(&format!("p{p}.input_ids")).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
        assert_eq!(tok.encode(text, false).unwrap().get_ids(), want, "prompt {p}: {text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), text, "prompt {p} decoded");
    }
}
