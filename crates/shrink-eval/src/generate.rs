//! `shrink generate`: greedy text from a Llama-family GGUF file on the runtime, streamed as it is decoded, with
//! prompt and generation speeds timed as llama.cpp reports them (time to the first token, then per token).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::decoder::Decoder;

#[derive(Debug, Serialize)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Prompt processing: the prompt's forward and the first token.
    pub prompt_ms: f64,
    /// Every token after the first.
    pub generation_ms: f64,
}

impl Generated {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prompt_ms / 1e3)
    }

    pub fn generation_tokens_per_s(&self) -> f64 {
        (self.new_tokens.saturating_sub(1)) as f64 / (self.generation_ms / 1e3)
    }
}

/// Greedy continuation of `prompt` (no template applied), at most `max_new` tokens or up to the file's EOS token;
/// `on_text` receives each complete piece of text as soon as it decodes.
pub fn generate(model: &Path, prompt: &str, max_new: usize, on_text: &mut dyn FnMut(&str)) -> Result<Generated> {
    let d = Decoder::open(model)?;
    let ids = d.encode(prompt, &"the prompt")?;
    let Decoder { llama, tok, eos, .. } = &d;
    // `shown`: the tokens whose text is out. Byte-level BPE maps each token to its own bytes, so the rest decodes
    // alone; it can split a character across tokens, so text goes out only once it decodes whole.
    let (start, mut first, mut new, mut shown) = (Instant::now(), None, Vec::new(), 0);
    llama.greedy(&ids, max_new, *eos, &mut |id| {
        first.get_or_insert_with(Instant::now);
        new.push(id);
        if let Ok(text) = tok.decode(&new[shown..], false) {
            if !text.is_empty() && !text.ends_with('\u{FFFD}') {
                on_text(&text);
                shown = new.len();
            }
        }
    })?;
    let end = Instant::now();
    let first = first.unwrap_or(end);
    Ok(Generated {
        text: tok.decode(&new, false).map_err(|e| anyhow::anyhow!("cannot decode the output: {e}"))?,
        prompt_tokens: ids.len(),
        new_tokens: new.len(),
        prompt_ms: (first - start).as_secs_f64() * 1e3,
        generation_ms: (end - first).as_secs_f64() * 1e3,
    })
}
