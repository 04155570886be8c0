//! How the library reports progress: every stage sends `Event`s to one sink. The default sink draws the indicatif
//! bars and stderr lines the `shrink` binary shows (bars hidden when stderr is not a terminal or SHRINK_NO_PROGRESS
//! is set); `capture` collects a thread's events instead, for tests.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `done` of `total` units of the work named `what`; `message` is its running summary (loss means, say).
    Progress { what: String, done: u64, total: u64, message: String },
    /// The work named `what` ended; `keep`: its last state stays on screen.
    Finish { what: String, keep: bool },
    /// A line for the person running the command.
    Note(String),
    /// Training finished 1-based `epoch`: the epoch's mean of every loss part, by name.
    Epoch { epoch: usize, means: Vec<(String, f64)> },
}

pub trait Sink: Send + Sync {
    fn event(&self, e: &Event);
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

thread_local! {
    static CAPTURED: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
}

/// Installs the process's sink (before any event; later calls are refused); without one events go to `Terminal`.
pub fn set_sink(sink: Box<dyn Sink>) -> Result<(), Box<dyn Sink>> {
    SINK.set(sink)
}

pub fn emit(e: Event) {
    let captured = CAPTURED.with(|c| c.borrow_mut().as_mut().map(|v| v.push(e.clone())).is_some());
    if !captured {
        SINK.get_or_init(|| Box::new(Terminal::default())).event(&e);
    }
}

/// Set while a recipe or trial runs a command as one of its stages: the command's JSON report would land in the
/// middle of the run's own stdout, so `report` leaves it out (the stage's folder and lineage hold what it says).
static IN_STAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_in_stage(on: bool) {
    IN_STAGE.store(on, Ordering::Relaxed);
}

/// A command's result as one JSON line on stdout, unless the command runs as a stage of a recipe.
pub fn report(value: &impl serde::Serialize) -> anyhow::Result<()> {
    if !IN_STAGE.load(Ordering::Relaxed) {
        println!("{}", serde_json::to_string(value)?);
    }
    Ok(())
}

pub fn note(line: impl Into<String>) {
    emit(Event::Note(line.into()));
}

/// Runs `f` with this thread's events collected rather than shown (work `f` hands to other threads still reports
/// to the process's sink).
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    let outer = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = f();
    let events = CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer)).unwrap_or_default();
    (r, events)
}

/// A unit count of named work, reported as `Progress` events.
pub struct Bar {
    what: String,
    total: u64,
    done: AtomicU64,
    message: Mutex<String>,
}

pub fn bar(total: usize, what: &str) -> Bar {
    let b = Bar { what: what.to_string(), total: total as u64, done: AtomicU64::new(0), message: Mutex::new(String::new()) };
    b.report(0);
    b
}

impl Bar {
    fn report(&self, done: u64) {
        let message = self.message.lock().expect("message lock").clone();
        emit(Event::Progress { what: self.what.clone(), done, total: self.total, message });
    }

    pub fn inc(&self, n: u64) {
        self.report(self.done.fetch_add(n, Ordering::Relaxed) + n);
    }

    /// Shown with the next `inc`.
    pub fn set_message(&self, message: String) {
        *self.message.lock().expect("message lock") = message;
    }

    pub fn finish(&self) {
        emit(Event::Finish { what: self.what.clone(), keep: true });
    }

    pub fn finish_and_clear(&self) {
        emit(Event::Finish { what: self.what.clone(), keep: false });
    }
}

/// The default sink: a bar per unfinished work, lines on stderr.
#[derive(Default)]
pub struct Terminal {
    bars: Mutex<Vec<(String, ProgressBar)>>,
}

impl Sink for Terminal {
    fn event(&self, e: &Event) {
        let mut bars = self.bars.lock().expect("bars lock");
        match e {
            Event::Progress { what, done, total, message } => {
                let at = bars.iter().rposition(|(w, _)| w == what).unwrap_or_else(|| {
                    bars.push((what.clone(), new_bar(*total, what)));
                    bars.len() - 1
                });
                let pb = &bars[at].1;
                pb.set_message(message.clone());
                pb.set_position(*done);
            }
            Event::Finish { what, keep } => {
                if let Some(at) = bars.iter().rposition(|(w, _)| w == what) {
                    let (_, pb) = bars.remove(at);
                    if *keep {
                        pb.finish();
                    } else {
                        pb.finish_and_clear();
                    }
                }
            }
            Event::Note(line) => eprintln!("{line}"),
            Event::Epoch { epoch, means } => eprintln!("epoch {epoch}: mean {}", render_means(means)),
        }
    }
}

/// "loss 0.1234 ce 0.0567": the training bar's message and the epoch line.
pub fn render_means(means: &[(String, f64)]) -> String {
    means.iter().map(|(name, v)| format!("{name} {v:.4}")).collect::<Vec<_>>().join(" ")
}

fn new_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if std::env::var_os("SHRINK_NO_PROGRESS").is_some() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_collects_this_threads_events_in_order() {
        let ((), events) = capture(|| {
            let b = bar(2, "work");
            b.set_message("half".into());
            b.inc(1);
            note("between");
            b.finish_and_clear();
        });
        let progress = |done: u64, message: &str| Event::Progress { what: "work".into(), done, total: 2, message: message.into() };
        assert_eq!(
            events,
            [progress(0, ""), progress(1, "half"), Event::Note("between".into()), Event::Finish { what: "work".into(), keep: false }]
        );
    }
}
