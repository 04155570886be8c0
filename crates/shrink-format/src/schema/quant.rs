//! config.json's `quantization` section: how a compressed folder stores its weights. Every field is typed, so a
//! folder the runtime cannot run fails when config.json is read, naming the field.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::choice::Choice;
use crate::choices;
use crate::quant::{Format, TableFormat};

choices! {
    /// The `--scheme` spelling is also what config.json records.
    pub enum Scheme {
        Int8Dynamic = "int8-dynamic": "int8 per-channel weights, int8 per-token activations computed at run time",
        Int8Static = "int8-static": "int8 weights, int8 activations with one scale per tensor fixed by calibration (`--observer`)",
        Int4 = "int4": "int4 group-wise weights (`--group`), int8 per-token activations (or f32 with `--activations f32`)",
        Fp16 = "fp16": "fp16 weights (half the file; the runtime widens them to f32 at load)",
        Sparse = "sparse": "f32 weights stored sparse (kept values + a bitmask or column indices, whichever is smaller); for pruned models (`shrink sparsify`), whose zeros the runtime's sparse kernel then skips",
    }
}

choices! {
    /// How the runtime computes attention's two products (config.json `quantization.attention`).
    pub enum AttentionPrecision {
        Fp32 = "fp32",
        Bf16 = "bf16": "Q, K, V and the probabilities rounded to bf16, sums in f32, on AMX-BF16 (f32 elsewhere)",
    }
}

#[allow(clippy::derivable_impls)] // `choices!` variants take no attributes, so no #[default]
impl Default for AttentionPrecision {
    fn default() -> Self {
        Self::Fp32
    }
}

choices! {
    /// How the Linears' inputs are quantized, over the whole model.
    pub enum Activations {
        Fp32 = "fp32",
        Dynamic = "int8-per-token-dynamic",
        Static = "int8-per-tensor-static",
        Mixed = "mixed (see layers)",
    }
}

/// The scheme that made the folder, or `mixed` when sites differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeRecord {
    Uniform(Scheme),
    Mixed,
}

impl SchemeRecord {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform(x) => x.name(),
            Self::Mixed => "mixed",
        }
    }
}

impl std::fmt::Display for SchemeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SchemeRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What each Linear format stores is documented with its struct in `crate::quant`. How the folder was made is in
/// the lineage record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuantSection {
    pub scheme: SchemeRecord,
    pub activations: Activations,
    /// The word embedding table; position and type tables stay f32.
    pub embeddings: TableFormat,
    /// Storage of every Linear by HF name (`encoder.layer.0.attention.self.query`).
    pub layers: BTreeMap<String, Format>,
    /// Folders written before this field run fp32.
    pub attention: AttentionPrecision,
}

/// Read as text first, so each error names its field (`quantization.layers.<name>`). Fields of older folders
/// (`recipe`) are ignored.
impl<'de> Deserialize<'de> for QuantSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            scheme: String,
            activations: String,
            embeddings: String,
            layers: BTreeMap<String, String>,
            attention: Option<String>,
        }
        let r = Raw::deserialize(d)?;
        let named = |field: &str, e: crate::Error| de::Error::custom(format!("quantization.{field}: {e}"));
        let scheme = match r.scheme.as_str() {
            "mixed" => SchemeRecord::Mixed,
            s => SchemeRecord::Uniform(Scheme::parse(s).map_err(|e| named("scheme", e))?),
        };
        let layers = r.layers.iter().map(|(n, f)| Ok((n.clone(), Format::parse(f).map_err(|e| named(&format!("layers.{n}"), e))?)));
        Ok(Self {
            scheme,
            activations: Activations::parse(&r.activations).map_err(|e| named("activations", e))?,
            embeddings: TableFormat::parse(&r.embeddings).map_err(|e| named("embeddings", e))?,
            layers: layers.collect::<Result<_, D::Error>>()?,
            attention: r.attention.map_or(Ok(AttentionPrecision::Fp32), |a| AttentionPrecision::parse(&a)).map_err(|e| named("attention", e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_checked_when_read() {
        // As an older folder wrote it: no attention field, a recipe.
        let ok = r#"{"scheme": "mixed", "activations": "mixed (see layers)", "embeddings": "int4-g32",
            "layers": {"encoder.layer.0.attention.self.query": "int8-static"}, "recipe": {"observer": "minmax"}}"#;
        let q: QuantSection = serde_json::from_str(ok).unwrap();
        assert_eq!((q.scheme, q.attention, q.embeddings), (SchemeRecord::Mixed, AttentionPrecision::Fp32, TableFormat::Int4 { group: 32 }));
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<QuantSection>(&text).unwrap(), q);
        for (from, to, want) in [
            ("\"mixed\"", "\"int9\"", "quantization.scheme: unknown value \"int9\""),
            ("\"int8-static\"", "\"int8-statik\"", "quantization.layers.encoder.layer.0.attention.self.query: unknown weight format \"int8-statik\""),
            ("\"int4-g32\"", "\"int2\"", "quantization.embeddings: unknown embedding storage \"int2\""),
            ("\"mixed (see layers)\"", "\"fp8\"", "quantization.activations: unknown value \"fp8\" (known: fp32, int8-per-token-dynamic"),
        ] {
            let e = serde_json::from_str::<QuantSection>(&ok.replacen(from, to, 1)).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
