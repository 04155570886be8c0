use anyhow::{bail, Result};
use shrink_format::schema::{Attention, FeatureMap};

use crate::args::OutArgs;

/// Converts layers to another attention (sliding window, linear) and/or lengthens the position table for long
/// inputs (Longformer-style copies of the learned positions). The weights stay as they are: fine-tune (or distil
/// from the unconverted model) at the new length before use.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink attention out/bbc-cls --to sliding --window 128 --global cls --max-len 4096 --out out/bbc-cls-sliding\n  \
    shrink attention out/bbc-cls --to linear --feature-map elu --out out/bbc-cls-linear\n  \
    shrink attention out/bbc-cls --to linear --feature-map hedgehog --out out/bbc-cls-hedgehog\n  \
    shrink attention out/bbc-cls --to full --max-len 4096 --out out/bbc-cls-4k")]
pub struct Args {
    /// An fp32 model folder (convert before quantizing).
    model: String,
    /// The attention the layers compute afterwards: full, sliding or linear.
    #[arg(long, value_parser = ["full", "sliding", "linear"])]
    to: String,
    /// sliding: keys within this many positions either side of a query.
    #[arg(long)]
    window: Option<usize>,
    /// sliding: tokens that attend to and from every token: cls (the first) or none.
    #[arg(long, value_parser = ["cls", "none"], default_value = "none")]
    global: String,
    /// linear: the feature map φ: elu (elu + 1) or hedgehog (learned per head, starting at the identity: train it
    /// with `shrink attention-transfer`).
    #[arg(long, value_parser = ["elu", "hedgehog"], default_value = "elu")]
    feature_map: String,
    /// Only these layers (comma-separated, from 0); all by default.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Lengthen the position table to this many tokens.
    #[arg(long)]
    max_len: Option<usize>,
    #[command(flatten)]
    out: OutArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let to = match (self.to.as_str(), self.window) {
            ("sliding", Some(window)) => Attention::Sliding { window, global: usize::from(self.global == "cls") },
            ("sliding", None) => bail!("--to sliding needs --window (e.g. 128)"),
            (_, Some(_)) => bail!("--window applies to --to sliding only"),
            ("linear", None) if self.feature_map == "hedgehog" => Attention::Linear { feature_map: FeatureMap::Hedgehog },
            ("linear", None) => Attention::Linear { feature_map: FeatureMap::Elu },
            _ => Attention::Full,
        };
        let out = self.out.dir(&[&self.model])?;
        let opts = shrink_compress::attention::Options { to, layers: self.layers, max_len: self.max_len };
        let r = shrink_compress::attention::convert(&self.model, &opts, &out)?;
        eprintln!(
            "layers: {}; positions {} -> {} ({} learned); wrote {}",
            r.layers.join(", "),
            r.positions_before,
            r.positions_after,
            r.learned,
            out.path().display()
        );
        shrink_io::events::report(&r)?;
        Ok(())
    }
}
