//! The recipe file: the model to start from and the stages, each a command with the same parameters as its flags.
//!
//! ```toml
//! model = "assets/models/all-MiniLM-L6-v2"
//!
//! [[stage]]
//! command = "finetune"
//! data = "assets/data/bbc/train.jsonl"
//! epochs = 3
//!
//! [[stage]]
//! command = "quantize"
//! scheme = "int8-static"
//! calib = "assets/data/bbc/train.jsonl"
//! ```
//! A key is its flag without the dashes (`calib_samples` or `calib-samples` is `--calib-samples`); `true` is a bare
//! flag, `false` leaves it out; a list repeats it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The commands a stage can be: each reads one model folder and writes one.
pub const COMMANDS: [&str; 9] = ["finetune", "distill", "prune", "sparsify", "qat", "quantize", "trim-vocab", "attention", "attention-transfer"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub command: String,
    /// Flag name (dashes) -> value, in name order.
    pub params: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Where the file is: relative paths in it are relative to this folder.
    pub dir: PathBuf,
    pub model: Option<String>,
    pub stages: Vec<Stage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model: Option<String>,
    #[serde(default)]
    stage: Vec<toml::Table>,
}

impl Recipe {
    /// The recipe file that `load` reads back as this recipe (keys in the spelling of their flags).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.model {
            out.push_str(&format!("model = {}\n", toml::Value::String(m.clone())));
        }
        for s in &self.stages {
            out.push_str(&format!("\n[[stage]]\ncommand = {}\n", toml::Value::String(s.command.clone())));
            for (k, v) in &s.params {
                let key = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') { k.clone() } else { format!("{:?}", k) };
                out.push_str(&format!("{key} = {v}\n"));
            }
        }
        out
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the recipe", path.display()))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, dir).with_context(|| path.display().to_string())
    }

    pub fn parse(text: &str, dir: PathBuf) -> Result<Self> {
        let file: File = toml::from_str(text).context("not a valid recipe")?;
        if file.stage.is_empty() {
            bail!("no [[stage]]: a recipe lists at least one");
        }
        let mut stages = Vec::new();
        for (i, mut t) in file.stage.into_iter().enumerate() {
            let at = || format!("stage {}", i + 1);
            let command = match t.remove("command") {
                Some(toml::Value::String(c)) => c,
                Some(other) => bail!("{}: command = {other} is not a string", at()),
                None => bail!("{}: no command (one of {})", at(), COMMANDS.join(", ")),
            };
            if !COMMANDS.contains(&command.as_str()) {
                bail!("{}: command {command:?} is not a stage (one of {})", at(), COMMANDS.join(", "));
            }
            let mut params = BTreeMap::new();
            for (k, v) in t {
                let flag = k.replace('_', "-");
                if ["out", "force", "model", "teacher", "threads"].contains(&flag.as_str()) {
                    bail!("{}: {k} is set by the run (each stage reads the one before and writes its own folder)", at());
                }
                if let toml::Value::Table(_) | toml::Value::Datetime(_) = v {
                    bail!("{}: {k} = {v} is not a flag value (a string, number, boolean or list of them)", at());
                }
                if params.insert(flag, v).is_some() {
                    bail!("{}: {k} is given twice", at());
                }
            }
            stages.push(Stage { command, params });
        }
        Ok(Self { dir, model: file.model, stages })
    }
}

impl Stage {
    /// `command` with flags `(name, value)`, names with dashes as on the command line.
    pub fn new(command: &str, flags: &[(&str, toml::Value)]) -> Self {
        Self { command: command.to_string(), params: flags.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }
    /// The stage's flags as command-line arguments (input and output not included). A string that names an
    /// existing file relative to the recipe's folder is passed with that folder prefixed.
    pub fn args(&self, recipe_dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let value = |v: &toml::Value| match v {
            toml::Value::String(s) if Path::new(s).is_relative() && recipe_dir.join(s).exists() => recipe_dir.join(s).display().to_string(),
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for (k, v) in &self.params {
            match v {
                toml::Value::Boolean(true) => out.push(format!("--{k}")),
                toml::Value::Boolean(false) => {}
                toml::Value::Array(items) => {
                    for item in items {
                        out.extend([format!("--{k}"), value(item)]);
                    }
                }
                v => out.extend([format!("--{k}"), value(v)]),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_become_flags_and_mistakes_name_the_stage() {
        let r = Recipe::parse(
            "model = \"m\"\n[[stage]]\ncommand = \"quantize\"\nscheme = \"int8-static\"\ncalib_samples = 64\nsymmetric = true\ngptq = false\n",
            PathBuf::from("."),
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.stages[0].args(Path::new(".")), ["--calib-samples", "64", "--scheme", "int8-static", "--symmetric"]);
        for (text, want) in [
            ("[[stage]]\ncommand = \"train\"\n", "stage 1: command \"train\" is not a stage"),
            ("[[stage]]\nscheme = \"x\"\n", "stage 1: no command"),
            ("[[stage]]\ncommand = \"prune\"\nout = \"x\"\n", "stage 1: out is set by the run"),
            ("[[stage]]\ncommand = \"prune\"\nheads = { a = 1 }\n", "is not a flag value"),
            ("[[stage]]\ncommand = \"prune\"\nheads = 0.5\n[[stage]]\ncommand = \"prune\"\nffn_x = 1\nffn-x = 2\n", "stage 2: ffn"),
            ("modle = \"m\"\n[[stage]]\ncommand = \"prune\"\n", "unknown field `modle`"),
            ("model = \"m\"\n", "no [[stage]]"),
        ] {
            let e = format!("{:#}", Recipe::parse(text, PathBuf::from(".")).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_written_recipe_reads_back_the_same() {
        let stages = vec![
            Stage::new("prune", &[("heads", 0.5.into()), ("recover", "distill".into()), ("epochs", 2.into())]),
            Stage::new("quantize", &[("scheme", "int4".into()), ("gptq", true.into()), ("calib", "/d/train \"x\".jsonl".into())]),
        ];
        let r = Recipe { dir: PathBuf::from("."), model: Some("m".into()), stages };
        let text = r.to_toml();
        assert_eq!(Recipe::parse(&text, PathBuf::from(".")).unwrap(), r, "{text}");
        let json = serde_json::to_string(&r.stages).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Stage>>(&json).unwrap(), r.stages, "{json}");
    }
}
