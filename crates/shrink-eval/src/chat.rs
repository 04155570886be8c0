//! Chat prompts from a GGUF file's own template (`tokenizer.chat_template`: Jinja, rendered as transformers'
//! `apply_chat_template` does, with the assistant's turn opened) and the tokens a reply ends at.

use anyhow::{anyhow, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// `template` over `messages`, ending with the opening of the assistant's turn (`add_generation_prompt`). `bos`
/// and `eos` are the file's special tokens as text, which some templates name.
pub fn render(template: &str, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // What transformers gives templates besides the messages.
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| anyhow!("the chat template does not parse: {e}"))?;
    let ctx = minijinja::context! { messages => messages, add_generation_prompt => true, bos_token => bos, eos_token => eos };
    env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| anyhow!("the chat template fails on these messages: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_every_turn_and_opens_the_reply() {
        let got = render(CHATML, &[Message::new("system", "Be brief."), Message::new("user", "Hi")], "", "").unwrap();
        assert_eq!(got, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let err = render("{{ raise_exception('roles must alternate') }}", &[], "", "").unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
        assert!(render("{% for %}", &[], "", "").unwrap_err().to_string().contains("does not parse"));
    }
}
