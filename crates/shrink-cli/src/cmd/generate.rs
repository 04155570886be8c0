use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use shrink_eval::generate::{self, Request, Sampling};

use shrink_eval::decoder::KvFormat;

use crate::args::{kv_format, positive};

/// Text from a Llama-family GGUF file on the runtime (int8 / int4 where `shrink quantize` wrote it, else fp32),
/// greedy or sampled (seeded), optionally as a chat turn through the file's template; streamed, with prompt and
/// generation speeds on stderr.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink generate assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --prompt \"The capital of France is\" --max-new 32\n  \
    shrink generate assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt \"What is 2 + 2?\" --temperature 0.7 --top-p 0.9 --seed 1")]
pub struct Args {
    /// A .gguf file of a llama-architecture model with a gpt2 (byte-level BPE) tokenizer.
    model: PathBuf,
    /// The text to continue as is, or with --chat the user's message.
    #[arg(long)]
    prompt: String,
    /// Apply the file's chat template (tokenizer.chat_template) to the prompt as the user's turn, and stop at the
    /// end of the reply.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message first (without one the template may add its own default).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// New tokens at most; generation also stops at the file's EOS (or end-of-turn) token.
    #[arg(long, default_value_t = 64, value_parser = positive())]
    max_new: usize,
    /// 0: greedy; above 0, tokens are drawn from softmax(logits / temperature).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Draw from the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Draw from the most likely tokens whose probabilities first reach p together (1: all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seeds the draws: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The KV cache's keys and values in f32, or int8 with one scale per head and token (a quarter of the memory).
    #[arg(long, default_value = "f32", value_parser = kv_format)]
    kv: KvFormat,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let mut out = std::io::stdout();
        let sampling = Sampling { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, seed: self.seed };
        let r = Request { prompt: &self.prompt, chat: self.chat, system: self.system.as_deref(), max_new: self.max_new, sampling, kv: self.kv };
        let g = generate::generate(&self.model, &r, &mut |text| {
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        })?;
        println!();
        eprintln!(
            "prompt: {} tokens to the first new one in {:.1} ms ({:.1} tokens/s); generation: {} more in {:.1} ms ({:.1} tokens/s)",
            g.prompt_tokens,
            g.prompt_ms,
            g.prompt_tokens_per_s(),
            g.new_tokens.saturating_sub(1),
            g.generation_ms,
            g.generation_tokens_per_s()
        );
        Ok(())
    }
}
