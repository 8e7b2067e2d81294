//! `sift perplexity FILE`: the perplexity protocol of DESIGN.md.

use crate::common::{load_with, ModelArgs};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sift_engine::perplexity::PerplexityResult;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A UTF-8 text file, e.g. ../shared/data/wikitext2-test.txt.
    pub file: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Window length in tokens.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score only the first N windows.
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Apply a thresholds file (from `sift calibrate`) to every token.
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let r = measure(&args.model, &args.file, args.ctx, args.max_windows, args.thresholds.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "perplexity {:.4} over {} scored tokens ({} windows of {}{}, mean NLL {:.4})",
            r.perplexity,
            r.scored_tokens,
            r.windows,
            r.ctx,
            if r.bos { ", each BOS and the text" } else { "" },
            r.mean_nll
        );
    }
    Ok(())
}

/// Perplexity of `file` under the protocol, optionally with a thresholds
/// file applied to every token (with a progress bar).
pub fn measure(model: &ModelArgs, file: &Path, ctx: usize, max_windows: Option<usize>, thresholds: Option<&Path>) -> Result<PerplexityResult> {
    // Cheap checks first: a model load takes seconds.
    if max_windows == Some(0) {
        anyhow::bail!("--max-windows must be at least 1");
    }
    if ctx < 2 {
        anyhow::bail!("--ctx must be at least 2");
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if text.trim().is_empty() {
        anyhow::bail!("{}: the file is empty", file.display());
    }
    if let Some(path) = thresholds {
        sift_engine::model::sparse::Thresholds::load(path)?;
    }
    let mut m = load_with(model, ctx, thresholds.is_some())?;
    if let Some(path) = thresholds {
        let weights = m.weights.take().expect("kept");
        m.model.enable_sparse(&weights)?;
        let th = sift_engine::model::sparse::Thresholds::load(path)?;
        m.model.set_threshold_mask_every_token(&th).with_context(|| path.display().to_string())?;
    }
    if ctx > m.model.max_ctx {
        anyhow::bail!("--ctx {ctx} exceeds the model's context of {}", m.model.max_ctx);
    }
    // The text without BOS; a model that requires BOS gets it at the start
    // of every window (DESIGN.md's protocol).
    let tokens = m.tokenizer.encode_plain(&text)?;
    let bos = m.tokenizer.required_bos();
    let pb = ProgressBar::new(0);
    pb.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} windows ({elapsed}, eta {eta})").unwrap());
    let r = sift_engine::perplexity::perplexity_with_bos(&mut m.model, &tokens, ctx, max_windows, bos, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    Ok(r)
}
