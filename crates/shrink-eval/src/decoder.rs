//! A Llama-family GGUF file opened for the runtime: the model, the tokenizer rebuilt from its metadata and its
//! end-of-text token, as `generate`, `eval --task perplexity` and `bench` load it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use shrink_format::arch::llama::HfConfig;
use shrink_format::folder::{TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_format::gguf::{tokenizer::tokenizer, GgufFile};
pub use shrink_runtime::llama::KvFormat;
use shrink_runtime::llama::Llama;
use tokenizers::Tokenizer;

pub struct Decoder {
    pub path: PathBuf,
    pub llama: Llama,
    pub tok: Tokenizer,
    pub eos: Option<u32>,
    pub bos: Option<u32>,
    /// End of a chat turn when the file names one apart from EOS (`tokenizer.ggml.eot_token_id`).
    pub eot: Option<u32>,
    /// `tokenizer.chat_template`, when the file has one.
    pub chat_template: Option<String>,
    /// Bytes of the file's tensors as stored (what the model weighs on disk).
    pub weight_bytes: u64,
}

impl Decoder {
    /// A .gguf file, or an HF Llama folder (`Llama::from_hf`, its tokenizer.json and tokenizer_config.json).
    pub fn open(path: &Path) -> Result<Self> {
        if HfConfig::is_folder(path) {
            return Self::open_hf(path);
        }
        let path = &shrink_format::gguf::file_of(path).unwrap_or_else(|| path.to_path_buf());
        let file = GgufFile::open(path)?;
        let d = Self {
            path: path.to_path_buf(),
            tok: tokenizer(&file)?,
            llama: Llama::from_gguf(&file)?,
            eos: file.uint("tokenizer.ggml.eos_token_id").ok().map(|v| v as u32),
            bos: file.uint("tokenizer.ggml.bos_token_id").ok().map(|v| v as u32),
            eot: file.uint("tokenizer.ggml.eot_token_id").ok().map(|v| v as u32),
            chat_template: file.string("tokenizer.chat_template").ok().map(str::to_string),
            weight_bytes: file.tensors.iter().map(|t| t.len as u64).sum(),
        };
        shrink_io::process::release_freed_memory();
        Ok(d)
    }

    fn open_hf(dir: &Path) -> Result<Self> {
        let cfg = HfConfig::read(dir)?;
        let tok_path = dir.join(TOKENIZER_FILE);
        let tok = Tokenizer::from_file(&tok_path).map_err(|e| anyhow!("{}: cannot read the tokenizer: {e}", tok_path.display()))?;
        let tc: Option<serde_json::Value> = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        let token = |key: &str| tc.as_ref().and_then(|c| c[key].as_str()).and_then(|t| tok.token_to_id(t));
        let eos = cfg.eos.map(|v| v as u32).or_else(|| token("eos_token"));
        // transformers stops at every id of generation_config.json's eos_token_id (a number or a list): the one
        // that is not the EOS is the end of turn.
        let gen: Option<serde_json::Value> = std::fs::read_to_string(dir.join(shrink_format::folder::GENERATION_FILE)).ok().and_then(|t| serde_json::from_str(&t).ok());
        let stops: Vec<u32> = gen.map_or(vec![], |g| match &g["eos_token_id"] {
            serde_json::Value::Array(v) => v.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            v => v.as_u64().map(|x| x as u32).into_iter().collect(),
        });
        let d = Self {
            path: dir.to_path_buf(),
            llama: Llama::from_hf(dir)?,
            eot: stops.iter().copied().find(|&t| Some(t) != eos),
            eos,
            bos: cfg.bos.map(|v| v as u32).or_else(|| token("bos_token")),
            chat_template: tc.as_ref().and_then(|c| c["chat_template"].as_str()).map(str::to_string),
            weight_bytes: std::fs::metadata(dir.join(WEIGHTS_FILE)).map_or(0, |m| m.len()),
            tok,
        };
        shrink_io::process::release_freed_memory();
        Ok(d)
    }

    /// Whether `path` is a model this loads: a .gguf file (alone, or as a stage folder's one file) or an HF Llama
    /// folder.
    pub fn is_decoder(path: &Path) -> bool {
        shrink_format::gguf::file_of(path).is_some() || HfConfig::is_folder(path)
    }

    /// Token ids of `text` as is: no special tokens added (this tokenizer adds no BOS).
    pub fn encode(&self, text: &str, what: &dyn std::fmt::Display) -> Result<Vec<u32>> {
        let e = self.tok.encode(text, false).map_err(|e| anyhow!("{}: cannot tokenize {what}: {e}", self.path.display()))?;
        Ok(e.get_ids().to_vec())
    }
}
