//! The budget search. Round 0 measures the teacher and its post-training variants once (which formats stay
//! within the budget on this task); round 1 trains every structure briefly (1 epoch of recovery or
//! distillation) and measures it with the formats that passed; then successive halving keeps the better half of
//! the structures and trains them again with twice the epochs, until one is left or time is up. Every decision
//! is a function of the results on disk, so a killed search run again makes the same decisions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shrink_format::folder::write_atomic;
use shrink_io::events;

use crate::recipe::Stage;
use crate::search::estimate::Cost;
use crate::search::plan::{Layout, Objective, Plan, Settings, TrialSpec};
use crate::search::space::{structure_stages, teacher_stages, Structure, Variant};
use crate::search::trial::{self, TrialResult};

/// How a trial run by an executor ended.
pub enum Ran {
    Done,
    /// Stopped at the deadline; it has no result.
    OutOfTime,
    Failed(String),
}

/// Runs one trial of a plan (locally: `shrink trial PLAN ID` in a child process), stopping it at `deadline`.
pub trait Executor {
    fn run(&self, plan: &Path, id: &str, deadline: Option<Instant>) -> Result<Ran>;
}

/// A trial that failed: recorded so the search goes on, and a rerun does not try it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub id: String,
    pub error: String,
    pub seconds: f64,
}

/// The plan and what is known of its trials.
pub struct State {
    pub layout: Layout,
    pub plan: Plan,
    pub results: BTreeMap<String, TrialResult>,
    pub failures: BTreeMap<String, Failure>,
    /// Seconds of the derived artifacts (sensitivity, importance).
    pub artifact_s: f64,
}

impl State {
    pub fn load(layout: &Layout, plan: Plan) -> Result<Self> {
        let mut st = Self { layout: layout.clone(), plan, results: BTreeMap::new(), failures: BTreeMap::new(), artifact_s: 0.0 };
        for t in &st.plan.trials {
            if let Some(r) = trial::result(layout, &t.id)? {
                st.results.insert(t.id.clone(), r);
            } else if let Some(f) = read_failure(layout, &t.id)? {
                // Nothing goes on without the teacher: a failed teacher is tried again.
                if t.structure != "teacher" || t.variant != "fp32" {
                    st.failures.insert(t.id.clone(), f);
                }
            }
        }
        st.artifact_s = artifacts_seconds(layout)?.values().sum();
        Ok(st)
    }

    /// Search time used so far, across every run of this search.
    pub fn spent(&self) -> f64 {
        self.results.values().map(|r| r.seconds).sum::<f64>() + self.failures.values().map(|f| f.seconds).sum::<f64>() + self.artifact_s
    }

    pub fn teacher(&self) -> Option<&TrialResult> {
        self.plan.trials.iter().find(|t| t.structure == "teacher" && t.variant == "fp32").and_then(|t| self.results.get(&t.id))
    }

    /// Within the budget on dev: a drop against the teacher of at most `max_drop`.
    pub fn passes(&self, r: &TrialResult) -> bool {
        let s = &self.plan.settings;
        self.teacher().is_some_and(|t| s.drop(t.dev.score, r.dev.score) <= s.max_drop + 1e-9)
    }

    /// What the objective minimises, relative to the teacher.
    pub fn objective(&self, r: &TrialResult) -> f64 {
        let t = self.teacher().expect("objective after the teacher is measured");
        let size = r.dev.file_bytes as f64 / t.dev.file_bytes as f64;
        let speed = r.dev.latency_ms / t.dev.latency_ms;
        match self.plan.settings.objective {
            Objective::Size => size,
            Objective::Latency => speed,
            Objective::Pareto => size * speed,
        }
    }

    /// The best model within the budget: the objective's least, then the higher score, then the earlier trial.
    pub fn best(&self) -> Option<&TrialResult> {
        let mut ok: Vec<&TrialResult> = self.results.values().filter(|r| self.passes(r)).collect();
        let q = |r: &TrialResult| self.plan.settings.quality(r.dev.score);
        ok.sort_by(|a, b| self.objective(a).total_cmp(&self.objective(b)).then(q(b).total_cmp(&q(a))).then(a.id.cmp(&b.id)));
        ok.first().copied()
    }
}

fn failure_path(layout: &Layout, id: &str) -> std::path::PathBuf {
    layout.out.join("trials").join(format!("{id}.failed.json"))
}

fn read_failure(layout: &Layout, id: &str) -> Result<Option<Failure>> {
    let p = failure_path(layout, id);
    if !p.exists() {
        return Ok(None);
    }
    let text = shrink_format::folder::read_regular(&p, "trial failure")?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a trial failure record", p.display()))?))
}

fn artifacts_seconds(layout: &Layout) -> Result<BTreeMap<String, f64>> {
    let p = layout.artifacts().join("seconds.json");
    if !p.exists() {
        return Ok(BTreeMap::new());
    }
    Ok(serde_json::from_str(&shrink_format::folder::read_regular(&p, "artifact times")?)?)
}

/// Predicted seconds of `stages` plus measuring, not counting stages some trial already in `plan` makes.
pub fn estimate(plan: &Plan, stages: &[Stage], cost: &Cost) -> f64 {
    let planned: Vec<&[Stage]> = plan.trials.iter().flat_map(|t| (1..=t.stages.len()).map(move |i| &t.stages[..i])).collect();
    let (mut s, mut compute) = (0.0, 1.0);
    for i in 0..stages.len() {
        let (secs, out) = cost.stage(&stages[i], compute);
        if !planned.contains(&&stages[..=i]) {
            s += secs;
        }
        compute = out;
    }
    s + cost.measure(compute)
}

fn spec(plan: &Plan, cost: &Cost, round: usize, structure: &Structure, epochs: usize, variant: Variant) -> TrialSpec {
    let s = &plan.settings;
    let mut stages = teacher_stages(s);
    stages.extend(structure_stages(structure, s, epochs));
    stages.extend(variant.stages(s));
    let estimate_s = estimate(plan, &stages, cost);
    TrialSpec { id: String::new(), round, structure: structure.name(), epochs, variant: variant.label(s.task), stages, estimate_s }
}

/// Round 0: the teacher and each post-training variant of it.
pub fn round0(plan: &mut Plan, cost: &Cost) {
    // Variants that come to the same stages (retrieval trims nothing) are one trial: `Plan::push`.
    let variants: Vec<Variant> = match plan.settings.task {
        shrink_eval::task::Task::Perplexity => Variant::DECODER.into(),
        _ => [Variant::Fp32, Variant::Trim].into_iter().chain(Variant::QUANTIZED).collect(),
    };
    for v in variants {
        let t = spec(plan, cost, 0, &Structure::Teacher, 0, v);
        plan.push(t);
    }
}

/// The variants worth trying on smaller structures: fp32 (the structure measured alone), then the quantized ones
/// that kept the teacher within the budget, best first by the objective (each structure takes the first two that
/// fit it).
pub fn admissible(st: &State) -> Vec<Variant> {
    let task = st.plan.settings.task;
    let mut ok: Vec<(Variant, &TrialResult)> = Vec::new();
    for v in Variant::QUANTIZED {
        let Some(t) = st.plan.trials.iter().find(|t| t.round == 0 && t.variant == v.label(task)) else { continue };
        // The first variant of a trial stands for it (retrieval's untrimmed twins are the same trial).
        if let Some(r) = st.results.get(&t.id).filter(|r| st.passes(r) && !ok.iter().any(|(_, o)| o.id == r.id)) {
            ok.push((v, r));
        }
    }
    ok.sort_by(|a, b| st.objective(a.1).total_cmp(&st.objective(b.1)));
    std::iter::once(Variant::Fp32).chain(ok.into_iter().map(|(v, _)| v)).collect()
}

/// Quantized variants tried on each structure beside its fp32.
const QUANTIZED_PER_STRUCTURE: usize = 2;

/// Adds `structures` at `epochs` with `variants` as round `round`, as many as fit in `budget` seconds (all when
/// none is given); returns how many structures were planned.
fn plan_structures(plan: &mut Plan, cost: &Cost, round: usize, structures: &[Structure], epochs: usize, variants: &[Variant], budget: Option<f64>) -> usize {
    let mut used = 0.0;
    let mut n = 0;
    for s in structures {
        let mut trial_plan = plan.clone();
        let mut secs = 0.0;
        for &v in variants.iter().filter(|v| v.fits(s, &cost.arch)).take(QUANTIZED_PER_STRUCTURE + 1) {
            let t = spec(&trial_plan, cost, round, s, epochs, v);
            secs += t.estimate_s;
            trial_plan.push(t);
        }
        if budget.is_some_and(|b| used + secs > b) {
            continue;
        }
        used += secs;
        *plan = trial_plan;
        n += 1;
    }
    n
}

/// Structures of `round`, best first: those with a variant within the budget by their best objective, then the
/// rest by their best score.
pub fn ranked(st: &State, round: usize) -> Vec<(String, usize)> {
    let mut by: BTreeMap<&str, (Option<f64>, f64, usize)> = BTreeMap::new();
    for t in st.plan.trials.iter().filter(|t| t.round == round && t.structure != "teacher") {
        let e = by.entry(&t.structure).or_insert((None, f64::NEG_INFINITY, t.epochs));
        if let Some(r) = st.results.get(&t.id) {
            if st.passes(r) {
                let o = st.objective(r);
                e.0 = Some(e.0.map_or(o, |x: f64| x.min(o)));
            }
            e.1 = e.1.max(st.plan.settings.quality(r.dev.score));
        }
    }
    let mut v: Vec<(&str, (Option<f64>, f64, usize))> = by.into_iter().filter(|(_, e)| e.1.is_finite()).collect();
    v.sort_by(|a, b| match (a.1 .0, b.1 .0) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.1 .1.total_cmp(&a.1 .1),
    });
    v.into_iter().map(|(s, e)| (s.to_string(), e.2)).collect()
}

/// Plans the round after the last one from its results; false when the search is over.
pub fn next_round(st: &mut State, cost: &Cost, all: &[Structure]) -> bool {
    let Some(last) = st.plan.last_round() else { return false };
    let left = st.plan.settings.time_budget_s.map(|b| b - st.spent());
    let variants = admissible(st);
    if last == 0 {
        // Keep a third of what is left for halving.
        let n = plan_structures(&mut st.plan, cost, 1, all, 1, &variants, left.map(|l| l * 0.65));
        return n > 0;
    }
    let ranked = ranked(st, last);
    if ranked.len() < 2 || ranked[0].1 >= 8 {
        return false;
    }
    let epochs = ranked[0].1 * 2;
    let mut keep: Vec<Structure> = ranked.iter().take(ranked.len().div_ceil(2)).filter_map(|(name, _)| all.iter().find(|s| &s.name() == name).cloned()).collect();
    while !keep.is_empty() {
        let mut trial = st.plan.clone();
        let n = plan_structures(&mut trial, cost, last + 1, &keep, epochs, &variants, None);
        let secs: f64 = trial.trials.iter().filter(|t| t.round == last + 1).map(|t| t.estimate_s).sum();
        if left.is_none_or(|l| secs <= l) && n > 0 {
            st.plan = trial;
            return true;
        }
        keep.pop();
    }
    false
}

/// Runs the trials of the last round that have neither a result nor a failure; false when time ran out.
pub fn run_round(st: &mut State, exec: &dyn Executor, deadline: Option<Instant>) -> Result<bool> {
    let round = st.plan.last_round().unwrap_or(0);
    let todo: Vec<TrialSpec> = st.plan.trials.iter().filter(|t| t.round == round && !st.results.contains_key(&t.id) && !st.failures.contains_key(&t.id)).cloned().collect();
    let bar = events::bar(todo.len(), &format!("search round {round}"));
    for t in todo {
        bar.set_message(format!("{} {} {} (~{:.0} s)", t.id, t.structure, t.variant, t.estimate_s));
        bar.inc(0);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bar.finish();
            return Ok(false);
        }
        let start = Instant::now();
        match exec.run(&st.layout.plan(), &t.id, deadline)? {
            Ran::Done => {
                let r = trial::result(&st.layout, &t.id)?.with_context(|| format!("trial {} ended without a result", t.id))?;
                events::note(format!("trial {} {} {}: {} {:.4}, {:.2} MB, {:.2} ms ({:.0} s, estimated {:.0} s)", t.id, t.structure, t.variant, st.plan.settings.metric(), r.dev.score, r.dev.file_bytes as f64 / 1e6, r.dev.latency_ms, r.seconds, t.estimate_s));
                st.results.insert(t.id.clone(), r);
            }
            Ran::OutOfTime => {
                events::note(format!("trial {}: stopped, the time budget is spent", t.id));
                bar.finish();
                return Ok(false);
            }
            Ran::Failed(error) => {
                events::note(format!("trial {} {} {} failed: {error}", t.id, t.structure, t.variant));
                let f = Failure { id: t.id.clone(), error, seconds: start.elapsed().as_secs_f64() };
                let p = failure_path(&st.layout, &t.id);
                std::fs::create_dir_all(p.parent().expect("trials/"))?;
                write_atomic(&p, serde_json::to_string_pretty(&f)?.as_bytes())?;
                st.failures.insert(t.id.clone(), f);
            }
        }
        bar.inc(1);
    }
    bar.finish();
    Ok(true)
}

/// Runs a derived artifact (a `shrink` command writing `name`'s folder) once, counting its time.
pub fn artifact(layout: &Layout, name: &str, marker: &str, run: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = layout.artifacts().join(name);
    if dir.join(marker).is_file() {
        return Ok(());
    }
    let start = Instant::now();
    run(&dir).with_context(|| format!("artifact {name}"))?;
    let mut secs = artifacts_seconds(layout)?;
    secs.insert(name.to_string(), start.elapsed().as_secs_f64());
    write_atomic(&layout.artifacts().join("seconds.json"), serde_json::to_string_pretty(&secs)?.as_bytes())
}

/// Checks a plan found in OUT was made with the same settings.
pub fn same_settings(found: &Settings, asked: &Settings, path: &Path) -> Result<()> {
    if found != asked {
        let (a, b) = (serde_json::to_value(found)?, serde_json::to_value(asked)?);
        let diff: Vec<String> = a.as_object().expect("object").iter().filter(|(k, v)| b.get(k.as_str()) != Some(v)).map(|(k, v)| format!("{k}: {v} there, {} now", b[k.as_str()])).collect();
        bail!("{}: a search with other settings ({}); resume it with the same flags or name a new --out", path.display(), diff.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use shrink_eval::task::Task;

    use super::*;
    use crate::search::space::Arch;
    use crate::search::trial::Measured;

    fn settings(budget: Option<f64>) -> Settings {
        Settings {
            task: Task::Classify,
            model: "/m".into(),
            finetune: true,
            train: "/d/train.jsonl".into(),
            dev: "/d/dev.jsonl".into(),
            train_rows: 1600,
            dev_rows: 178,
            test: None,
            max_drop: 1.0,
            objective: Objective::Size,
            batch: 1,
            seq: 128,
            latency_threads: 1,
            threads: 2,
            time_budget_s: budget,
            seed: 0,
        }
    }

    fn cost() -> Cost {
        let arch = Arch { layers: 6, hidden: 384, heads: 12, ffn: 1536, labels: None };
        Cost { teacher_ms: 30.0, threads: 2, train_rows: 1600, dev_rows: 178, arch, train_scale: 1.0, decoder: false }
    }

    fn state(budget: Option<f64>) -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout { out: dir.path().to_path_buf() };
        let mut plan = Plan::new(settings(budget));
        round0(&mut plan, &cost());
        let st = State { layout, plan, results: BTreeMap::new(), failures: BTreeMap::new(), artifact_s: 0.0 };
        (dir, st)
    }

    /// Records trial `id` as measured: dev score, MB.
    fn done(st: &mut State, id: &str, score: f64, mb: f64) {
        let dev = Measured { score, metrics: serde_json::json!({}), file_bytes: (mb * 1e6) as u64, latency_ms: mb, peak_rss_mb: 1.0 };
        st.results.insert(id.into(), TrialResult { id: id.into(), dir: PathBuf::from(id), stages: vec![], dev, seconds: 10.0 });
    }

    fn id(st: &State, structure: &str, variant: &str, round: usize) -> String {
        st.plan.trials.iter().find(|t| t.structure == structure && t.variant == variant && t.round == round).unwrap().id.clone()
    }

    #[test]
    fn the_best_is_the_smallest_within_the_budget() {
        let (_d, mut st) = state(None);
        done(&mut st, "t000", 0.97, 90.0);
        done(&mut st, "t002", 0.965, 20.0); // -0.5 points: passes
        done(&mut st, "t004", 0.955, 12.0); // -1.5 points: over
        done(&mut st, "t003", 0.961, 20.0); // as small as t002, lower score
        assert_eq!(st.best().unwrap().id, "t002");
        assert!(!st.passes(&st.results["t004"]));
        // Only formats that kept the teacher within the budget go on, best first, fp32 always.
        assert_eq!(admissible(&st), [Variant::Fp32, Variant::Int8Dynamic, Variant::Int8Static]);
    }

    #[test]
    fn round0_labels_are_unique_and_retrieval_trims_nothing() {
        let (_d, st) = state(None);
        let labels: Vec<&str> = st.plan.trials.iter().map(|t| t.variant.as_str()).collect();
        let want = ["fp32", "trim", "trim+int8", "trim+int8-static", "trim+int4-g32", "trim+int4-g128", "trim4+int4-g32"];
        assert_eq!(labels[..7], want, "older plans keep their labels and ids");
        assert_eq!(labels[7..], ["trim+mixed-int4/int8", "trim+int8-static+attn-fp32", "int8", "int4-g32"]);
        let mut plan = Plan::new(Settings { task: Task::Retrieval, ..settings(None) });
        round0(&mut plan, &cost());
        let labels: Vec<&str> = plan.trials.iter().map(|t| t.variant.as_str()).collect();
        // (Trim alone is fp32 there: the plan keeps one trial per list of stages.)
        assert_eq!(labels, ["fp32", "int8", "int8-static", "int4-g32", "int4-g128", "mixed-int4/int8", "int8-static+attn-fp32"]);
        assert!(plan.trials.iter().all(|t| t.stages.iter().all(|s| s.command != "trim-vocab")));
    }

    #[test]
    fn round0_measures_both_attention_precisions_of_int8_static() {
        let (_d, st) = state(None);
        let quantize = |variant: &str| {
            let t = st.plan.trials.iter().find(|t| t.round == 0 && t.variant == variant).unwrap();
            t.stages.iter().find(|s| s.command == "quantize").unwrap().params.clone()
        };
        let (default, fp32) = (quantize("trim+int8-static"), quantize("trim+int8-static+attn-fp32"));
        assert_eq!(default.get("attention"), None);
        assert_eq!(fp32.get("attention").and_then(|v| v.as_str()), Some("fp32"));
        // The twins differ only there, and the older variants keep their trial ids.
        let mut rest = fp32.clone();
        rest.remove("attention");
        assert_eq!(rest, default);
        assert_eq!(id(&st, "teacher", "trim+int8-static", 0), "t003");
    }

    #[test]
    fn int4_groups_are_planned_only_where_they_divide_every_width() {
        let (_d, mut st) = state(None);
        done(&mut st, "t000", 0.97, 90.0);
        let g128 = id(&st, "teacher", "trim+int4-g128", 0);
        let g32 = id(&st, "teacher", "trim+int4-g32", 0);
        done(&mut st, &g128, 0.97, 9.0);
        done(&mut st, &g32, 0.97, 10.0);
        done(&mut st, "t002", 0.97, 18.0);
        assert!(next_round(&mut st, &cost(), &Structure::all(Task::Classify, &cost().arch)));
        // Cut heads leave widths of whole 32-wide heads: g128 is planned only where no head was cut.
        let heads_cut = |s: &str| s.starts_with("prune") || s.contains("-h");
        for t in st.plan.trials.iter().filter(|t| t.round == 1) {
            if heads_cut(&t.structure) {
                assert_ne!(t.variant, "trim+int4-g128", "{}", t.structure);
            }
        }
        let variants = |s: &str| st.plan.trials.iter().filter(|t| t.round == 1 && t.structure == s).map(|t| t.variant.clone()).collect::<Vec<_>>();
        assert_eq!(variants("prune-h50-f50"), ["fp32", "trim+int4-g32", "trim+int8"]);
        assert_eq!(variants("student-l3"), ["fp32", "trim+int4-g128", "trim+int4-g32"]);
    }

    #[test]
    fn retrieval_searches_only_students_whose_embeddings_compare_with_the_teacher() {
        let all = Structure::all(Task::Retrieval, &cost().arch);
        assert_eq!(all, [Structure::Student { layers: 3, hidden: None }]);
    }

    #[test]
    fn halving_keeps_the_better_half_with_twice_the_epochs() {
        let (_d, mut st) = state(None);
        done(&mut st, "t000", 0.97, 90.0);
        done(&mut st, "t002", 0.97, 20.0);
        let all = Structure::all(Task::Classify, &cost().arch);
        assert!(next_round(&mut st, &cost(), &all));
        let round1: Vec<&TrialSpec> = st.plan.trials.iter().filter(|t| t.round == 1).collect();
        assert_eq!(round1.len(), 2 * all.len(), "every structure, fp32 and int8");
        assert!(round1.iter().all(|t| t.epochs == 1));
        // Four structures measured: two within the budget (the smaller ranks first), two not (higher score first).
        let names = ["prune-h25-f25", "prune-h50-f50", "prune-h75-f75", "student-l3"];
        for (name, score, mb) in [(names[0], 0.968, 30.0), (names[1], 0.965, 20.0), (names[2], 0.90, 10.0), (names[3], 0.95, 15.0)] {
            let i = id(&st, name, "trim+int8", 1);
            done(&mut st, &i, score, mb);
        }
        let ranked: Vec<String> = ranked(&st, 1).into_iter().map(|r| r.0).collect();
        assert_eq!(ranked, [names[1], names[0], names[3], names[2]]);
        assert!(next_round(&mut st, &cost(), &all));
        let round2: Vec<(&str, usize)> = st.plan.trials.iter().filter(|t| t.round == 2).map(|t| (t.structure.as_str(), t.epochs)).collect();
        assert_eq!(round2, [(names[1], 2), (names[1], 2), (names[0], 2), (names[0], 2)]);
        // One structure measured in round 2 is the last one standing: the search ends.
        let i = id(&st, names[1], "trim+int8", 2);
        done(&mut st, &i, 0.97, 20.0);
        assert!(!next_round(&mut st, &cost(), &all));
    }

    #[test]
    fn the_time_budget_limits_what_is_planned() {
        let (_d, mut st) = state(Some(400.0));
        done(&mut st, "t000", 0.97, 90.0);
        done(&mut st, "t002", 0.97, 20.0);
        let all = Structure::all(Task::Classify, &cost().arch);
        assert!(next_round(&mut st, &cost(), &all));
        let planned: f64 = st.plan.trials.iter().filter(|t| t.round == 1).map(|t| t.estimate_s).sum();
        assert!(planned <= 0.65 * (400.0 - st.spent()), "{planned} s planned");
        assert!(st.plan.trials.iter().filter(|t| t.round == 1).count() < 2 * all.len());
        let (_d, mut st) = state(Some(20.0));
        done(&mut st, "t000", 0.97, 90.0);
        assert!(!next_round(&mut st, &cost(), &all), "no time left: no round 1");
    }

    #[test]
    fn a_decoder_passes_on_perplexity_added_and_has_no_structures() {
        let s = Settings { task: Task::Perplexity, finetune: false, max_drop: 5.0, ..settings(None) };
        let mut plan = Plan::new(s.clone());
        round0(&mut plan, &Cost { decoder: true, ..cost() });
        let variants: Vec<&str> = plan.trials.iter().map(|t| t.variant.as_str()).collect();
        assert_eq!(variants, ["fp32", "int8", "int4-g32", "mixed-int4/int8", "mixed-int4/int8-near"]);
        let budget = |t: &TrialSpec| t.stages[0].params.get("max-ppl-increase").and_then(|v| v.as_float());
        assert_eq!((budget(&plan.trials[3]), budget(&plan.trials[4])), (Some(2.5), Some(4.5)));
        let dir = tempfile::tempdir().unwrap();
        let mut st = State { layout: Layout { out: dir.path().to_path_buf() }, plan, results: BTreeMap::new(), failures: BTreeMap::new(), artifact_s: 0.0 };
        // Lower is better: +4% passes a 5% budget, +6% does not; the smaller passing trial wins.
        done(&mut st, "t000", 20.0, 100.0);
        done(&mut st, "t001", 20.1, 50.0);
        done(&mut st, "t002", 21.2, 25.0);
        done(&mut st, "t003", 20.8, 35.0);
        assert!(!st.passes(&st.results["t002"]) && st.passes(&st.results["t003"]));
        assert_eq!(st.best().unwrap().id, "t003");
        assert!(!next_round(&mut st, &Cost { decoder: true, ..cost() }, &Structure::all(Task::Perplexity, &cost().arch)), "round 0 is the whole search");
    }

    #[test]
    fn a_shared_prefix_is_estimated_once() {
        let (_d, st) = state(None);
        let c = cost();
        let teacher = st.plan.trials[0].stages.clone();
        let alone = estimate(&Plan::new(settings(None)), &teacher, &c);
        let again = estimate(&st.plan, &teacher, &c);
        assert!(alone > 10.0 * again, "the fine-tuning is planned already: {alone} vs {again}");
        assert_eq!(st.plan.trials.len(), 11, "fp32, trim and nine formats");
    }
}
