//! Writes the tiny fp32 model folder the quantized seeds start from (make-seeds.sh quantizes it with `shrink
//! quantize`): `tiny_model OUT KEEP [--labels]`, KEEP the fraction of encoder Linear weights left non-zero (1 =
//! dense; at 0.01 the sparse writer picks column indices over a bitmask). Weights are seeded, so reruns match.

use shrink_format::folder::{write_atomic, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_format::tensors::{serialize, OwnedTensor};
use shrink_fuzz::{tiny_config, TOKENIZER};

/// xorshift64*: a fixed stream of values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next()).collect()
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(keep)) = (args.first(), args.get(1).and_then(|k| k.parse::<f32>().ok())) else {
        anyhow::bail!("usage: tiny_model OUT KEEP [--labels]");
    };
    let labels = args.iter().any(|a| a == "--labels");
    let cfg = tiny_config(labels);
    let dim = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (v, c, f, p) = (dim("vocab_size"), dim("hidden_size"), dim("intermediate_size"), dim("max_position_embeddings"));
    let mut rng = Rng(0x5eed);
    let mut t = vec![
        OwnedTensor::f32("embeddings.word_embeddings.weight", vec![v, c], &rng.vec(v * c, 0.5, 0.0)),
        OwnedTensor::f32("embeddings.position_embeddings.weight", vec![p, c], &rng.vec(p * c, 0.1, 0.0)),
        OwnedTensor::f32("embeddings.token_type_embeddings.weight", vec![2, c], &rng.vec(2 * c, 0.1, 0.0)),
    ];
    let norm = |t: &mut Vec<OwnedTensor>, rng: &mut Rng, name: &str| {
        t.push(OwnedTensor::f32(format!("{name}.weight"), vec![c], &rng.vec(c, 0.1, 1.0)));
        t.push(OwnedTensor::f32(format!("{name}.bias"), vec![c], &rng.vec(c, 0.1, 0.0)));
    };
    norm(&mut t, &mut rng, "embeddings.LayerNorm");
    let linears = [("attention.self.query", c, c), ("attention.self.key", c, c), ("attention.self.value", c, c),
                   ("attention.output.dense", c, c), ("intermediate.dense", f, c), ("output.dense", c, f)];
    for (name, n, k) in linears {
        let name = format!("encoder.layer.0.{name}");
        let w: Vec<f32> = rng.vec(n * k, 0.3, 0.0).into_iter().map(|w| if rng.next() * 0.5 + 0.5 < keep { w } else { 0.0 }).collect();
        t.push(OwnedTensor::f32(format!("{name}.weight"), vec![n, k], &w));
        t.push(OwnedTensor::f32(format!("{name}.bias"), vec![n], &rng.vec(n, 0.1, 0.0)));
    }
    norm(&mut t, &mut rng, "encoder.layer.0.attention.output.LayerNorm");
    norm(&mut t, &mut rng, "encoder.layer.0.output.LayerNorm");
    if labels {
        t.push(OwnedTensor::f32("classifier.weight", vec![3, c], &rng.vec(3 * c, 0.3, 0.0)));
        t.push(OwnedTensor::f32("classifier.bias", vec![3], &rng.vec(3, 0.1, 0.0)));
    }
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out)?;
    write_atomic(&out.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    write_atomic(&out.join(WEIGHTS_FILE), &serialize(t)?)?;
    write_atomic(&out.join(TOKENIZER_FILE), TOKENIZER)?;
    Ok(())
}
