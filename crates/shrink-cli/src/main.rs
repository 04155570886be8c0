//! The `shrink` command line: global flags and the dispatch to one subcommand.

mod args;
mod cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "shrink", version, about = "Make transformer models small and fast for devices, and measure every step.")]
struct Cli {
    /// Worker threads for the numeric work (default: all cores; at most 4 x the cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Read model.safetensors into memory instead of memory-mapping it: costs RAM and load time, but a weights file
    /// truncated or rewritten while the command runs can no longer kill it with SIGBUS.
    #[arg(long, global = true)]
    no_mmap: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build datasets as JSONL.
    #[command(subcommand)]
    Data(cmd::data::DataCmd),
    Inspect(cmd::inspect::Args),
    Embed(cmd::embed::Args),
    Eval(cmd::eval::Args),
    Finetune(cmd::finetune::Args),
    Distill(cmd::distill::Args),
    Qat(cmd::qat::Args),
    Sparsify(cmd::sparsify::Args),
    Quantize(cmd::quantize::Args),
    Sensitivity(cmd::sensitivity::Args),
    Importance(cmd::importance::Args),
    Prune(cmd::prune::Args),
    Bench(cmd::bench::Args),
    Export(cmd::export::Args),
    TrimVocab(cmd::trim_vocab::Args),
    Attention(cmd::attention::Args),
    AttentionTransfer(cmd::attention_transfer::Args),
    Run(cmd::run::Args),
    Compress(cmd::compress::Args),
    Trial(cmd::trial::Args),
    Report(cmd::report::Args),
    Generate(cmd::generate::Args),
    Convert(cmd::convert::Args),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = shrink_io::process::setup(cli.threads, !cli.no_mmap).and_then(|threads| run(cli.command, threads)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cmd: Command, threads: usize) -> Result<()> {
    match cmd {
        Command::Data(c) => c.run(),
        Command::Inspect(c) => c.run(),
        Command::Embed(c) => c.run(threads),
        Command::Eval(c) => c.run(threads),
        Command::Finetune(c) => c.run(),
        Command::Distill(c) => c.run(),
        Command::Qat(c) => c.run(),
        Command::Sparsify(c) => c.run(threads),
        Command::Quantize(c) => c.run(threads),
        Command::Convert(c) => c.run(),
        Command::Sensitivity(c) => c.run(threads),
        Command::Importance(c) => c.run(),
        Command::Prune(c) => c.run(threads),
        Command::Bench(c) => c.run(threads),
        Command::Export(c) => c.run(),
        Command::TrimVocab(c) => c.run(),
        Command::Attention(c) => c.run(),
        Command::AttentionTransfer(c) => c.run(),
        Command::Run(c) => c.run(threads),
        Command::Compress(c) => c.run(threads),
        Command::Trial(c) => c.run(threads),
        Command::Report(c) => c.run(),
        Command::Generate(c) => c.run(),
    }
}

/// A command line without the program name (`quantize DIR --scheme ...`), run as `shrink` would run it: how a
/// recipe stage runs.
pub(crate) fn run_args(argv: &[String], threads: usize) -> Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("shrink").chain(argv.iter().map(String::as_str))).map_err(|e| anyhow::anyhow!("{e}"))?;
    run(cli.command, threads)
}
