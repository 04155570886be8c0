//! The search's jobs on this machine: every measurement and every trial is this same `shrink` binary in a child
//! process (so a trial's peak RSS is its own, and a trial past the deadline can be stopped).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shrink_pipeline::search::strategy::{Executor, Ran};
use shrink_pipeline::search::trial::Shrink;

pub struct Local {
    /// `--threads` for the children that train and evaluate (benchmarks set their own).
    pub threads: usize,
}

impl Local {
    fn command(&self, argv: &[String]) -> Result<Command> {
        // The running binary itself, even when the file was replaced (a rebuild or an upgrade mid-search): every
        // job of a search runs the same shrink.
        let exe = match Path::new("/proc/self/exe").exists() {
            true => PathBuf::from("/proc/self/exe"),
            false => std::env::current_exe().context("cannot find the shrink binary to run a job")?,
        };
        let mut c = Command::new(exe);
        if argv.first().map(String::as_str) != Some("--threads") {
            c.args(["--threads", &self.threads.to_string()]);
        }
        c.args(argv).stdin(Stdio::null());
        // A job dies with the search that started it (killed or not), so a resumed search never races an orphan.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Ok(c)
    }
}

impl Shrink for Local {
    fn output(&self, argv: &[String]) -> Result<String> {
        let out = self.command(argv)?.env("SHRINK_NO_PROGRESS", "1").output().with_context(|| format!("cannot start shrink {}", argv.join(" ")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("shrink {} failed ({}): {}", argv.join(" "), out.status, tail.join(" / "));
        }
        String::from_utf8(out.stdout).context("shrink printed something that is not UTF-8")
    }
}

impl Executor for Local {
    fn run(&self, plan: &Path, id: &str, deadline: Option<Instant>) -> Result<Ran> {
        let argv = ["trial".to_string(), plan.display().to_string(), id.to_string()];
        let mut child = self.command(&argv)?.stdout(Stdio::piped()).spawn().context("cannot start a trial")?;
        let mut stdout = child.stdout.take().expect("piped");
        // Read while it runs: a full pipe would stall it.
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Ran::OutOfTime);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let printed = reader.join().unwrap_or_default();
        if status.success() {
            return Ok(Ran::Done);
        }
        let error = printed
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["error"].as_str().map(String::from)))
            .unwrap_or_else(|| format!("the trial process ended with {status}"));
        Ok(Ran::Failed(error))
    }
}
