//! The architecture table: everything that differs between the encoder families shrink runs, one file each
//! (`bert.rs`, `distilbert.rs`, `roberta.rs`). A row says how config.json names the common dimensions, which
//! base-model prefix task checkpoints put in front of the tensors, the module path of every parameter, and how
//! position ids are counted. The maths they share (post-norm layers: attention, residual + LayerNorm, GELU FFN,
//! residual + LayerNorm) is written once in the candle model and the runtime.
//!
//! Names: shrink's own (canonical) spelling is BERT's HF one (`encoder.layer.{l}.attention.self.query`).
//! `canonical` maps a checkpoint's names into it when a weights file is opened, so the loaders, quantize and
//! inspect only ever see BERT's names; folders shrink writes keep them (with `model_type` and the checkpoint's own
//! config fields), and reload through the same table.
//!
//! Adding an architecture with this layout (say ELECTRA or XLM-R variants): a file with its `Spec`, a line in
//! `Arch`. One that changes the layout (Llama: RMSNorm, pre-norm, a gated FFN, rotary positions; ViT: patch
//! embeddings) also adds `Part`s / `Positions` rules and the code that runs them.

pub mod bert;
pub mod distilbert;
pub mod llama;
pub mod roberta;

use anyhow::{bail, Result};
use serde_json::{Map, Value};

/// A supported encoder family, from config.json's `model_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    #[default]
    Bert,
    DistilBert,
    /// RoBERTa and XLM-RoBERTa (the same layout and names).
    Roberta,
}

/// One row of the table.
pub struct Spec {
    /// config.json `model_type` values this row reads.
    pub model_types: &'static [&'static str],
    /// What task checkpoints (`BertForSequenceClassification`, ...) put before the base model's names.
    pub prefix: &'static str,
    pub names: Names,
    /// (own config.json key, BERT's key) for the dimensions the family names differently.
    pub renames: &'static [(&'static str, &'static str)],
    /// BERT config fields the family does not have, with the value its code fixes them at.
    pub implied: fn() -> Vec<(&'static str, Value)>,
    /// RoBERTa counts positions after `padding_idx` (`pad_token_id`); BERT and DistilBERT from 0.
    pub positions_after_padding: bool,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Bert, Arch::DistilBert, Arch::Roberta];

    pub fn spec(self) -> &'static Spec {
        match self {
            Arch::Bert => &bert::SPEC,
            Arch::DistilBert => &distilbert::SPEC,
            Arch::Roberta => &roberta::SPEC,
        }
    }

    pub fn parse(model_type: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|a| a.spec().model_types.contains(&model_type)) {
            Some(a) => Ok(a),
            None => {
                let all: Vec<&str> = Self::ALL.iter().flat_map(|a| a.spec().model_types).copied().collect();
                bail!("model_type is {model_type:?}; shrink supports {}", all.join(", "))
            }
        }
    }

    /// A checkpoint's config.json object in BERT's keys: renamed dimensions, implied fields filled in.
    pub fn read_config(self, map: &mut Map<String, Value>) -> Result<()> {
        let spec = self.spec();
        for &(own, bert) in spec.renames {
            if map.contains_key(bert) && map.contains_key(own) {
                bail!("both {own:?} and {bert:?} are set; a {} config names it {own:?}", spec.model_types[0]);
            }
            if let Some(v) = map.remove(own) {
                map.insert(bert.to_string(), v);
            }
        }
        // The family's code ignores these keys (DistilBERT's LayerNorm eps is always 1e-12), so do we.
        map.extend((spec.implied)().into_iter().map(|(k, v)| (k.to_string(), v)));
        Ok(())
    }

    /// The inverse of `read_config`: a config written back in the family's own keys.
    pub fn write_config(self, map: &mut Map<String, Value>) {
        let spec = self.spec();
        for (k, _) in (spec.implied)() {
            map.remove(k);
        }
        for &(own, bert) in spec.renames {
            if let Some(v) = map.remove(bert) {
                map.insert(own.to_string(), v);
            }
        }
    }
}

/// The module path of every parameter, as the family's checkpoints spell it (without the task prefix). A module's
/// tensors are `{path}.weight`, `{path}.bias` and, in quantized folders, further leaves (`{path}.weight_scale`).
pub struct Names {
    pub word: &'static str,
    pub position: &'static str,
    /// None: the family has no token-type table (the loaders add nothing in its place).
    pub token_type: Option<&'static str>,
    pub embed_norm: &'static str,
    /// Layer l's modules live under `{layers}.{l}`.
    pub layers: &'static str,
    /// Paths under the layer, in `Part::ALL` order.
    pub parts: [&'static str; 8],
}

/// The parameters of one encoder layer, in checkpoint order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Query,
    Key,
    Value,
    AttnOut,
    /// LayerNorm after attention + residual.
    AttnNorm,
    FfnIn,
    FfnOut,
    /// LayerNorm after the FFN + residual.
    OutNorm,
}

impl Part {
    pub const ALL: [Part; 8] =
        [Part::Query, Part::Key, Part::Value, Part::AttnOut, Part::AttnNorm, Part::FfnIn, Part::FfnOut, Part::OutNorm];
}

/// A module of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    Word,
    Position,
    TokenType,
    EmbedNorm,
    Layer(usize, Part),
}

/// `prefix.name`, as candle's `vb.pp(..)` composes paths.
fn pp(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

impl Names {
    /// The module's path in this spelling; None when the family lacks it.
    pub fn path(&self, m: Module) -> Option<String> {
        Some(match m {
            Module::Word => self.word.to_string(),
            Module::Position => self.position.to_string(),
            Module::TokenType => self.token_type?.to_string(),
            Module::EmbedNorm => self.embed_norm.to_string(),
            Module::Layer(l, p) => pp(&pp(self.layers, &l.to_string()), self.parts[p as usize]),
        })
    }

    /// The module `name` (a full tensor name) belongs to, and the leaf after its path.
    fn find<'a>(&self, name: &'a str) -> Option<(Module, &'a str)> {
        let leaf = |path: &str| name.strip_prefix(path)?.strip_prefix('.');
        let embed = [(Module::Word, self.word), (Module::Position, self.position), (Module::EmbedNorm, self.embed_norm)];
        let types = self.token_type.map(|t| (Module::TokenType, t));
        if let Some(found) = embed.into_iter().chain(types).find_map(|(m, p)| Some((m, leaf(p)?))) {
            return Some(found);
        }
        let rest = leaf(self.layers)?;
        let (l, rest) = rest.split_once('.')?;
        let l = l.parse().ok()?;
        Part::ALL.into_iter().find_map(|p| Some((Module::Layer(l, p), rest.strip_prefix(self.parts[p as usize])?.strip_prefix('.')?)))
    }
}

/// The canonical (BERT) path of a module: what the loaders ask a weights file for.
pub fn name(m: Module) -> String {
    // BERT's row has every module.
    bert::SPEC.names.path(m).unwrap_or_default()
}

/// Canonical path of layer `l`'s `part`.
pub fn layer(l: usize, part: Part) -> String {
    name(Module::Layer(l, part))
}

/// What a learned (Hedgehog) feature map of linear attention applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Query,
    Key,
}

impl Side {
    pub const ALL: [Side; 2] = [Side::Query, Side::Key];
}

/// Path of layer `l`'s learned feature map for `side`: `{path}.weight` (H, D, D) and `{path}.bias` (H, D). Only
/// shrink writes these, so every family's folders spell them this one way, beside BERT's query and key.
pub fn feature_map(l: usize, side: Side) -> String {
    let which = match side {
        Side::Query => "q",
        Side::Key => "k",
    };
    format!("{}.{l}.attention.self.feature_map_{which}", bert::NAMES.layers)
}

/// A checkpoint's tensor name in the canonical spelling: any family's task prefix (`bert.`, `distilbert.`,
/// `roberta.`) dropped, old `LayerNorm.gamma` / `beta` leaves renamed `weight` / `bias`, and another family's module
/// path (`transformer.layer.0.attention.q_lin`) replaced by BERT's. Names of no known module (`classifier`,
/// `pooler.*`) pass through. Every family is tried, not only the config's: files are opened before (and, in
/// inspect, without) their config, and no two families' paths collide; a file that spells one tensor twice is
/// refused by `TensorFile`.
pub fn canonical(name: &str) -> String {
    let n = Arch::ALL.iter().find_map(|a| name.strip_prefix(a.spec().prefix)?.strip_prefix('.')).unwrap_or(name);
    let n = match Arch::ALL.iter().find_map(|a| a.spec().names.find(n)) {
        Some((m, leaf)) => pp(&self::name(m), leaf),
        None => n.to_string(),
    };
    if let Some(stem) = n.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = n.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        n
    }
}

/// Where a Linear's input is seen: the Linears of one encoder layer by the input they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// Query, key and value (one stacked GEMM in the runtime) read the layer input.
    Qkv,
    /// The attention output projection reads the attention context.
    AttnOut,
    /// The FFN's first Linear reads the post-attention LayerNorm output.
    Inter,
    /// The FFN's second Linear reads the GELU output.
    Out,
}

impl Site {
    pub const ALL: [Site; 4] = [Site::Qkv, Site::AttnOut, Site::Inter, Site::Out];

    /// This site's Linears, checkpoint order.
    pub fn parts(self) -> &'static [Part] {
        match self {
            Site::Qkv => &[Part::Query, Part::Key, Part::Value],
            Site::AttnOut => &[Part::AttnOut],
            Site::Inter => &[Part::FfnIn],
            Site::Out => &[Part::FfnOut],
        }
    }

    /// Canonical names of this site's Linears in layer `l`.
    pub fn names(self, l: usize) -> Vec<String> {
        self.parts().iter().map(|&p| layer(l, p)).collect()
    }
}

/// How a token's position id is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// 0, 1, 2, ... along the sequence, padding included (BERT, DistilBERT).
    FromZero,
    /// RoBERTa: real tokens count from `pad + 1`, padding takes `pad` (the table's padding_idx row). HF derives
    /// "real" from ids != pad; the mask says the same for every batch padded with the pad id, and is what the
    /// loaders trust for padding everywhere else.
    AfterPadding(usize),
}

impl Positions {
    /// Position ids of one sequence from its 0/1 mask.
    pub fn of(self, mask: &[u32]) -> impl Iterator<Item = usize> + '_ {
        let mut real = 0;
        mask.iter().enumerate().map(move |(i, &m)| match self {
            Positions::FromZero => i,
            Positions::AfterPadding(pad) if m == 0 => pad,
            Positions::AfterPadding(pad) => {
                real += 1;
                pad + real
            }
        })
    }

    /// Longest sequence a position table of `rows` rows can number.
    pub fn max_tokens(self, rows: usize) -> usize {
        match self {
            Positions::FromZero => rows,
            Positions::AfterPadding(pad) => rows.saturating_sub(pad + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_canonical_spelling() {
        for (own, want) in [
            ("distilbert.transformer.layer.2.attention.q_lin.weight", "encoder.layer.2.attention.self.query.weight"),
            ("transformer.layer.0.attention.out_lin.bias", "encoder.layer.0.attention.output.dense.bias"),
            ("transformer.layer.1.sa_layer_norm.weight", "encoder.layer.1.attention.output.LayerNorm.weight"),
            ("transformer.layer.1.ffn.lin1.weight_scale", "encoder.layer.1.intermediate.dense.weight_scale"),
            ("transformer.layer.11.output_layer_norm.bias", "encoder.layer.11.output.LayerNorm.bias"),
            ("distilbert.embeddings.LayerNorm.weight", "embeddings.LayerNorm.weight"),
            ("roberta.encoder.layer.0.output.dense.weight", "encoder.layer.0.output.dense.weight"),
            ("bert.embeddings.LayerNorm.gamma", "embeddings.LayerNorm.weight"),
            ("encoder.layer.3.attention.self.key.bias", "encoder.layer.3.attention.self.key.bias"),
            ("classifier.weight", "classifier.weight"),
            ("transformer.layer.x.ffn.lin1.weight", "transformer.layer.x.ffn.lin1.weight"),
            // shrink's own feature maps are no module of any family's table: they pass through as written.
            ("encoder.layer.4.attention.self.feature_map_k.weight", "encoder.layer.4.attention.self.feature_map_k.weight"),
        ] {
            assert_eq!(canonical(own), want, "{own}");
        }
        assert_eq!(feature_map(4, Side::Key), "encoder.layer.4.attention.self.feature_map_k");
    }

    #[test]
    fn every_family_names_every_module_it_has_once() {
        for a in Arch::ALL {
            let names = &a.spec().names;
            let mut seen = std::collections::HashSet::new();
            let mods = [Module::Word, Module::Position, Module::TokenType, Module::EmbedNorm];
            for m in mods.into_iter().chain((0..2).flat_map(|l| Part::ALL.map(|p| Module::Layer(l, p)))) {
                let Some(path) = names.path(m) else { continue };
                assert!(seen.insert(path.clone()), "{a:?}: {path} twice");
                assert_eq!(names.find(&format!("{path}.weight")), Some((m, "weight")), "{a:?}: {path}");
            }
        }
    }

    #[test]
    fn roberta_positions_start_after_padding() {
        let p = Positions::AfterPadding(1);
        assert_eq!(p.of(&[1, 1, 1, 0, 0]).collect::<Vec<_>>(), [2, 3, 4, 1, 1]);
        assert_eq!(Positions::FromZero.of(&[1, 1, 0]).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(p.max_tokens(130), 128);
    }
}
