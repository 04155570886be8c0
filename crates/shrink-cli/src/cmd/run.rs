use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use shrink_pipeline::{Recipe, Stage};

/// Runs a recipe (TOML): its stages in order, each reading the folder the one before wrote, with the same flags as
/// its command. Every stage's output is kept under a key of what made it (input folder, flags, named files, shrink
/// version): a rerun reuses finished stages, and a run killed midway resumes at the stage it was in.
#[derive(clap::Args)]
#[command(after_help = "Example (recipes/bbc-small.toml: fine-tune, prune, trim the vocabulary, int8):\n  \
    shrink run recipes/bbc-small.toml --out out/bbc-small\n  \
    shrink eval out/bbc-small/model --task classify --data assets/data/bbc/test.jsonl\n\
    The run's folder holds stages/NN-COMMAND-KEY/ (one model folder per stage), run.json (what ran, what was reused)\n\
    and model (the last stage's folder).")]
pub struct Args {
    /// The recipe (TOML): `model = "..."` and one `[[stage]]` table per stage, `command = "prune"` plus that
    /// command's flags as keys (`calib_samples = 64`; `true` for a bare flag), paths relative to the recipe.
    recipe: PathBuf,
    /// The model to start from (a folder, a hub id, or a decoder's .gguf file); default: the recipe's `model`,
    /// relative to the recipe.
    #[arg(long)]
    model: Option<String>,
    /// The run's folder; running again into it reuses the stages already done.
    #[arg(long)]
    out: PathBuf,
    /// Print which stages are done and which would run, and run nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let recipe = Recipe::load(&self.recipe)?;
        let model = match (&self.model, &recipe.model) {
            (Some(m), _) => m.clone(),
            (None, Some(m)) if recipe.dir.join(m).exists() => recipe.dir.join(m).display().to_string(),
            (None, Some(m)) => m.clone(),
            (None, None) => bail!("{}: no model = \"...\" in the recipe: pass --model", self.recipe.display()),
        };
        // A decoder starts from its .gguf file.
        let model = match shrink_format::gguf::file_of(Path::new(&model)) {
            Some(_) => PathBuf::from(&model),
            None => shrink_io::model::resolve_model(&model)?,
        };
        if self.dry_run {
            for (i, p) in shrink_pipeline::plan(&recipe, &model, &self.out)?.into_iter().enumerate() {
                let state = p.done.map_or("to run".to_string(), |d| format!("done: {}", d.display()));
                println!("stage {}/{} {} {}: {state}", i + 1, recipe.stages.len(), p.command, p.args.join(" "));
            }
            return Ok(());
        }
        let record = shrink_pipeline::run(&recipe, &model, &self.out, &mut |stage, args, input, output| run_stage(stage, args, input, output, threads))?;
        let reused = record.stages.iter().filter(|s| s.cached).count();
        eprintln!("{} stages ({reused} reused); the model is {}", record.stages.len(), self.out.join("model").display());
        println!("{}", serde_json::to_string(&record)?);
        Ok(())
    }
}

/// Runs one stage of a recipe or trial in this process, as its command: input as the command takes it (distill's
/// `--teacher`, qat's `--model`, else the first argument), output as `--out`.
pub fn run_stage(stage: &Stage, args: &[String], input: &Path, output: &Path, threads: usize) -> Result<()> {
    let decoder = shrink_format::gguf::file_of(input).is_some();
    let input = input.display().to_string();
    let mut argv = vec![stage.command.clone()];
    match stage.command.as_str() {
        "distill" => argv.extend(["--teacher".into(), input]),
        "qat" => argv.extend(["--model".into(), input]),
        _ => argv.push(input),
    }
    argv.extend(args.iter().cloned());
    // A decoder stage writes its one .gguf file into the stage's folder (`file_of` reads it back from there).
    let output = match decoder {
        true => {
            std::fs::create_dir_all(output).with_context(|| format!("{}: cannot create", output.display()))?;
            output.join(shrink_format::gguf::FOLDER_FILE)
        }
        false => output.to_path_buf(),
    };
    argv.extend(["--out".into(), output.display().to_string()]);
    shrink_io::events::set_in_stage(true);
    let r = crate::run_args(&argv, threads);
    shrink_io::events::set_in_stage(false);
    r
}
