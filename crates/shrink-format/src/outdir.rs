//! Where a command writes a model folder: the rules that keep the user's files safe, checked before any work and
//! again at write time, and the swap that replaces a folder so that an interruption at any point leaves the old or
//! the new folder complete.
//!
//! Rules: `--out` is a new or empty folder, or (with `--force`) a model folder shrink wrote; never a symbolic link,
//! never the input model or a folder holding it, never the current folder or one of its parents. Temp folders
//! carry the writer's pid (`.shrink-tmp-<pid>-…`), so the next writer in the same parent removes those of dead
//! processes.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::folder::{CONFIG_FILE, GENERATION_FILE, TOKENIZER_COMPANIONS, WEIGHTS_FILE};

const TMP_PREFIX: &str = ".shrink-tmp-";
/// Temp folders of shrink versions before the pid was in the name; swept once this old.
const LEGACY_PREFIXES: [&str; 2] = [".shrink-tmp-", ".shrink-qat-"];
const LEGACY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A checked destination for a model folder.
#[derive(Clone, Debug)]
pub struct OutDir {
    path: PathBuf,
    inputs: Vec<PathBuf>,
}

impl OutDir {
    /// Checks `out` against the rules above before any work starts; `inputs` are the model folders the command
    /// reads. `force` allows replacing a model folder shrink wrote.
    pub fn new(out: &Path, inputs: &[&Path], force: bool) -> Result<Self> {
        let dir = Self { path: out.to_path_buf(), inputs: inputs.iter().map(|p| p.to_path_buf()).collect() };
        dir.check(force)?;
        // Early too, so temp folders of killed runs go even if this run fails before writing.
        sweep(dir.parent());
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder the temp folder is made in.
    fn parent(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// The rules; at write time `force` is implied, since a model folder found there then is this run's own
    /// earlier save (distill saves each best epoch) or one the user allowed to replace.
    fn check(&self, force: bool) -> Result<()> {
        let out = &self.path;
        let shown = out.display();
        if out.as_os_str().is_empty() {
            bail!("--out is empty: name a folder");
        }
        let meta = std::fs::symlink_metadata(out).ok();
        if let Some(m) = &meta {
            if m.file_type().is_symlink() {
                bail!("--out {shown}: is a symbolic link; name the folder itself");
            }
            if !m.is_dir() {
                bail!("--out {shown}: exists and is not a folder");
            }
        }
        let target = resolve(out).with_context(|| format!("--out {shown}: cannot resolve the path"))?;
        let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).context("cannot read the current folder")?;
        if cwd.starts_with(&target) {
            bail!("--out {shown}: is the current folder or one of its parents; write to a new folder");
        }
        for input in &self.inputs {
            match input.canonicalize() {
                Ok(i) if i == target => bail!("--out {shown}: is the input model folder; write to a new folder"),
                Ok(i) if i.starts_with(&target) => bail!("--out {shown}: holds the input model {}; write to a new folder", input.display()),
                _ => {}
            }
        }
        if meta.is_none() {
            return Ok(());
        }
        let mut entries = std::fs::read_dir(out).with_context(|| format!("--out {shown}: cannot list the folder"))?.peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        for entry in entries {
            let entry = entry.with_context(|| format!("--out {shown}: cannot list the folder"))?;
            let name = entry.file_name();
            let known = name.to_str().is_some_and(|n| n == CONFIG_FILE || n == WEIGHTS_FILE || n == GENERATION_FILE || TOKENIZER_COMPANIONS.contains(&n));
            if !known || !entry.file_type().is_ok_and(|t| t.is_file()) {
                bail!(
                    "--out {shown}: is not empty and not a model folder written by shrink (it holds {:?}); nothing was \
                     changed: choose a new or empty folder",
                    name
                );
            }
        }
        if !out.join(CONFIG_FILE).is_file() {
            bail!("--out {shown}: is not empty and has no {CONFIG_FILE}: not a model folder written by shrink; choose a new folder");
        }
        if !force {
            bail!("--out {shown}: already holds a model folder; pass --force to replace it");
        }
        Ok(())
    }

    /// Writes a folder with `fill` into a temp folder beside `out`, then swaps it into place. On any failure the
    /// temp folder is removed and `out` is untouched.
    pub fn write(&self, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        self.check(true)?;
        let parent = self.parent();
        std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create folder", parent.display()))?;
        sweep(parent);
        let tmp = staging_dir(parent)?;
        fill(tmp.path())?;
        sync(tmp.path())?;
        swap_in(tmp.path(), &self.path)?;
        // `tmp` now holds the old folder (or nothing); dropping it deletes that.
        drop(tmp);
        sync(parent)
    }
}

/// A temp folder in `parent` named for this process, removed when dropped (and by a later writer's sweep if this
/// process is killed first).
pub fn staging_dir(parent: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create temp folder", parent.display()))
}

/// `out` made absolute with every existing prefix canonicalised (symbolic links resolved before `..` applies) and
/// the rest, which does not exist yet, applied lexically.
fn resolve(out: &Path) -> Result<PathBuf> {
    let mut p = PathBuf::new();
    for c in std::path::absolute(out)?.components() {
        match c {
            Component::ParentDir => {
                p.pop();
            }
            Component::CurDir => {}
            other => {
                p.push(other);
                if let Ok(real) = p.canonicalize() {
                    p = real;
                }
            }
        }
    }
    Ok(p)
}

/// Moves the finished folder `tmp` to `out`. When `out` exists the two are exchanged in one step where the file
/// system allows (Linux renameat2), so `out` is never missing, and `tmp` then holds the old folder.
fn swap_in(tmp: &Path, out: &Path) -> Result<()> {
    let shown = out.display();
    if std::fs::symlink_metadata(out).is_err() {
        return std::fs::rename(tmp, out).with_context(|| format!("{shown}: cannot move the finished folder into place"));
    }
    if exchange(tmp, out)? {
        return Ok(());
    }
    swap_aside(tmp, out)
}

/// The portable swap: the old folder is renamed aside under a name `sweep` restores it from if this process dies
/// before the new one is in place, then moved to `tmp`'s path for its guard to delete.
fn swap_aside(tmp: &Path, out: &Path) -> Result<()> {
    let shown = out.display();
    let name = out.file_name().and_then(|n| n.to_str()).with_context(|| format!("{shown}: not a folder name"))?;
    let aside = tmp.with_file_name(format!("{TMP_PREFIX}{}-old-{name}", std::process::id()));
    std::fs::rename(out, &aside).with_context(|| format!("{shown}: cannot move the old folder aside"))?;
    std::fs::rename(tmp, out).with_context(|| format!("{shown}: cannot move the finished folder into place"))?;
    std::fs::rename(&aside, tmp).with_context(|| format!("{}: cannot clear the old folder", aside.display()))
}

/// Atomically exchanges two paths; false where the system cannot (the caller falls back).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).context("path holds a NUL byte");
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths; the syscall only reads them.
    let rc = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::ENOTSUP) => Ok(false),
        _ => Err(err).with_context(|| format!("{}: cannot swap in the finished folder", b.display())),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> Result<bool> {
    Ok(false)
}

/// Flushes a folder's files and the folder itself, so the swap publishes complete data.
fn sync(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot flush", path.display()))?;
        }
    }
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot flush", dir.display()))?;
    Ok(())
}

/// Removes temp folders that killed writers left in `parent`; an old folder moved aside by a killed fallback swap
/// goes back to its name if nothing took it. Best effort: a folder it cannot remove stays for the next sweep.
pub fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match stale(&name, &path) {
            Stale::No => {}
            Stale::Remove => {
                let _ = std::fs::remove_dir_all(&path);
            }
            Stale::Restore(original) => {
                let target = parent.join(original);
                if std::fs::symlink_metadata(&target).is_err() {
                    let _ = std::fs::rename(&path, &target);
                } else {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
}

enum Stale {
    No,
    Remove,
    Restore(String),
}

fn stale(name: &str, path: &Path) -> Stale {
    if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
        if let Some((pid, tail)) = rest.split_once('-').and_then(|(p, t)| Some((p.parse::<u32>().ok()?, t))) {
            if pid == std::process::id() || alive(pid) {
                return Stale::No;
            }
            return match tail.strip_prefix("old-") {
                Some(original) => Stale::Restore(original.to_string()),
                None => Stale::Remove,
            };
        }
    }
    let old = std::fs::symlink_metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > LEGACY_AGE));
    if old && LEGACY_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Stale::Remove
    } else {
        Stale::No
    }
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

#[cfg(not(unix))]
fn alive(_: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(dir: &Path, config: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), config).unwrap();
    }

    #[test]
    fn resolve_applies_dotdot_after_links_and_keeps_missing_parts() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(real.join("a/b")).unwrap();
        std::os::unix::fs::symlink(real.join("a/b"), real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/..")).unwrap(), real.join("a"));
        assert_eq!(resolve(&real.join("new/x/../y/./z")).unwrap(), real.join("new/y/z"));
        assert_eq!(resolve(&real.join("a/b/../../new")).unwrap(), real.join("new"));
    }

    #[test]
    fn both_swaps_leave_the_new_folder_and_remove_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        for portable in [false, true] {
            let out = tmp.path().join(format!("out-{portable}"));
            folder(&out, "old");
            let new = staging_dir(tmp.path()).unwrap();
            std::fs::write(new.path().join(CONFIG_FILE), "new").unwrap();
            if portable {
                swap_aside(new.path(), &out).unwrap();
            } else {
                swap_in(new.path(), &out).unwrap();
            }
            assert_eq!(std::fs::read_to_string(new.path().join(CONFIG_FILE)).unwrap(), "old");
            drop(new);
            assert_eq!(std::fs::read_to_string(out.join(CONFIG_FILE)).unwrap(), "new");
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_shrink_folder_is_replaced_only_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("m");
        folder(&out, "{}");
        std::fs::write(out.join("tokenizer.json"), "{}").unwrap();
        let err = OutDir::new(&out, &[], false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let dir = OutDir::new(&out, &[], true).unwrap();
        dir.write(|t| Ok(std::fs::write(t.join(CONFIG_FILE), "new")?)).unwrap();
        assert_eq!(std::fs::read_to_string(out.join(CONFIG_FILE)).unwrap(), "new");
        assert!(!out.join("tokenizer.json").exists(), "the old folder's files went with it");
        // A subfolder, a foreign file or no config.json: not shrink's.
        for (what, make) in [("sub", true), ("notes.md", false)] {
            let p = out.join(what);
            if make { std::fs::create_dir(&p).unwrap() } else { std::fs::write(&p, "x").unwrap() }
            let err = OutDir::new(&out, &[], true).unwrap_err().to_string();
            assert!(err.contains("not a model folder written by shrink") && err.contains(what), "{err}");
            if make { std::fs::remove_dir(&p).unwrap() } else { std::fs::remove_file(&p).unwrap() }
        }
        std::fs::remove_file(out.join(CONFIG_FILE)).unwrap();
        std::fs::write(out.join(WEIGHTS_FILE), "x").unwrap();
        assert!(OutDir::new(&out, &[], true).unwrap_err().to_string().contains("no config.json"));
    }

    #[test]
    fn a_failed_fill_leaves_nothing_and_the_old_folder_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("m");
        folder(&out, "old");
        let dir = OutDir::new(&out, &[], true).unwrap();
        let err = dir.write(|t| {
            std::fs::write(t.join(CONFIG_FILE), "half")?;
            anyhow::bail!("disk full")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(out.join(CONFIG_FILE)).unwrap(), "old");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
