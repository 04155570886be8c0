//! A model folder's file names, and writing files and folders so a failure never leaves a half-written output
//! (the folder rules and the swap are in `outdir`).

use std::path::Path;

use anyhow::{Context, Result};

pub use crate::outdir::OutDir;

pub const CONFIG_FILE: &str = "config.json";

/// Whether `dir` holds a finished model: a config.json (written last), or a decoder's one .gguf file (written
/// atomically).
pub fn holds_model(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file() || dir.join(crate::gguf::FOLDER_FILE).is_file()
}
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Files copied along when a model folder is written, so the output is self-contained.
/// A decoder folder's stop ids, as transformers saves them.
pub const GENERATION_FILE: &str = "generation_config.json";
pub const TOKENIZER_COMPANIONS: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"];

/// Writes `bytes` to `path` through a temp file in the same folder and a rename, so a failure leaves no partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("{}: cannot create temp file", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("{}: write failed", path.display()))?;
    // Temp files are created owner-only; an output is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).with_context(|| format!("{}: cannot move temp file into place", path.display()))?;
    Ok(())
}

/// Writes a complete model folder (config, weights, tokenizer files copied from `tokenizer_src`) through
/// `OutDir::write`: a temp folder beside it, then a swap, so a failed or killed run never leaves a half-written model.
pub fn write_model_dir(out: &OutDir, config_json: &str, weights: &[u8], tokenizer_src: &Path) -> Result<()> {
    out.write(|tmp| {
        std::fs::write(tmp.join(CONFIG_FILE), config_json).with_context(|| format!("{}: cannot write {CONFIG_FILE}", tmp.display()))?;
        std::fs::write(tmp.join(WEIGHTS_FILE), weights).with_context(|| format!("{}: cannot write {WEIGHTS_FILE}", tmp.display()))?;
        for name in TOKENIZER_COMPANIONS {
            let src = tokenizer_src.join(name);
            if src.is_file() {
                std::fs::copy(&src, tmp.join(name)).with_context(|| format!("{}: cannot copy", src.display()))?;
            }
        }
        Ok(())
    })
}

/// Opens a file of a model folder for reading, refusing anything but a regular file (a symlink to one is fine):
/// opening a FIFO blocks until some writer appears, and a device may never end. Opened non-blocking and checked on
/// the open handle, so nothing can be swapped in between the check and the read.
pub fn open_regular(path: &Path, what: &str) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK); // no effect on a regular file's reads
    }
    let file = opts.open(path).with_context(|| format!("{}: cannot open {what}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("{}: cannot read {what}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{}: {what} is not a regular file (a FIFO, device or folder cannot hold it)", path.display());
    }
    Ok(file)
}

/// The whole of a regular file (`open_regular`) as UTF-8 text.
pub fn read_regular(path: &Path, what: &str) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    open_regular(path, what)?.read_to_string(&mut text).with_context(|| format!("{}: cannot read {what}", path.display()))?;
    Ok(text)
}
