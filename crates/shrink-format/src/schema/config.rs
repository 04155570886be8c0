//! `config.json` of a BERT-family checkpoint, plus the sections shrink adds: `shrink` (task head) and
//! `quantization` (how a compressed folder stores its weights).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::arch::{self, Arch, Part, Positions};
use crate::schema::{Attention, PositionExtension, QuantSection, Step};

/// Mirrors the Hugging Face `BertConfig` fields we use; unknown fields are kept so a saved config round-trips.
/// Other families' configs are read through their `arch` row into these fields (DistilBERT's `dim` is
/// `hidden_size`) and written back in their own keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(remote = "Self")]
pub struct Config {
    pub model_type: String,
    /// Parsed from `model_type` when the config is read.
    #[serde(skip)]
    arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Heads kept per layer after structured pruning (absent: `num_attention_heads` everywhere). D stays
    /// hidden_size / num_attention_heads, so layer l's attention width A_l is `layer_heads[l] * D`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_heads: Option<Vec<usize>>,
    /// FFN width per layer after structured pruning (absent: `intermediate_size` everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_intermediate_sizes: Option<Vec<usize>>,
    /// Attention per layer (absent: full everywhere); `shrink attention` writes it.
    #[serde(default, rename = "shrink_attention", skip_serializing_if = "Option::is_none")]
    pub layer_attention: Option<Vec<Attention>>,
    /// Set when the position table was lengthened past what the checkpoint learned.
    #[serde(default, rename = "shrink_positions", skip_serializing_if = "Option::is_none")]
    pub position_extension: Option<PositionExtension>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f32,
    pub max_position_embeddings: usize,
    /// 0 for families without a token-type table (DistilBERT).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// Label names of a classification head, HF style (`{"0": "business", ...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    /// What shrink added on top of the encoder (a head, how it pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrink: Option<ShrinkSection>,
    /// Present only in folders written by `shrink quantize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantSection>,
    /// Every shrink stage that made this folder, oldest first.
    #[serde(default, rename = "shrink_lineage", skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<Step>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The task head shrink trains: mean pooling over the attention mask, then `classifier` (Linear C -> num labels).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShrinkSection {
    pub pooling: String,
    pub head: String,
    /// `max_len` the model was fine-tuned with; commands default to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f32 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

/// The family's own keys in, BERT's fields out: `arch::Arch::read_config` before the derived reader.
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::deserialize(d)?;
        // Without a string model_type the derived reader below names the problem.
        let arch = match map.get("model_type").and_then(Value::as_str) {
            Some(t) => Arch::parse(t).map_err(<D::Error as de::Error>::custom)?,
            None => Arch::Bert,
        };
        arch.read_config(&mut map).map_err(<D::Error as de::Error>::custom)?;
        let mut cfg = Config::deserialize(Value::Object(map)).map_err(<D::Error as de::Error>::custom)?;
        cfg.arch = arch;
        Ok(cfg)
    }
}

/// Written back in the family's own keys, sorted as transformers writes config.json.
impl Serialize for Config {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Through JSON text, not serde_json's Value serializer, which widens an f32 0.1 to 0.10000000149011612.
        struct Derived<'a>(&'a Config);
        impl Serialize for Derived<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                Config::serialize(self.0, s)
            }
        }
        let text = serde_json::to_string(&Derived(self)).map_err(<S::Error as ser::Error>::custom)?;
        let mut v: Value = serde_json::from_str(&text).map_err(<S::Error as ser::Error>::custom)?;
        if let Value::Object(map) = &mut v {
            self.arch.write_config(map);
        }
        v.serialize(s)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::folder::read_regular(path, "config")?;
        Self::parse(&text).with_context(|| path.display().to_string())
    }

    /// config.json text -> a validated config (what `load` does after reading the file).
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Config = serde_json::from_str(text).context("not a valid BERT-family config.json")?;
        cfg.validate().context("unsupported config")?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        let types = self.arch.spec().names.token_type.is_some();
        if types && self.type_vocab_size == 0 {
            bail!("type_vocab_size must be positive");
        }
        if !types && self.type_vocab_size != 0 {
            bail!("type_vocab_size is {}, but {} has no token-type table", self.type_vocab_size, self.model_type);
        }
        if self.extra.get("sinusoidal_pos_embds").is_some_and(|v| v != &Value::Bool(false)) {
            bail!("sinusoidal_pos_embds is not supported (expected a learned position table)");
        }
        if self.max_tokens() == 0 {
            bail!(
                "max_position_embeddings {} leaves no position for a token (positions start after pad_token_id {})",
                self.max_position_embeddings,
                self.pad_token_id
            );
        }
        // LayerNorm divides by sqrt(var + eps): eps <= 0 can take the root of a negative (NaN), a huge one flattens
        // every hidden state to its bias. `!(..)` also rejects NaN.
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            bail!("layer_norm_eps is {:?}; it must be finite, above 0 and below 1 (BERT uses 1e-12)", self.layer_norm_eps);
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads);
        }
        for (name, list, max) in [
            ("layer_heads", &self.layer_heads, self.num_attention_heads),
            ("layer_intermediate_sizes", &self.layer_intermediate_sizes, usize::MAX),
        ] {
            let Some(list) = list else { continue };
            if list.len() != self.num_hidden_layers {
                bail!("{name} has {} entries but num_hidden_layers is {}", list.len(), self.num_hidden_layers);
            }
            // A layer with no heads or no neurons would be a residual pass-through: drop the layer instead.
            if let Some(l) = list.iter().position(|&v| v == 0) {
                bail!("{name}[{l}] is 0: a layer keeps at least one (remove the whole layer instead of emptying it)");
            }
            if let Some(l) = list.iter().position(|&v| v > max) {
                bail!("{name}[{l}] = {} exceeds num_attention_heads {max}", list[l]);
            }
        }
        if let Some(list) = &self.layer_attention {
            if list.len() != self.num_hidden_layers {
                bail!("shrink_attention has {} entries but num_hidden_layers is {}", list.len(), self.num_hidden_layers);
            }
            for (l, a) in list.iter().enumerate() {
                a.validate(l)?;
            }
        }
        // A number past f32's range parses as inf, which a folder writer would save as null; dropouts are
        // probabilities.
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{name} = {p} is not a probability in [0, 1]");
            }
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_python") {
            bail!("hidden_act {:?} is not supported (expected \"gelu\", the exact erf GELU)", self.hidden_act);
        }
        if self.position_embedding_type != "absolute" {
            bail!("position_embedding_type {:?} is not supported (expected \"absolute\")", self.position_embedding_type);
        }
        Ok(())
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// How this model numbers positions (RoBERTa's start after `pad_token_id`).
    pub fn positions(&self) -> Positions {
        if self.arch.spec().positions_after_padding {
            Positions::AfterPadding(self.pad_token_id)
        } else {
            Positions::FromZero
        }
    }

    /// Longest sequence the position table numbers: `max_position_embeddings`, less RoBERTa's offset.
    pub fn max_tokens(&self) -> usize {
        self.positions().max_tokens(self.max_position_embeddings)
    }

    /// A weights file holding a layer past `num_hidden_layers` means config.json does not describe it.
    pub fn check_layer_count(&self, file: &Path, contains: impl Fn(&str) -> bool) -> Result<()> {
        if contains(&format!("{}.weight", arch::layer(self.num_hidden_layers, Part::FfnOut))) {
            bail!(
                "{}: holds more encoder layers than num_hidden_layers = {} in config.json",
                file.display(),
                self.num_hidden_layers
            );
        }
        Ok(())
    }

    /// D: width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// H_l: attention heads of layer `l`.
    pub fn heads(&self, l: usize) -> usize {
        self.layer_heads.as_ref().map_or(self.num_attention_heads, |v| v[l])
    }

    /// A_l = H_l * D: width of layer `l`'s Q, K, V and of the attention context.
    pub fn attention_width(&self, l: usize) -> usize {
        self.heads(l) * self.head_dim()
    }

    /// Layer `l`'s attention (full without a `shrink_attention` list).
    pub fn attention(&self, l: usize) -> Attention {
        self.layer_attention.as_ref().map_or(Attention::Full, |v| v[l])
    }

    /// Whether any layer computes something other than full attention.
    pub fn has_efficient_attention(&self) -> bool {
        self.layer_attention.as_ref().is_some_and(|v| v.iter().any(|a| *a != Attention::Full))
    }

    /// F_l: FFN width of layer `l`.
    pub fn ffn(&self, l: usize) -> usize {
        self.layer_intermediate_sizes.as_ref().map_or(self.intermediate_size, |v| v[l])
    }

    /// (N outputs, K inputs) of layer `l`'s Linear `part` with that layer's widths; None for the LayerNorms.
    pub fn linear_shape(&self, l: usize, part: Part) -> Option<(usize, usize)> {
        let (c, a, f) = (self.hidden_size, self.attention_width(l), self.ffn(l));
        match part {
            Part::Query | Part::Key | Part::Value => Some((a, c)),
            Part::AttnOut => Some((c, a)),
            Part::FfnIn => Some((f, c)),
            Part::FfnOut => Some((c, f)),
            Part::AttnNorm | Part::OutNorm => None,
        }
    }

    /// Every encoder Linear as (layer, canonical name, N outputs, K inputs) in checkpoint order, with each layer's
    /// own widths.
    pub fn encoder_linears(&self) -> Vec<(usize, String, usize, usize)> {
        (0..self.num_hidden_layers)
            .flat_map(|l| Part::ALL.into_iter().filter_map(move |p| self.linear_shape(l, p).map(|(n, k)| (l, arch::layer(l, p), n, k))))
            .collect()
    }

    /// Label names in index order, when the checkpoint carries a classification head.
    pub fn labels(&self) -> Option<Vec<String>> {
        let map = self.id2label.as_ref()?;
        let mut v: Vec<(usize, String)> = map.iter().filter_map(|(k, l)| Some((k.parse().ok()?, l.clone()))).collect();
        v.sort();
        Some(v.into_iter().map(|(_, l)| l).collect())
    }

    pub fn set_labels(&mut self, labels: &[String]) {
        self.id2label = Some(labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect());
        self.label2id = Some(labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(extra: &str) -> String {
        format!(
            r#"{{"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "max_position_embeddings": 4{extra}}}"#
        )
    }

    /// Found by fuzz/fuzz_targets/config.rs's round trip: 1e39 parsed as an f32 inf, serialised as null, and the
    /// written config.json no longer loaded.
    #[test]
    fn out_of_range_dropout_and_eps_are_errors_and_a_loaded_config_round_trips() {
        for (extra, want) in [
            (r#", "hidden_dropout_prob": 1e39"#, "hidden_dropout_prob = inf is not a probability"),
            (r#", "attention_probs_dropout_prob": -0.5"#, "attention_probs_dropout_prob = -0.5"),
            (r#", "layer_norm_eps": 0"#, "layer_norm_eps is 0.0; it must be finite, above 0"),
            (r#", "layer_norm_eps": 1e999"#, "not a valid BERT-family config.json"),
        ] {
            let err = format!("{:#}", Config::parse(&minimal(extra)).unwrap_err());
            assert!(err.contains(want), "{extra}: {err}");
        }
        for (extra, want) in [
            (r#", "shrink_attention": [{"kind": "full"}, {"kind": "full"}]"#, "shrink_attention has 2 entries but num_hidden_layers is 1"),
            (r#", "shrink_attention": [{"kind": "sliding", "window": 0}]"#, "shrink_attention[0]: window 0"),
        ] {
            let err = format!("{:#}", Config::parse(&minimal(extra)).unwrap_err());
            assert!(err.contains(want), "{extra}: {err}");
        }
        let cfg = Config::parse(&minimal(r#", "shrink_attention": [{"kind": "linear", "feature_map": "elu"}]"#)).unwrap();
        assert!(cfg.has_efficient_attention() && matches!(cfg.attention(0), crate::schema::Attention::Linear { .. }));
        assert_eq!(Config::parse(&serde_json::to_string(&cfg).unwrap()).unwrap(), cfg);
        let cfg = Config::parse(&minimal(r#", "layer_norm_eps": 1e-7, "hidden_dropout_prob": 1"#)).unwrap();
        assert_eq!(Config::parse(&serde_json::to_string(&cfg).unwrap()).unwrap(), cfg);
        // f32 fields are written as they read, not widened (0.10000000149011612).
        let text = serde_json::to_string(&Config::parse(&minimal(r#", "hidden_dropout_prob": 0.1"#)).unwrap()).unwrap();
        assert!(text.contains(r#""hidden_dropout_prob":0.1,"#), "{text}");
    }
}
