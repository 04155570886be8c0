//! `shrink compress`: the budget search over structures, training budgets and post-training formats
//! (`strategy.rs`), each candidate a trial of the plan file (`plan.rs`) run as its own job (`trial.rs`) and
//! measured for real; then the chosen model copied to OUT/model, scored once on the held-out split, and the
//! report written beside it (`report.rs`).

pub mod estimate;
pub mod plan;
mod report;
pub mod space;
pub mod strategy;
pub mod trial;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shrink_eval::task::Task;
use shrink_format::folder::write_atomic;
use shrink_io::events;

use estimate::Cost;
use plan::{Layout, Plan, Settings};
use space::{Arch, Structure};
use strategy::{Executor, State};
use trial::Shrink;

/// Non-empty lines of a JSONL file.
pub fn lines(path: &Path) -> Result<Vec<String>> {
    let f = shrink_format::folder::open_regular(path, "data")?;
    let mut v = Vec::new();
    for (i, l) in std::io::BufReader::new(f).lines().enumerate() {
        let l = l.with_context(|| format!("{}: line {}: cannot read", path.display(), i + 1))?;
        if !l.trim().is_empty() {
            v.push(l);
        }
    }
    Ok(v)
}

/// The training and dev files: `dev` as given, or a seeded `dev_fraction` of `data` carved into OUT/data/. A
/// decoder's text (`task` perplexity) is cut, not shuffled: dev is its last lines, so both stay running text.
pub fn split(task: Task, data: &Path, dev: Option<&Path>, dev_fraction: f64, seed: u64, layout: &Layout) -> Result<(PathBuf, PathBuf)> {
    if let Some(dev) = dev {
        return Ok((data.to_path_buf(), dev.to_path_buf()));
    }
    if !(dev_fraction > 0.0 && dev_fraction < 1.0) {
        bail!("--dev-fraction {dev_fraction}: must be between 0 and 1 (or pass --dev)");
    }
    // A decoder's text keeps its line ends and its order (dev last); JSONL rows are shuffled (dev first).
    let text = task == Task::Perplexity;
    let rows: Vec<String> = match text {
        true => shrink_format::folder::read_regular(data, "text")?.split_inclusive('\n').map(String::from).collect(),
        false => shrink_io::data::shuffled(lines(data)?, seed),
    };
    let n_dev = (rows.len() as f64 * dev_fraction).round() as usize;
    if n_dev < 10 || rows.len() - n_dev < 10 {
        bail!("{}: {} rows; --dev-fraction {dev_fraction} leaves {n_dev} for dev: both splits need at least 10", data.display(), rows.len());
    }
    let cut = if text { rows.len() - n_dev } else { n_dev };
    let (first, second) = rows.split_at(cut);
    let (train_rows, dev_rows, ext) = if text { (first, second, "txt") } else { (second, first, "jsonl") };
    let join = |r: &[String]| if text { r.concat() } else { r.join("\n") + "\n" };
    let dir = layout.data();
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let (train, dev) = (dir.join(format!("train.{ext}")), dir.join(format!("dev.{ext}")));
    write_atomic(&dev, join(dev_rows).as_bytes())?;
    write_atomic(&train, join(train_rows).as_bytes())?;
    Ok((train, dev))
}

/// Whether `model` must be fine-tuned first: a classify search needs a classifier of the training labels.
pub fn needs_finetune(task: Task, model: &Path, train: &Path) -> Result<bool> {
    if task != Task::Classify {
        return Ok(false);
    }
    let rows = shrink_io::data::read_jsonl(train)?;
    let mut want = shrink_io::data::label_set(train, &rows, "label")?;
    want.sort();
    match Arch::read(model)?.labels {
        None => Ok(true),
        Some(mut have) => {
            have.sort();
            if have != want {
                bail!("{}: classifies {have:?}, the training data has labels {want:?}; start from a checkpoint without a classifier", model.display());
            }
            Ok(false)
        }
    }
}

/// The cost model, from the teacher's measured latency (or a quick probe of the checkpoint before it exists).
fn cost(sh: &dyn Shrink, st: &State, arch: &Arch) -> Result<Cost> {
    let s = &st.plan.settings;
    let teacher_ms = match st.teacher() {
        Some(t) if s.latency_threads == 1 && s.batch == 1 => t.dev.latency_ms,
        _ => trial::bench(sh, &Settings { batch: 1, ..s.clone() }, &s.model, 1, (3, 1))?.0,
    };
    let decoder = s.task == Task::Perplexity;
    // A decoder's rows are tokens: about 4 bytes of English text each.
    let tokens = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as usize / 4);
    let (train_rows, dev_rows) = if decoder { (tokens(&s.train), tokens(&s.dev)) } else { (s.train_rows, s.dev_rows) };
    let mut c = Cost { teacher_ms, threads: s.threads, train_rows, dev_rows, arch: arch.clone(), train_scale: 1.0, decoder };
    // The teacher's fine-tuning, when this search ran it, says how fast training is here.
    if let (true, Some(t)) = (s.finetune, st.teacher()) {
        if let (Some(spec), Some(run)) = (st.plan.trials.iter().find(|x| x.id == t.id).and_then(|x| x.stages.first()), t.stages.first().filter(|r| !r.cached)) {
            c.calibrate(spec, run.seconds);
        }
    }
    Ok(c)
}

/// What `compress` returns: the chosen trial and where the model and report are.
pub struct Outcome {
    pub report: shrink_report::Report,
    pub model: PathBuf,
}

/// The plan `--dry-run` prints: round 0 and round 1 as they would be planned (every quantized variant assumed to
/// pass), with estimated seconds.
pub fn dry_run(settings: Settings, layout: &Layout, sh: &dyn Shrink) -> Result<String> {
    let arch = Arch::read(&settings.model)?;
    let plan = match layout.plan().exists() {
        true => Plan::load(&layout.plan())?,
        false => Plan::new(settings.clone()),
    };
    let mut st = State::load(layout, plan)?;
    let cost = cost(sh, &st, &arch)?;
    if st.plan.trials.is_empty() {
        strategy::round0(&mut st.plan, &cost);
    }
    let mut sketch = st.plan.clone();
    let all = Structure::all(settings.task, &arch);
    let variants = [space::Variant::Fp32, space::Variant::Int8Dynamic, space::Variant::Int4 { group: 32, min_count: 2 }];
    for s in &all {
        for v in variants {
            let t = {
                let mut stages = space::teacher_stages(&settings);
                stages.extend(space::structure_stages(s, &settings, 1));
                stages.extend(v.stages(&settings));
                let estimate_s = strategy::estimate(&sketch, &stages, &cost);
                plan::TrialSpec { id: String::new(), round: 1, structure: s.name(), epochs: 1, variant: v.label(settings.task), stages, estimate_s }
            };
            sketch.push(t);
        }
    }
    let shape = match cost.decoder {
        true => format!("per generated token after a {}-token prompt", settings.seq),
        false => format!("at 1x{}", settings.seq),
    };
    let mut out = format!("estimates from the checkpoint's latency ({:.1} ms {shape} on 1 thread) and {} training threads; nothing is run\n", cost.teacher_ms, settings.threads);
    let mut total = 0.0;
    for t in &sketch.trials {
        let done = trial::result(layout, &t.id)?.map_or(String::new(), |r| format!(" done: {:.0} s measured, {} {:.4}", r.seconds, settings.metric(), r.dev.score));
        out += &format!("round {} {} {:<22} {:<24} ~{:>5.0} s{done}\n", t.round, t.id, t.structure, t.variant, t.estimate_s);
        total += t.estimate_s;
    }
    let budget = settings.time_budget_s.map_or("none".into(), |b| format!("{:.0} min", b / 60.0));
    out += &match all.is_empty() {
        true => format!("round 0 is the whole search (no structures to train): ~{:.0} min; budget {budget}\n", total / 60.0),
        false => format!("rounds 0-1: ~{:.0} min; then successive halving (the better half of the structures, twice the epochs) while time is left; budget {budget}\n", total / 60.0),
    };
    Ok(out)
}

/// Runs (or resumes) the search in `layout`, then writes OUT/model and the report.
pub fn compress(settings: Settings, layout: &Layout, sh: &dyn Shrink, exec: &dyn Executor) -> Result<Outcome> {
    let arch = Arch::read(&settings.model)?;
    let plan = if layout.plan().exists() {
        let p = Plan::load(&layout.plan())?;
        strategy::same_settings(&p.settings, &settings, &layout.plan())?;
        p
    } else {
        Plan::new(settings.clone())
    };
    let mut st = State::load(layout, plan)?;
    let start = Instant::now();
    let deadline = settings.time_budget_s.map(|b| start + Duration::from_secs_f64((b - st.spent()).max(0.0)));
    if st.plan.trials.is_empty() {
        let cost = cost(sh, &st, &arch)?;
        strategy::round0(&mut st.plan, &cost);
        st.plan.save(&layout.plan())?;
    }
    let all = Structure::all(settings.task, &arch);
    let mut out_of_time = false;
    loop {
        if !strategy::run_round(&mut st, exec, deadline)? {
            out_of_time = true;
            break;
        }
        let Some(teacher) = st.teacher().cloned() else { bail!("the teacher could not be measured (see the trial log in {})", layout.out.join("trials").display()) };
        if st.plan.last_round() == Some(0) && deadline.is_none_or(|d| Instant::now() < d) {
            derived(layout, sh, &st.plan.settings, &teacher.dir)?;
            st = State::load(layout, st.plan.clone())?;
        }
        let cost = cost(sh, &st, &arch)?;
        if !strategy::next_round(&mut st, &cost, &all) {
            break;
        }
        st.plan.save(&layout.plan())?;
    }
    report::finish(&st, sh, out_of_time)
}

/// The derived artifacts every report shows: per-site sensitivity (int4) and head importance of the teacher.
fn derived(layout: &Layout, sh: &dyn Shrink, s: &Settings, teacher: &Path) -> Result<()> {
    // A decoder's sites are ranked inside its mixed-precision quantize stage.
    if s.task == Task::Perplexity {
        return Ok(());
    }
    let (t, task) = (teacher.display().to_string(), shrink_format::choice::Choice::name(s.task).to_string());
    let (dev, train) = (s.dev.display().to_string(), s.train.display().to_string());
    events::note("measuring per-site sensitivity of the teacher (int4, one site at a time)");
    strategy::artifact(layout, "sensitivity", "sensitivity.json", |dir| {
        let argv = ["sensitivity", &t, "--task", &task, "--data", &dev, "--scheme", "int4", "--calib", &train, "--out-dir", &dir.display().to_string()];
        sh.output(&argv.map(String::from)).map(|_| ())
    })?;
    if s.task == Task::Classify {
        events::note("measuring head importance of the teacher");
        strategy::artifact(layout, "importance", "importance.json", |dir| {
            let argv = ["importance", &t, "--data", &train, "--samples", "128", "--out", &dir.display().to_string()];
            sh.output(&argv.map(String::from)).map(|_| ())
        })?;
    }
    Ok(())
}
