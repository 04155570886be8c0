//! The key a stage's output is kept under: the lineage content hash (`hash_parts`) of shrink's version, the command, its arguments, the input
//! folder's content hash and the content of every file an argument names (data, calibration texts). Two runs with
//! the same key write the same folder (commands are seeded: a `seed` flag is an argument like any other), so a
//! folder found under the key is reused.

use std::path::Path;

use anyhow::Result;
use shrink_format::schema::lineage::{file_hash, folder_hash, hash_parts};

pub fn stage_key(command: &str, args: &[String], input: &Path) -> Result<String> {
    // A decoder's first input is its .gguf file.
    let input = if input.is_file() { file_hash(input)? } else { folder_hash(input)? };
    let files = args.iter().filter(|a| Path::new(a).is_file()).map(|a| file_hash(Path::new(a))).collect::<Result<Vec<_>>>()?;
    let mut parts: Vec<&[u8]> = vec![env!("CARGO_PKG_VERSION").as_bytes(), command.as_bytes(), input.as_bytes()];
    parts.extend(args.iter().map(|a| a.as_bytes()));
    parts.extend(files.iter().map(|f| f.as_bytes()));
    Ok(hash_parts(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_follows_arguments_input_and_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let (model, data) = (dir.path().join("m"), dir.path().join("d.jsonl"));
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        std::fs::write(&data, "a").unwrap();
        let args = |x: &str| vec!["--data".to_string(), data.display().to_string(), "--epochs".into(), x.into()];
        let k = stage_key("finetune", &args("1"), &model).unwrap();
        assert_eq!(stage_key("finetune", &args("1"), &model).unwrap(), k);
        assert_ne!(stage_key("finetune", &args("2"), &model).unwrap(), k);
        assert_ne!(stage_key("distill", &args("1"), &model).unwrap(), k);
        std::fs::write(&data, "b").unwrap();
        let k2 = stage_key("finetune", &args("1"), &model).unwrap();
        assert_ne!(k2, k, "the data file changed");
        std::fs::write(model.join("config.json"), "{ }").unwrap();
        assert_ne!(stage_key("finetune", &args("1"), &model).unwrap(), k2, "the input folder changed");
    }
}
