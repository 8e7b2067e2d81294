//! `sift calibrate`: the Sparsing Law's CETT-PPL-p% search. Writes one
//! thresholds file per tolerance (for `--sparsity threshold`) and prints the
//! model's activation ratio at each, with the perplexity reached on the
//! calibration windows and on held-out windows from the end of the file.

use crate::common::{load_with, ModelArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sift_engine::attribution::Attributor;
use sift_engine::calibrate::{calibrate, collect, Calibration};
use sift_engine::model::sparse::{Rule, Thresholds};
use sift_engine::model::GpuModel;
use sift_engine::perplexity::{perplexity_with_bos, text_tokens, windows};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Calibration text (default: ../shared/data/wikitext2-test.txt).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Allowed perplexity rises over dense, in percent (one file each).
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    pub ppl_tolerance: Vec<String>,
    /// Window length in tokens.
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    /// Calibration windows, from the start of the file.
    #[arg(long, default_value_t = 4)]
    pub windows: usize,
    /// Held-out windows, from the end of the file (0: none).
    #[arg(long, default_value_t = 4)]
    pub holdout_windows: usize,
    /// Halvings of the outer search over CETT.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Thresholds file for the first tolerance; the others get "-pplN" before the extension.
    #[arg(long, short, default_value = "thresholds.json")]
    pub out: PathBuf,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_tolerance(s: &str) -> Result<f64> {
    let v: f64 = s.trim().trim_end_matches('%').parse().with_context(|| format!("--ppl-tolerance: {s:?} is not a number of percent"))?;
    if !(v > 0.0 && v < 1000.0) {
        bail!("--ppl-tolerance must be a positive percentage, not {s}");
    }
    Ok(v / 100.0)
}

fn out_path(base: &Path, i: usize, percent: f64) -> PathBuf {
    if i == 0 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let ext = base.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    base.with_file_name(format!("{stem}-ppl{percent}{ext}"))
}

/// Perplexity of `tokens` in windows of ctx (BOS first where the model
/// requires it) with the CETT thresholds on every token, or dense.
fn ppl(model: &mut GpuModel, tokens: &[u32], ctx: usize, bos: Option<u32>, eps: Option<&[f32]>) -> sift_engine::Result<f64> {
    match eps {
        Some(eps) => model.set_threshold_mask_every_token(&Thresholds::new(model, Rule::Cett, eps.to_vec(), serde_json::Value::Null))?,
        None => model.disable_sparsity(),
    }
    let r = perplexity_with_bos(model, tokens, ctx, None, bos, |_, _| ());
    model.disable_sparsity();
    Ok(r?.perplexity)
}

pub fn run(args: Args) -> Result<()> {
    let tolerances: Vec<f64> = args.ppl_tolerance.iter().map(|s| parse_tolerance(s)).collect::<Result<_>>()?;
    if args.windows == 0 || args.ctx < 2 {
        bail!("--windows must be at least 1 and --ctx at least 2");
    }
    let file = args.file.clone().unwrap_or_else(|| PathBuf::from("../shared/data/wikitext2-test.txt"));
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    if text.trim().is_empty() {
        bail!("{}: the file is empty", file.display());
    }
    let mut m = load_with(&args.model, args.ctx, true)?;
    let weights = m.weights.take().context("weights kept for calibration")?;
    m.model.enable_sparse(&weights)?;
    let mut attributor = Attributor::new(&m.model, &weights)?;
    if args.ctx > attributor.max_tokens(&m.model) {
        bail!("--ctx {} exceeds the {} tokens one calibration pass can hold on this adapter", args.ctx, attributor.max_tokens(&m.model));
    }
    let bos = m.tokenizer.required_bos();
    let tokens = m.tokenizer.encode_plain(&text)?;
    let text_tokens = |n| text_tokens(n, args.ctx, bos);
    let needed = text_tokens(args.windows + args.holdout_windows);
    if tokens.len() < needed {
        bail!("{}: {} tokens, fewer than the {needed} that {} calibration and {} held-out windows of {} need", file.display(), tokens.len(), args.windows, args.holdout_windows, args.ctx);
    }
    let calib = &tokens[..text_tokens(args.windows)];
    let holdout = &tokens[tokens.len() - text_tokens(args.holdout_windows)..];

    let pb = ProgressBar::new(0);
    pb.set_style(ProgressStyle::with_template("{msg:32} {bar:30} {pos}/{len} ({elapsed})").unwrap());
    pb.set_message("neuron outputs, CETT tables");
    let windows = windows(calib, args.ctx, bos, None);
    let windows: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
    let tables = collect(&mut m.model, &mut attributor, &weights, &windows, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    drop(weights);
    let dense = ppl(&mut m.model, calib, args.ctx, bos, None)?;
    let dense_holdout = if holdout.is_empty() { f64::NAN } else { ppl(&mut m.model, holdout, args.ctx, bos, None)? };

    let mut results: Vec<(Calibration, f64, PathBuf)> = Vec::new();
    for (i, &tol) in tolerances.iter().enumerate() {
        pb.set_message(format!("PPL-{}%: search over CETT", tol * 100.0));
        pb.set_length(args.iters as u64 + 2);
        pb.set_position(0);
        let mut steps = 0;
        let c = calibrate(&tables, dense, tol, args.iters, |eps| {
            steps += 1;
            pb.set_position(steps);
            ppl(&mut m.model, calib, args.ctx, bos, Some(eps))
        })?;
        let held = if holdout.is_empty() { f64::NAN } else { ppl(&mut m.model, holdout, args.ctx, bos, Some(&c.thresholds))? };
        let path = out_path(&args.out, i, tol * 100.0);
        let info = json!({
            "ppl_tolerance": tol, "cett": c.cett, "activation_ratio": c.activation_ratio,
            "calibration_ppl": c.ppl, "dense_calibration_ppl": dense,
            "holdout_ppl": held, "dense_holdout_ppl": dense_holdout,
            "file": file.display().to_string(), "ctx": args.ctx, "windows": args.windows, "holdout_windows": args.holdout_windows,
        });
        Thresholds::new(&m.model, Rule::Cett, c.thresholds.clone(), info).save(&path)?;
        results.push((c, held, path));
    }
    pb.finish_and_clear();

    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(c, held, path)| json!({ "calibration": c, "holdout_ppl": held, "dense_holdout_ppl": dense_holdout, "file": path }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("CETT-PPL-p% on {} ({} calibration windows of {} tokens; held out: the last {})", file.display(), args.windows, args.ctx, args.holdout_windows);
    println!("dense perplexity: calibration {dense:.3}, held out {dense_holdout:.3}");
    println!("{:>6} {:>7} {:>10} {:>12} {:>12} {:>10}  file", "PPL-p", "CETT", "active", "calib PPL", "held-out", "rise");
    for (c, held, path) in &results {
        println!(
            "{:>5}% {:>7.4} {:>9.1}% {:>12.3} {:>12.3} {:>9.2}%  {}",
            c.tolerance * 100.0,
            c.cett,
            c.activation_ratio * 100.0,
            c.ppl,
            held,
            (held / dense_holdout - 1.0) * 100.0,
            path.display()
        );
    }
    println!("(the Sparsing Law reports 38-41% of neurons active at PPL-1% for SiLU models)");
    Ok(())
}
