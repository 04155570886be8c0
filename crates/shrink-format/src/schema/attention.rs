//! Which attention each encoder layer computes (config.json `shrink_attention`, one entry per layer; absent: full
//! everywhere), and the note `shrink attention` leaves when it lengthens the position table.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// One layer's attention over T tokens, each a function of Q, K, V (heads of D) and the padding mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Attention {
    /// softmax(Q·Kᵀ / sqrt(D)) · V over every token.
    #[default]
    Full,
    /// Token i attends to j when |i - j| <= `window` (a symmetric band of 2w + 1), or when either is one of the
    /// first `global` tokens ([CLS] with 1), which attend to and from every token (Longformer).
    Sliding {
        window: usize,
        #[serde(default)]
        global: usize,
    },
    /// φ(Q)·(φ(K)ᵀV) / (φ(Q)·Σφ(K)): no T x T anything (Katharopoulos et al.). Q is not scaled by 1/sqrt(D).
    Linear { feature_map: FeatureMap },
}

/// φ of linear attention, applied to each head's D values of Q and of K.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureMap {
    /// elu(x) + 1: positive, so the normaliser never vanishes. D features.
    Elu,
    /// Hedgehog (Zhang et al., 2024): y = x·W + b per head, then [softmax(y), softmax(-y)], 2D features. W (D x D)
    /// and b are learned, one pair for Q and one for K per head (`arch::feature_map`), trained to mimic softmax
    /// attention; they start at W = I, b = 0.
    Hedgehog,
}

impl FeatureMap {
    /// Features φ gives a head of `d` values.
    pub fn features(self, d: usize) -> usize {
        match self {
            Self::Elu => d,
            Self::Hedgehog => 2 * d,
        }
    }
}

impl Attention {
    /// What one query row attends to: every key (`None`), or the band of `window` either side (`Some`).
    pub fn window(&self) -> Option<usize> {
        match *self {
            Self::Sliding { window, .. } => Some(window),
            _ => None,
        }
    }

    /// A short name for tables and logs: `full`, `sliding-128+1`, `linear-elu`.
    pub fn label(&self) -> String {
        match *self {
            Self::Full => "full".into(),
            Self::Sliding { window, global: 0 } => format!("sliding-{window}"),
            Self::Sliding { window, global } => format!("sliding-{window}+{global}"),
            Self::Linear { feature_map: FeatureMap::Elu } => "linear-elu".into(),
            Self::Linear { feature_map: FeatureMap::Hedgehog } => "linear-hedgehog".into(),
        }
    }

    /// Multiply-adds of one head's two products (scores and context, or linear attention's φ(K)ᵀV and φ(Q)·[S | z])
    /// over T = `t` tokens at head width `d` (Hedgehog's maps add their two D x D products per token): what inspect
    /// counts and the speed-up bounds come from.
    pub fn head_macs(&self, t: u64, d: u64) -> Option<u64> {
        match *self {
            Self::Full => t.checked_mul(t)?.checked_mul(2 * d),
            Self::Sliding { window, global } => {
                let (w, g) = (window as u64, global as u64);
                // Keys row i sees: all for a global row, else its band clipped at both ends plus the globals before it.
                let pairs = (0..t).try_fold(0u64, |acc, i| {
                    let (lo, hi) = (i.saturating_sub(w), (i + w).min(t.saturating_sub(1)));
                    acc.checked_add(if i < g { t } else { hi - lo + 1 + g.min(lo) })
                })?;
                pairs.checked_mul(2 * d)
            }
            Self::Linear { feature_map } => {
                let f = feature_map.features(d as usize) as u64;
                let maps = if feature_map == FeatureMap::Hedgehog { 2 * d * d } else { 0 };
                t.checked_mul(f * (2 * d + 1) + maps)
            }
        }
    }

    pub fn validate(&self, layer: usize) -> Result<()> {
        if let Self::Sliding { window, global } = *self {
            if window == 0 {
                bail!("shrink_attention[{layer}]: window 0 lets a token see only itself; use at least 1");
            }
            // More global tokens than this makes the band's work quadratic again; a typo is likelier than a need.
            if global > 64 {
                bail!("shrink_attention[{layer}]: {global} global tokens (at most 64; [CLS] alone is 1)");
            }
        }
        Ok(())
    }
}

/// Left in config.json by `shrink attention --max-len`: the table was lengthened by copies, so positions past
/// `learned` were never trained at their place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionExtension {
    /// Positions the checkpoint had learned (its max_tokens before).
    pub learned: usize,
    /// How the rest were filled: `copy` (position p takes learned row p mod `learned`, as Longformer did).
    pub method: String,
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_round_trip_in_their_json_and_bad_ones_are_refused() {
        for (text, want) in [
            (r#"{"kind":"full"}"#, Attention::Full),
            (r#"{"kind":"sliding","window":128,"global":1}"#, Attention::Sliding { window: 128, global: 1 }),
            (r#"{"kind":"sliding","window":64}"#, Attention::Sliding { window: 64, global: 0 }),
            (r#"{"kind":"linear","feature_map":"elu"}"#, Attention::Linear { feature_map: FeatureMap::Elu }),
            (r#"{"kind":"linear","feature_map":"hedgehog"}"#, Attention::Linear { feature_map: FeatureMap::Hedgehog }),
        ] {
            let a: Attention = serde_json::from_str(text).unwrap();
            assert_eq!(a, want, "{text}");
            assert_eq!(serde_json::from_str::<Attention>(&serde_json::to_string(&a).unwrap()).unwrap(), a);
        }
        for text in [r#"{"kind":"sparse"}"#, r#"{"kind":"sliding"}"#, r#"{"kind":"linear","feature_map":"relu"}"#, r#"{"kind":"sliding","window":8,"band":2}"#] {
            assert!(serde_json::from_str::<Attention>(text).is_err(), "{text} parsed");
        }
        assert!(Attention::Sliding { window: 0, global: 0 }.validate(2).unwrap_err().to_string().contains("shrink_attention[2]: window 0"));
        assert!(Attention::Sliding { window: 8, global: 65 }.validate(0).is_err());
        assert_eq!(Attention::Sliding { window: 128, global: 1 }.label(), "sliding-128+1");
        // A band as wide as the sequence is full attention; at T = 4096 a 257-wide band is 257/4096 of it.
        assert_eq!(Attention::Sliding { window: 9, global: 0 }.head_macs(10, 32), Attention::Full.head_macs(10, 32));
        let band = Attention::Sliding { window: 128, global: 0 }.head_macs(4096, 32).unwrap() as f64;
        let full = Attention::Full.head_macs(4096, 32).unwrap() as f64;
        assert!((band / full - 257.0 / 4096.0).abs() < 0.002, "{}", band / full);
    }
}
