//! `shrink-timing --model DIR [--threads N]`: the timing server the bench/ scripts drive (see `timing.rs`). Kept out
//! of the product binary; two flags, read by hand.

mod timing;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let (mut model, mut threads) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(value()?),
            "--threads" => threads = Some(value()?.parse::<usize>().context("--threads")?),
            _ => bail!("unknown argument {a:?}; usage: shrink-timing --model DIR [--threads N]"),
        }
    }
    let model = model.context("usage: shrink-timing --model DIR [--threads N]")?;
    shrink_io::process::setup(threads, true)?;
    timing::serve(shrink_io::model::load(&model, None)?)
}
