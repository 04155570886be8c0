use anyhow::{bail, Result};

use crate::args::OutArgs;

/// A model file as a model folder, or an HF Llama folder as a .gguf file.
///
/// A Llama-family .gguf becomes an HF Llama folder (config.json, model.safetensors in f32, tokenizer.json and
/// tokenizer_config.json with the chat template), as transformers saves one: every tensor dequantized, named and
/// ordered as transformers expects. generate, eval and bench read the folder as they read the file.
///
/// An HF Llama folder with --out F.gguf becomes a GGUF file in f32 with the metadata llama.cpp reads (its
/// hyperparameters, and the byte-level BPE tokenizer: tokens, merges, special ids, chat template).
///
/// A BERT-family .onnx (BERT, DistilBERT, RoBERTa; fp32, fp16, weight-only int8, QDQ, quantize_dynamic or shrink's own int8 exports) becomes a shrink encoder
/// folder in f32: each parameter found by the checkpoint name the exporter kept, dequantized as the graph does, and
/// the tokenizer files beside the .onnx copied along. Every command also takes the .onnx directly where it takes a
/// folder (imported once into shrink's cache).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink convert assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --out out/smollm2-hf\n  \
    shrink eval out/smollm2-hf --task perplexity --data ../shared/data/wikitext-2/test.txt --max-tokens 4096\n  \
    shrink convert assets/models/onnx/minilm-l6-int8/model.onnx --out out/minilm-from-onnx\n  \
    shrink convert out/smollm2-hf --out out/smollm2-f32.gguf")]
pub struct Args {
    /// A .gguf file of a llama-architecture model, a .onnx file of a BERT-family encoder, or an HF Llama folder.
    model: String,
    #[command(flatten)]
    out: OutArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let path = std::path::Path::new(&self.model);
        if shrink_format::onnx::is_onnx(path) {
            let out = self.out.dir(&[&self.model])?;
            let r = shrink_format::onnx::import(path, &out)?;
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            let head = if r.classifier { " and its classifier" } else { "" };
            eprintln!("wrote a {:?} encoder of {} layers{head}: {} tensors in f32 ({:.1} MB) to {}", r.arch, r.layers, r.tensors, r.bytes as f64 / 1e6, out.path().display());
            return Ok(());
        }
        if shrink_format::arch::llama::HfConfig::is_folder(path) {
            let out = self.out.gguf_file("an HF Llama folder")?;
            let r = shrink_format::gguf::from_hf::from_hf(path, out)?;
            eprintln!("wrote {} tensors in f32 ({:.1} MB) to {}", r.tensors, r.bytes as f64 / 1e6, out.display());
            return Ok(());
        }
        if !self.model.ends_with(".gguf") {
            bail!("{}: convert reads a .gguf or a .onnx file, or an HF Llama folder", self.model);
        }
        let out = self.out.dir(&[&self.model])?;
        let r = shrink_export::hf_llama::gguf_to_hf(self.model.as_ref(), &out)?;
        eprintln!("wrote {} tensors in f32 ({:.1} MB) to {}", r.tensors, r.bytes as f64 / 1e6, out.path().display());
        Ok(())
    }
}
