//! `shrink generate`: text from a Llama-family GGUF file on the runtime, greedy or sampled (`sample.rs`), optionally
//! as a chat turn through the file's own template, streamed as it is decoded, with prompt and generation speeds
//! timed as llama.cpp reports them (time to the first token, then per token).

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};
use serde::Serialize;
pub use shrink_runtime::sample::Sampling;
use shrink_runtime::sample::Sampler;

use crate::chat::{self, Message};
use crate::decoder::Decoder;

pub struct Request<'a> {
    pub prompt: &'a str,
    /// Send the prompt as the user's turn through the file's chat template (with `system` first if given) and stop
    /// at the end of the assistant's turn.
    pub chat: bool,
    pub system: Option<&'a str>,
    pub max_new: usize,
    pub sampling: Sampling,
    /// The KV cache's format.
    pub kv: shrink_runtime::llama::KvFormat,
}

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

/// The continuation `r` asks for, at most `r.max_new` tokens or up to the file's EOS (or end-of-turn) token;
/// `on_text` receives each complete piece of text as soon as it decodes.
pub fn generate(model: &Path, r: &Request, on_text: &mut dyn FnMut(&str)) -> Result<Generated> {
    let mut d = Decoder::open(model)?;
    d.llama.kv = r.kv;
    d.llama.tune_decode_threads()?;
    let mut sampler = Sampler::new(r.sampling)?;
    let text = match r.chat {
        false => r.prompt.to_string(),
        true => {
            let template = d.chat_template.as_deref().ok_or_else(|| anyhow!("{}: --chat, but the file has no tokenizer.chat_template", model.display()))?;
            let special = |id: Option<u32>| id.and_then(|i| d.tok.id_to_token(i)).unwrap_or_default();
            let mut messages: Vec<Message> = r.system.map(|s| Message::new("system", s)).into_iter().collect();
            messages.push(Message::new("user", r.prompt));
            chat::render(template, &messages, &special(d.bos), &special(d.eos)).map_err(|e| e.context(model.display().to_string()))?
        }
    };
    let ids = d.encode(&text, &"the prompt")?;
    let Decoder { llama, tok, eos, eot, .. } = &d;
    let stops: Vec<u32> = [*eos, *eot].into_iter().flatten().collect();
    // `shown`: the tokens whose text is out. Byte-level BPE maps each token to its own bytes, so the rest decodes
    // alone; it can split a character across tokens, so text goes out only once it decodes whole.
    // A chat reply's end-of-turn token is not part of its text.
    let (start, mut first, mut new, mut shown, mut count) = (Instant::now(), None, Vec::new(), 0, 0);
    llama.decode(&ids, r.max_new, &stops, &mut |logits| sampler.pick(logits), &mut |id| {
        first.get_or_insert_with(Instant::now);
        count += 1;
        if r.chat && stops.contains(&id) {
            return;
        }
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
        new_tokens: count,
        prompt_ms: (first - start).as_secs_f64() * 1e3,
        generation_ms: (end - first).as_secs_f64() * 1e3,
    })
}
