//! `shrink distill` and `shrink qat` end to end on the real model and a slice of BBC (run scripts/fetch-assets.sh
//! first). One small teacher is fine-tuned per test binary and shared.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Tensor, Var};
use common::{asset, fails, model, ok, shrink};
use shrink_train::distill::{examples, student, teacher::Targets, EmbedLoss, LossWeights, Objective, Split, Task};
use shrink_train::distill::{self, DistillOptions, WeightFlags};
use shrink_train::train::Hook;
use shrink_io::events::{self, Event};
use shrink_train::prune::importance::Method;
use shrink_train::qat::{ActRanges, QatActs};
use shrink_compress::quantize::gptq::Grid;
use shrink_runtime::Site;

/// Tokens per text in these tests: short, so every run takes seconds.
const MAX_LEN: &str = "32";
/// A 3-layer student distilled for 2 epochs on 240 rows, on every 4th test row (chance: 0.2).
const MIN_STUDENT_ACCURACY: f64 = 0.8;
/// QAT may not lose more than this (2 of the 112 slice rows) against PTQ of the same teacher.
const QAT_VS_PTQ_TOL: f64 = 0.02;
/// A 3-layer student 256 wide (FFN 768), 3 epochs at 2e-4 on the same 240 rows (measured 0.75): every LayerNorm now
/// averages over fewer channels, so it starts further from the teacher than the full-width one (chance: 0.2).
const MIN_NARROW_ACCURACY: f64 = 0.6;
/// Runtime vs candle on the same weights (the golden budget).
const RUNTIME_VS_CANDLE: f32 = 1e-4;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Shared scratch space.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The teacher: MiniLM fine-tuned on 240 train rows at 32 tokens, 2 epochs at a high learning rate (confident
/// enough that the student's KL to it falls while its cross-entropy does).
fn teacher() -> &'static Path {
    static TEACHER: OnceLock<PathBuf> = OnceLock::new();
    TEACHER.get_or_init(|| {
        let out = scratch().join("teacher");
        let train = asset("data/bbc/train.jsonl");
        ok(&["--threads", "1", "finetune", &model(), "--data", s(&train), "--out", s(&out), "--max-len", MAX_LEN, "--epochs", "2", "--limit", "240", "--lr", "1e-4"]);
        out
    })
}

/// The fixture BERT fine-tuned for 2 epochs, with its data: the teacher of the tests of mechanics (seeds, exported
/// grids, runtime parity), which need no real accuracy. Seconds, where MiniLM's teacher takes a minute.
fn tiny_teacher() -> &'static (shrink_fixture::Fixture, PathBuf) {
    static TEACHER: OnceLock<(shrink_fixture::Fixture, PathBuf)> = OnceLock::new();
    TEACHER.get_or_init(|| {
        let f = shrink_fixture::Fixture::new(shrink_fixture::Family::Bert, 11).unwrap();
        let out = f.scratch.join("teacher");
        ok(&["--threads", "1", "finetune", s(&f.model), "--data", s(&f.train), "--out", s(&out), "--max-len", MAX_LEN, "--epochs", "2", "--lr", "1e-3"]);
        (f, out)
    })
}

/// Every 4th test row (112 rows, all five topics).
fn test_slice() -> PathBuf {
    let p = scratch().join(format!("test-slice-{:?}.jsonl", std::thread::current().id()));
    let text = std::fs::read_to_string(asset("data/bbc/test.jsonl")).unwrap();
    std::fs::write(&p, text.lines().step_by(4).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    p
}

fn accuracy(model: &Path) -> f64 {
    let out = ok(&["--threads", "1", "eval", s(model), "--task", "classify", "--data", s(&test_slice()), "--json"]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["accuracy"].as_f64().unwrap()
}

/// `shrink distill`'s defaults for `teacher` with these layers, rows, epochs, learning rate and seed.
fn distill_options(task: Task, student_layers: usize, limit: usize, epochs: usize, lr: f64, seed: u64) -> DistillOptions {
    DistillOptions {
        task,
        student_layers,
        layer_map: "every-other".into(),
        width: student::Width { hidden: None, heads: None, ffn: None },
        importance: None,
        importance_samples: 256,
        weights: WeightFlags { ce: None, kl: None, temperature: 2.0, hidden: 0.0, attn: 0.0, embed: None, embed_loss: EmbedLoss::Cosine },
        rows: examples::Rows {
            fields: examples::Fields { text: "text".into(), label: "label".into() },
            max_len: None,
            limit: Some(limit),
            dev_fraction: 0.1,
        },
        train: shrink_train::train::TrainOptions { epochs, batch: 16, lr, weight_decay: 0.01, warmup: 0.1, clip: 1.0, seed },
    }
}

/// Distils in this process, its events captured; returns them.
fn distill_events(teacher: &Path, out: &Path, o: &DistillOptions) -> Vec<Event> {
    let (r, events) = events::capture(|| distill::distill(s(teacher), &asset("data/bbc/train.jsonl"), &common::out_dir(out), o));
    r.unwrap();
    events
}

/// The mean of loss part `part` per epoch, from the training loop's epoch events.
fn epoch_means(events: &[Event], part: &str) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Epoch { means, .. } => {
                Some(means.iter().find(|(name, _)| name == part).unwrap_or_else(|| panic!("no {part} in {means:?}")).1)
            }
            _ => None,
        })
        .collect()
}

fn run_ok(args: &[&str]) -> String {
    let out = shrink(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "shrink {args:?} failed: {err}");
    err
}

#[test]
fn distilled_student_learns_and_loads_everywhere() {
    let out = scratch().join("student");
    let mut o = distill_options(Task::Classify, 3, 240, 2, 1e-4, 3);
    (o.weights.hidden, o.weights.attn) = (1.0, 1.0);
    let events = distill_events(teacher(), &out, &o);
    for part in ["loss", "ce", "kl", "hidden", "attn"] {
        let m = epoch_means(&events, part);
        assert!(m.len() == 2 && m[1] < m[0], "{part} per epoch {m:?}");
    }
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_hidden_layers"], 3);
    let acc = accuracy(&out);
    assert!(acc >= MIN_STUDENT_ACCURACY, "student accuracy {acc}");
    // The runtime's int8 path and the inspector take it like any model.
    let q = scratch().join("student-int8");
    ok(&["--threads", "1", "quantize", s(&out), "--scheme", "int8-dynamic", "--embeddings", "int8", "--out", s(&q)]);
    assert!(accuracy(&q) >= MIN_STUDENT_ACCURACY - 0.05);
    let layers = ok(&["inspect", s(&out)]);
    assert!(layers.contains("layer 2 (") && !layers.contains("layer 3 ("), "{layers}");
}

#[test]
fn same_seed_same_student() {
    let (f, teacher) = tiny_teacher();
    let run = |name: &str, seed: &str| {
        let out = scratch().join(name);
        run_ok(&[
            "--threads", "1", "distill", "--teacher", s(teacher), "--data", s(&f.train), "--out", s(&out), "--student-layers", "1",
            "--layer-map", "1", "--limit", "48", "--epochs", "1", "--max-len", "16", "--seed", seed, "--hidden-weight", "0.5",
        ]);
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = run("seed-a", "5");
    assert!(a == run("seed-b", "5"), "same seed, different weights");
    assert!(a != run("seed-c", "6"), "different seed, same weights");
}

#[test]
fn bad_distill_and_qat_inputs_name_the_problem() {
    let train = asset("data/bbc/train.jsonl");
    let out = scratch().join("never");
    let distill = |extra: &[&str], teacher: &str| {
        let mut args = vec!["distill", "--teacher", teacher, "--data", s(&train), "--out", s(&out), "--limit", "8"];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let t = s(teacher());
    assert!(distill(&[], &model()).contains("no classification head"));
    assert!(distill(&["--student-layers", "7"], t).contains("--student-layers 7"));
    assert!(distill(&["--layer-map", "0,2,9"], t).contains("teacher layer 9 does not exist"));
    assert!(distill(&["--layer-map", "every-second"], t).contains("--layer-map \"every-second\""));
    assert!(distill(&["--task", "embedding", "--ce-weight", "1"], t).contains("--task classify"));
    assert!(distill(&["--dev-fraction", "1.5"], t).contains("--dev-fraction"));
    // Narrow students: C' a multiple of the head width 32 and at most C, heads that exist and fit C' / 32.
    assert!(distill(&["--hidden", "300"], t).contains("--hidden 300: must be a multiple of the head width 32"));
    assert!(distill(&["--hidden", "512"], t).contains("--hidden 512: must be between 32 and the teacher's hidden_size 384"));
    assert!(distill(&["--heads", "13"], t).contains("--heads 13: must be between 1 and the teacher's 12 heads"));
    assert!(distill(&["--heads", "0"], t).contains("--heads 0"));
    assert!(distill(&["--hidden", "256", "--heads", "12"], t).contains("--heads 12 does not fit --hidden 256: at most 256 / 32 = 8 heads"));
    assert!(distill(&["--ffn", "2000"], t).contains("--ffn 2000: must be between 1 and the teacher's FFN width 1536"));
    assert!(distill(&["--heads", "6", "--attn-weight", "1"], t).contains("--attn-weight compares attention maps head by head"));
    assert!(distill(&["--task", "embedding", "--hidden", "256"], t).contains("--task embedding with --hidden below 384"));
    assert!(distill(&["--task", "embedding", "--ffn", "768", "--importance", "taylor"], t).contains("--importance taylor"));
    let qat = fails(&["qat", "--model", &model(), "--scheme", "int4-g32", "--data", s(&train), "--out", s(&out)]);
    assert!(qat.contains("no classification head"), "{qat}");
    assert!(fails(&["qat", "--model", t, "--scheme", "int8", "--data", s(&train), "--out", t]).contains("is the input model folder"));
    let qat = |extra: &[&str]| {
        let mut args = vec!["qat", "--model", t, "--scheme", "int8", "--data", s(&train), "--out", s(&out), "--limit", "8"];
        args.extend_from_slice(extra);
        fails(&args)
    };
    assert!(qat(&["--ema-momentum", "0.1"]).contains("add --activations static"));
    assert!(qat(&["--activations", "static", "--ema-momentum", "0"]).contains("--ema-momentum 0: must be in (0, 1]"));
    assert!(qat(&["--activations", "static", "--ema-momentum", "1.5"]).contains("must be in (0, 1]"));
    assert!(qat(&["--activations", "per-token"]).contains("--activations"));
    // PTQ of int4 with static activations needs the calibration texts.
    let ptq = fails(&["quantize", t, "--scheme", "int4", "--activations", "static", "--out", s(&out)]);
    assert!(ptq.contains("--calib"), "{ptq}");
    assert!(!out.exists());
}

/// Every trainable tensor of `m` as a variable, with its name.
fn vars(m: &mut shrink_model::Bert) -> Vec<(String, Var)> {
    let mut out = Vec::new();
    m.visit(&mut |name, t| {
        let v = Var::from_tensor(t).unwrap();
        *t = v.as_tensor().clone();
        out.push((name.to_string(), v));
    });
    out
}

fn assert_all_get_gradients(loss: &Tensor, vars: &[(String, Var)]) {
    let grads = loss.backward().unwrap();
    for (name, v) in vars {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "{name}: zero gradient");
    }
}

#[test]
fn every_student_parameter_gets_a_gradient() {
    let t = shrink_io::model::load(s(teacher()), Some(16)).unwrap();
    let fields = examples::Fields { text: "text".into(), label: "label".into() };
    let labels = t.model.config.labels().unwrap();
    let ex = examples::read(&asset("data/bbc/train.jsonl"), &t.tokenizer, Some(&labels), &fields, Some(8), 0).unwrap();
    let map = [1, 3, 5];
    let targets = Targets::compute(&t.model, Task::Classify, &ex, &map, true).unwrap();
    let split = Split { examples: &ex, targets: &targets };
    let batch: Vec<usize> = (0..ex.len()).collect();
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(0);
    let all = LossWeights { ce: 0.5, kl: 0.5, temperature: 2.0, hidden: 1.0, attn: 1.0, embed: 0.0, embed_loss: EmbedLoss::Cosine };
    let mut s3 = student::build(&t.model, &map);
    let v = vars(&mut s3);
    assert_eq!(v.len(), 5 + 16 * 3 + 2);
    let loss = Objective { task: Task::Classify, weights: all, projections: Vec::new() }.loss(&s3, &split, &batch, &mut rng).unwrap();
    assert_all_get_gradients(&loss.total, &v);
    // The attention loss alone reaches the last layer's queries and keys and, through its input, the first layer.
    let attn_only = LossWeights { ce: 0.0, kl: 0.0, hidden: 0.0, ..all };
    let grads = Objective { task: Task::Classify, weights: attn_only, projections: Vec::new() }.loss(&s3, &split, &batch, &mut rng).unwrap().total.backward().unwrap();
    for name in ["encoder.layer.2.attention.self.query.weight", "encoder.layer.2.attention.self.key.weight", "encoder.layer.0.intermediate.dense.weight"] {
        let (_, var) = v.iter().find(|(n, _)| n == name).unwrap();
        assert!(grads.get(var.as_tensor()).is_some(), "{name}: no gradient from the attention loss");
    }
    // QAT: through the straight-through weights (int4 Linears and int4 embedding table) to the fp32 variables.
    let opts = shrink_train::qat::QatScheme::Int4G32.options(shrink_compress::quantize::EmbeddingStorage::Int4, QatActs::Dynamic);
    let fq = shrink_train::qat::FakeQuant::new(&s3.config, &opts).unwrap();
    let loss = Objective { task: Task::Classify, weights: all, projections: Vec::new() }.loss(&fq.view(&s3).unwrap(), &split, &batch, &mut rng).unwrap();
    assert_all_get_gradients(&loss.total, &v);
    // ... and through the fake-quantized Linear inputs too (ranges wide enough that little clips).
    let opts = shrink_train::qat::QatScheme::Int4G32.options(shrink_compress::quantize::EmbeddingStorage::Int4, QatActs::Static);
    let wide = (0..3).flat_map(|l| Site::ALL.map(|site| ((l, site), (-20.0, 20.0)))).collect();
    let mut fq = shrink_train::qat::FakeQuant::new(&s3.config, &opts).unwrap().with_acts(ActRanges::new(wide, 1.0).unwrap());
    let view = fq.prepare(0, &s3).unwrap().model.expect("QAT trains on the fake-quantized model");
    assert!(view.layers[2].attention.key.input_quant.is_some() && view.layers[0].output.input_quant.is_some());
    let loss = Objective { task: Task::Classify, weights: all, projections: Vec::new() }.loss(&view, &split, &batch, &mut rng).unwrap();
    assert_all_get_gradients(&loss.total, &v);
    // Momentum 1: the next view's grid is the last training batch's own (min, max); an eval view records nothing.
    let before = fq.acts().unwrap().params();
    fq.eval_model(&s3).unwrap();
    let after = fq.acts().unwrap().params();
    assert!(after.iter().all(|(k, p)| p.scale < before[k].scale), "batch ranges are narrower than [-20, 20]: {after:?}");
    fq.eval_model(&s3).unwrap();
    assert_eq!(fq.acts().unwrap().params(), after);
    // The embedding task: no head.
    let targets = Targets::compute(&t.model, Task::Embedding, &ex, &map, true).unwrap();
    let split = Split { examples: &ex, targets: &targets };
    let mut e3 = student::build(&t.model, &map);
    e3.classifier = None;
    let v = vars(&mut e3);
    let w = LossWeights { ce: 0.0, kl: 0.0, embed: 1.0, ..all };
    assert_all_get_gradients(&Objective { task: Task::Embedding, weights: w, projections: Vec::new() }.loss(&e3, &split, &batch, &mut rng).unwrap().total, &v);
}

#[test]
fn straight_through_passes_the_gradient_and_computes_on_the_grid() {
    let w = Var::from_tensor(&Tensor::new(&[[0.3f32, -1.2, 0.05, 0.9], [2.0, 0.1, -0.4, 0.0]], &candle_core::Device::Cpu).unwrap()).unwrap();
    let grid = Grid::PerChannel { max_q: 127 };
    let q = shrink_train::qat::straight_through(w.as_tensor(), &grid).unwrap();
    let want = shrink_compress::quantize::fake_quantize(&w.as_tensor().flatten_all().unwrap().to_vec1().unwrap(), 2, 4, &grid);
    assert_eq!(q.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    let c = Tensor::new(&[[1.0f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], &candle_core::Device::Cpu).unwrap();
    let g = (q * &c).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap(), c.to_vec2::<f32>().unwrap());
}

/// The int4 weights of an exported folder, dequantized. (N, K)
fn dequantized_int4(file: &shrink_format::TensorFile, name: &str, n: usize, k: usize) -> Vec<f32> {
    let packed = file.u8(&format!("{name}.weight"), &[n, k / 2]).unwrap();
    let scale = file.f32(&format!("{name}.weight_scale"), &[n, k / 32]).unwrap();
    let nibble = |b: u8| ((b << 4) as i8 >> 4) as f32;
    (0..n * k)
        .map(|i| {
            let b = packed[i / 2];
            let q = if i % 2 == 0 { nibble(b) } else { nibble(b >> 4) };
            q * scale[i / 32]
        })
        .collect()
}

#[test]
fn qat_exports_the_trained_grid_and_keeps_ptq_accuracy() {
    let train = asset("data/bbc/train.jsonl");
    let (q, fp32, ptq) = (scratch().join("qat"), scratch().join("qat-fp32"), scratch().join("ptq"));
    let err = run_ok(&[
        "--threads", "1", "qat", "--model", s(teacher()), "--scheme", "int4-g32", "--embeddings", "int4", "--data", s(&train),
        "--out", s(&q), "--fp32-out", s(&fp32), "--limit", "240", "--epochs", "1", "--lr", "2e-5", "--distill",
    ]);
    // Round trip: the file holds exactly the fake-quantized values of the trained weights.
    let (qf, ff) = (shrink_format::TensorFile::open(&q.join("model.safetensors")).unwrap(), shrink_format::TensorFile::open(&fp32.join("model.safetensors")).unwrap());
    let grid = Grid::Groups { max_q: 7, group: 32 };
    for (name, n, k) in [("encoder.layer.0.attention.self.query", 384, 384), ("encoder.layer.5.output.dense", 384, 1536), ("embeddings.word_embeddings", 30522, 384)] {
        let trained = ff.f32(&format!("{name}.weight"), &[n, k]).unwrap();
        let want = shrink_compress::quantize::fake_quantize(&trained, n, k, &grid);
        assert!(dequantized_int4(&qf, name, n, k) == want, "{name}: exported weights differ from the fake-quant grid");
    }
    ok(&["--threads", "1", "quantize", s(teacher()), "--scheme", "int4", "--group", "32", "--embeddings", "int4", "--out", s(&ptq)]);
    let (acc_qat, acc_ptq) = (accuracy(&q), accuracy(&ptq));
    assert!(acc_qat >= acc_ptq - QAT_VS_PTQ_TOL, "QAT {acc_qat} vs PTQ {acc_ptq}: {err}");
}

/// Largest |logit| difference, as a fraction of the largest |logit|, allowed between the runtime on a QAT
/// static-activation folder and the candle fake-quant forward of the same weights and grids. Both compute the same
/// grid values, but f32 results that differ by summation order (1e-5) land on different sides of a rounding
/// midpoint for a few hundred of the inputs of every site, each a whole u8 step apart, through six layers
/// (measured on MiniLM at int8 / int4-g32: max 1.7% / 2.2%, mean 0.09% / 0.13%; weights-only fake quantization: mean
/// 0.9%). The test runs on the 2-layer fixture teacher, where the same comparison measured max 0.003%.
const STATIC_PARITY_REL_TOL: f32 = 0.03;
/// Leaving the activation fake quantization out must put the mean error at least this many times higher.
const WEIGHTS_ONLY_FACTOR: f32 = 3.0;

#[test]
fn qat_static_activations_export_the_trained_ranges_and_the_runtime_computes_the_fake_quant_model() {
    let (f, teacher) = tiny_teacher();
    let train = &f.train;
    let t = shrink_io::model::load(s(teacher), None).unwrap();
    let labels = t.model.config.labels().unwrap();
    let fields = examples::Fields { text: "text".into(), label: "label".into() };
    let texts: Vec<String> = examples::read(&f.test, &t.tokenizer, Some(&labels), &fields, Some(48), 0).unwrap().into_iter().map(|e| e.text).collect();
    for (scheme, format) in [(shrink_train::qat::QatScheme::Int8, "int8-static"), (shrink_train::qat::QatScheme::Int4G32, "int4-g32-static")] {
        let (out, fp32) = (scratch().join(format!("qat-{format}")), scratch().join(format!("qat-{format}-fp32")));
        let rows = examples::Rows { fields: fields.clone(), max_len: None, limit: Some(240), dev_fraction: 0.1 };
        let train_opts = shrink_train::train::TrainOptions { epochs: 1, batch: 16, lr: 2e-5, weight_decay: 0.01, warmup: 0.1, clip: 1.0, seed: 0 };
        let o = shrink_train::qat::QatOptions {
            scheme,
            embeddings: shrink_compress::quantize::EmbeddingStorage::Fp32,
            acts: QatActs::Static,
            ema_momentum: None,
            distill: true,
            temperature: 2.0,
            rows,
            train: train_opts,
            fp32_out: Some(common::out_dir(&fp32)),
        };
        let trained = shrink_train::qat::qat(s(teacher), train, &common::out_dir(&out), &o).unwrap();
        assert_eq!(trained.acts.len(), shrink_fixture::LAYERS * 4);
        // The file holds exactly the trained grids, the same for Q, K and V.
        let file = shrink_format::TensorFile::open(&out.join("model.safetensors")).unwrap();
        for (&(l, site), p) in &trained.acts {
            for name in site.names(l) {
                assert_eq!(file.f32(&format!("{name}.input_scale"), &[1]).unwrap()[0], p.scale, "{name}");
                assert_eq!(file.f32(&format!("{name}.input_zero"), &[1]).unwrap()[0], p.zero as f32, "{name}");
            }
        }
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        let q = &cfg["quantization"];
        assert_eq!(q["layers"]["encoder.layer.1.attention.self.value"], format);
        assert_eq!(q["activations"], "int8-per-tensor-static");
        assert_eq!(q["attention"], "fp32", "QAT keeps the attention it trained with");
        assert_eq!(common::step(&cfg, "qat")["parameters"]["activations"], "static");
        // The runtime on the folder against candle on the trained fp32 weights, fake-quantized on the same grids.
        let mut engine = shrink_runtime::Engine::load(&out, shrink_runtime::Options { threads: 1, max_len: None, ..Default::default() }).unwrap();
        let batch = engine.tokenizer.batch(&texts).unwrap();
        let runtime = engine.logits_batch(&batch).unwrap().to_vec(); // (B, L)
        let m = shrink_io::model::load(s(&fp32), None).unwrap().model;
        let opts = scheme.options(shrink_compress::quantize::EmbeddingStorage::Fp32, QatActs::Static);
        let weights_only = shrink_train::qat::FakeQuant::new(&m.config, &opts).unwrap().view(&m).unwrap();
        let mut full = weights_only.clone();
        shrink_train::qat::quantize_inputs(&mut full, &trained.acts, None).unwrap();
        let (ids, mask) = shrink_model::batch_tensors(&batch).unwrap();
        let logits = |m: &shrink_model::Bert| {
            let (out, _) = shrink_train::distill::forward(m, Task::Classify, &ids, &mask, None, false).unwrap();
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        // (max, mean) |difference| to the runtime's logits.
        let diff = |a: &[f32]| {
            let d: Vec<f32> = a.iter().zip(&runtime).map(|(a, b)| (a - b).abs()).collect();
            (d.iter().copied().fold(0f32, f32::max), d.iter().sum::<f32>() / d.len() as f32)
        };
        let (full, weights) = (diff(&logits(&full)), diff(&logits(&weights_only)));
        let top = runtime.iter().fold(0f32, |a, v| a.max(v.abs()));
        eprintln!("{format}: max |logit| {top}; runtime vs fake-quant (max, mean) {full:?}, vs weights-only fake-quant {weights:?}");
        assert!(full.0 < STATIC_PARITY_REL_TOL * top, "{format}: runtime vs fake-quant forward {full:?} (max |logit| {top})");
        assert!(full.1 * WEIGHTS_ONLY_FACTOR < weights.1, "{format}: mean error with activations {full:?}, weights only {weights:?}");
    }
}

#[test]
fn embedding_student_keeps_retrieval_far_above_chance() {
    let out = scratch().join("emb-student");
    let mut o = distill_options(Task::Embedding, 3, 160, 2, 1e-4, 0);
    o.rows.max_len = Some(32);
    let m = epoch_means(&distill_events(Path::new(&model()), &out, &o), "embed");
    assert!(m.len() == 2 && m[1] < m[0], "embed loss per epoch {m:?}");
    let r = ok(&["--threads", "1", "eval", s(&out), "--task", "retrieval", "--data", s(&test_slice()), "--max-len", "32", "--json"]);
    let mrr = serde_json::from_str::<serde_json::Value>(&r).unwrap()["mrr@10"].as_f64().unwrap();
    // 112 docs: chance MRR@10 is about 0.03.
    assert!(mrr > 0.6, "student MRR@10 {mrr}");
}


/// Labelled train rows of the teacher at 16 tokens, as (ids, label) for the importance scores.
fn scoring_rows(t: &shrink_io::model::Loaded, n: usize) -> Vec<examples::Example> {
    let fields = examples::Fields { text: "text".into(), label: "label".into() };
    let labels = t.model.config.labels().unwrap();
    examples::read(&asset("data/bbc/train.jsonl"), &t.tokenizer, Some(&labels), &fields, Some(n), 0).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn narrow_student_at_full_width_is_the_teacher() {
    let t = shrink_io::model::load(s(teacher()), Some(16)).unwrap();
    let ex = scoring_rows(&t, 16);
    let map: Vec<usize> = (0..6).collect();
    // Every width named at the teacher's own value: the whole ranking and slicing path runs, keeping everything.
    let width = student::Width { hidden: Some(384), heads: Some(12), ffn: Some(1536) };
    let widths = width.resolve(&t.model.config, &map, Path::new("t/config.json")).unwrap();
    let rank = student::Ranking { examples: &ex, method: Method::Taylor, batch: 8 };
    let (same, kept) = student::narrow(&student::build(&t.model, &map), &widths, &rank).unwrap();
    assert_eq!(kept, (0..384).collect::<Vec<_>>());
    assert_eq!((same.config.hidden_size, same.config.num_attention_heads), (384, 12));
    let (ids, mask) = shrink_train::train::batch_of(&ex.iter().map(|e| e.ids.as_slice()).collect::<Vec<_>>()).unwrap();
    let (a, b) = (t.model.logits(&ids, &mask, None).unwrap(), same.logits(&ids, &mask, None).unwrap());
    assert!(flat(&a) == flat(&b), "full-width narrow student differs from the teacher");
    for ((na, ta), (nb, tb)) in t.model.named_params().iter().zip(&same.named_params()) {
        assert_eq!(na, nb);
        assert!(flat(ta) == flat(tb), "{na} changed");
    }
}

#[test]
fn narrow_student_runs_the_same_on_candle_and_runtime_and_its_projections_learn() {
    let t = shrink_io::model::load(s(teacher()), Some(16)).unwrap();
    let ex = scoring_rows(&t, 8);
    let map = [1, 3, 5];
    let width = student::Width { hidden: Some(256), heads: Some(6), ffn: Some(768) };
    let widths = width.resolve(&t.model.config, &map, Path::new("t/config.json")).unwrap();
    let rank = student::Ranking { examples: &ex, method: Method::Taylor, batch: 8 };
    let (mut narrow, kept) = student::narrow(&student::build(&t.model, &map), &widths, &rank).unwrap();
    let cfg = &narrow.config;
    assert_eq!((cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim()), (256, 8, 32));
    assert_eq!((cfg.layer_heads.clone(), cfg.layer_intermediate_sizes.clone()), (Some(vec![6; 3]), Some(vec![768; 3])));
    // Student channel i is teacher channel kept[i] in the tables that are not re-ranked by head or neuron.
    let (tw, nw) = (t.model.embeddings.word_embeddings.to_vec2::<f32>().unwrap(), narrow.embeddings.word_embeddings.to_vec2::<f32>().unwrap());
    for (i, &k) in kept.iter().enumerate() {
        assert_eq!(nw[101][i], tw[101][k]);
    }

    // Saved, it loads in candle and on the runtime with the same hidden states.
    let dir = scratch().join("narrow-parity");
    narrow.save_dir(&common::out_dir(&dir), teacher()).unwrap();
    let loaded = shrink_model::Bert::load_dir(&dir).unwrap();
    assert_eq!(loaded.config, narrow.config);
    let (ids, mask) = shrink_train::train::batch_of(&ex.iter().map(|e| e.ids.as_slice()).collect::<Vec<_>>()).unwrap();
    let candle = flat(&loaded.forward(&ids, &mask, None, None).unwrap());
    let padded = shrink_model::tokenizer::pad(&ex.iter().map(|e| e.ids.clone()).collect::<Vec<_>>(), 0);
    let mut engine = shrink_runtime::Engine::load(&dir, shrink_runtime::Options { threads: 1, max_len: Some(16), ..Default::default() }).unwrap();
    let runtime = engine.forward(&padded.ids, &padded.mask, padded.b, padded.t).unwrap().to_vec();
    let d = candle.iter().zip(&runtime).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(candle.len() == runtime.len() && d <= RUNTIME_VS_CANDLE, "runtime vs candle on the narrow student: {d}");

    // Hidden matching through the C' -> C projections: at the start each puts the student's channels back where
    // the teacher has them, and the loss reaches them and every student parameter.
    let projections = student::projections(&kept, 384, map.len()).unwrap();
    let h0 = flat(&narrow.forward(&ids, &mask, None, None).unwrap()); // (B, T, C')
    let back = flat(&projections[2].forward(&narrow.forward(&ids, &mask, None, None).unwrap()).unwrap()); // (B, T, C)
    for (row, chunk) in back.chunks(384).enumerate().take(4) {
        for (i, &k) in kept.iter().enumerate() {
            assert_eq!(chunk[k], h0[row * 256 + i]);
        }
    }
    let targets = Targets::compute(&t.model, Task::Classify, &ex, &map, false).unwrap();
    let split = Split { examples: &ex, targets: &targets };
    let w = LossWeights { ce: 0.5, kl: 0.5, temperature: 2.0, hidden: 1.0, attn: 0.0, embed: 0.0, embed_loss: EmbedLoss::Cosine };
    let v = vars(&mut narrow);
    let objective = Objective { task: Task::Classify, weights: w, projections };
    let p = objective.params().unwrap();
    assert_eq!(p.len(), 2 * map.len());
    let batch: Vec<usize> = (0..ex.len()).collect();
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(0);
    let loss = objective.loss(&narrow, &split, &batch, &mut rng).unwrap();
    assert_all_get_gradients(&loss.total, &v.into_iter().chain(p).collect::<Vec<_>>());
}

#[test]
fn narrow_student_distills_quantizes_and_inspects() {
    let out = scratch().join("narrow-student");
    let mut o = distill_options(Task::Classify, 3, 240, 3, 2e-4, 3);
    (o.width.hidden, o.width.ffn, o.weights.hidden) = (Some(256), Some(768), 1.0);
    let events = distill_events(teacher(), &out, &o);
    for part in ["loss", "hidden"] {
        let m = epoch_means(&events, part);
        assert!(m.len() == 3 && m[2] < m[0], "{part} per epoch {m:?}");
    }
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg["hidden_size"].as_u64(), cfg["num_attention_heads"].as_u64()), (Some(256), Some(8)), "{cfg}");
    // The projections train with the student but are not part of it.
    let file = shrink_format::TensorFile::open(&out.join("model.safetensors")).unwrap();
    assert!(!file.contains("projection.0.weight"));
    let acc = accuracy(&out);
    eprintln!("narrow student accuracy {acc}");
    assert!(acc >= MIN_NARROW_ACCURACY, "narrow student accuracy {acc}");
    let q = scratch().join("narrow-student-int8");
    ok(&["--threads", "1", "quantize", s(&out), "--scheme", "int8-dynamic", "--embeddings", "int8", "--out", s(&q)]);
    assert!(accuracy(&q) >= acc - 0.05);
    let full = std::fs::metadata(scratch().join("student-int8/model.safetensors"));
    let narrow = std::fs::metadata(q.join("model.safetensors")).unwrap().len();
    // The token table dominates: 2/3 of its columns, a third of the FFN.
    assert!(narrow < 11_000_000, "int8 narrow student {narrow} bytes");
    if let Ok(f) = full {
        assert!(narrow < f.len(), "{narrow} vs full-width {}", f.len());
    }
    let layers = ok(&["inspect", s(&out)]);
    assert!(layers.contains("layer 2 H8 F768 (") && !layers.contains("layer 3 "), "{layers}");
}
