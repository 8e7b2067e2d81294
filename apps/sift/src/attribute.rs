//! `sift attribute PROMPT`: scores every MLP neuron and attention head for a
//! target log-probability, prints a per-layer summary and writes the scores.

use sift_engine::output::write_atomic;
use crate::common::{load_with, ModelArgs};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sift_engine::attribution::{AttributeOptions, Attributor, Metric, Positions, Scores, Target};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The prompt to attribute.
    pub prompt: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// F = log p of the model's own greedy next token (the default; the paper's choice).
    #[arg(long, conflicts_with_all = ["target", "target_id", "prompt_sum"])]
    pub next: bool,
    /// F = log p of this text as the next token (it must encode to one token).
    #[arg(long)]
    pub target: Option<String>,
    /// F = log p of this token id as the next token.
    #[arg(long, conflicts_with = "target")]
    pub target_id: Option<u32>,
    /// F = the sum of the prompt's own next-token log-probabilities (prompt-level masks).
    #[arg(long, conflicts_with_all = ["target", "target_id"])]
    pub prompt_sum: bool,
    /// Metrics to compute and write; the first one is summarised. One of
    /// magnitude, gxo, snip, fisher, ig, corrected-gxo; repeat or comma-separate.
    #[arg(long, value_delimiter = ',', default_value = "corrected-gxo")]
    pub metric: Vec<String>,
    /// Which tokens' unit outputs are scored: last or all (default: last for
    /// a next-token target, all for --prompt-sum).
    #[arg(long)]
    pub positions: Option<String>,
    /// Integrated Gradients steps (only when ig is asked for).
    #[arg(long, default_value_t = sift_engine::attribution::DEFAULT_IG_STEPS)]
    pub ig_steps: usize,
    /// Wrap the prompt in the model's chat format.
    #[arg(long)]
    pub chat: bool,
    /// Write the scores: .safetensors (tensors neurons.METRIC [layers, ffn] and
    /// heads.METRIC [layers, heads]) or .json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Neurons listed per layer in the summary.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

pub fn run(args: Args) -> Result<()> {
    let metrics = args
        .metric
        .iter()
        .map(|m| Metric::parse(m.trim()).with_context(|| format!("unknown metric {m:?}; use one of magnitude, gxo, snip, fisher, ig, corrected-gxo")))
        .collect::<Result<Vec<_>>>()?;
    let positions = match args.positions.as_deref() {
        None => None,
        Some("last") => Some(Positions::Last),
        Some("all") => Some(Positions::All),
        Some(p) => anyhow::bail!("--positions must be last or all, not {p:?}"),
    };
    if let Some(out) = &args.out {
        if !matches!(out.extension().and_then(|e| e.to_str()), Some("json" | "safetensors")) {
            anyhow::bail!("--out must end in .json or .safetensors: {}", out.display());
        }
    }
    let wants_ig = metrics.contains(&Metric::IntegratedGradients);
    if wants_ig && args.ig_steps == 0 {
        anyhow::bail!("--ig-steps must be at least 1");
    }
    if let Some(id) = args.target_id {
        let vocab = sift_engine::model::read_config(&crate::common::model_path(&args.model)?)?.vocab_size;
        if id as usize >= vocab {
            anyhow::bail!("--target-id {id} is outside the vocabulary: this model's token ids are 0 to {}", vocab - 1);
        }
    }
    let mut m = load_with(&args.model, 2048, true)?;
    let text = if args.chat { m.tokenizer.chat_prompt(&args.prompt)? } else { args.prompt.clone() };
    let tokens = m.tokenizer.encode(&text)?;
    let target = if let Some(t) = &args.target {
        let ids = m.tokenizer.encode_plain(t)?;
        match ids.as_slice() {
            [id] => Target::Token(*id),
            _ => anyhow::bail!("--target {t:?} encodes to {} tokens {ids:?}; give one token, or --target-id", ids.len()),
        }
    } else if let Some(id) = args.target_id {
        Target::Token(id)
    } else if args.prompt_sum {
        Target::Prompt
    } else {
        Target::Next
    };

    let weights = m.weights.take().expect("kept");
    let mut attributor = Attributor::new(&m.model, &weights)?;
    drop(weights);
    let opts = AttributeOptions { positions, ig_steps: wants_ig.then_some(args.ig_steps) };
    let pb = ProgressBar::new(m.model.config.n_layers as u64);
    if wants_ig {
        pb.set_style(ProgressStyle::with_template("integrated gradients {bar:30} {pos}/{len} layers ({elapsed}, eta {eta})").unwrap());
    } else {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let t = Instant::now();
    let scores = attributor.attribute_with_progress(&mut m.model, &tokens, &target, &opts, &mut |done, _| pb.set_position(done as u64))?;
    let elapsed = t.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let ctx = m.model.ctx.clone();
    let target_text = scores.target_token.map(|id| format!("{:?} (id {id})", m.tokenizer.decode(&[id]).unwrap_or_default()));
    println!(
        "F = {:.4} ({}) over {} tokens, units scored at {}; {:.0} ms",
        scores.log_prob,
        target_text.map_or("sum of the prompt's next-token log-probs".to_string(), |t| format!("log p of {t}")),
        scores.tokens,
        if scores.positions == Positions::Last { "the last token" } else { "every token" },
        elapsed * 1e3
    );
    summarise(&ctx, &scores, metrics[0], args.top)?;
    if let Some(out) = &args.out {
        write_scores(&ctx, &scores, &metrics, out, &args.prompt, &m.path)?;
        eprintln!("sift: wrote {} metric(s) to {}", metrics.len(), out.display());
    }
    Ok(())
}

/// Per layer: the top neurons and heads, and how concentrated the scores are.
fn summarise(ctx: &sift_engine::gpu::GpuContext, scores: &Scores, metric: Metric, top: usize) -> Result<()> {
    let neurons = scores.read_neurons(ctx, metric)?;
    let heads = scores.read_heads(ctx, metric)?;
    println!("\n{metric} scores per layer (top-10% share: fraction of the layer's |score| mass in its top 10% of neurons)");
    let top_label = format!("top {top} neurons (id:score)");
    println!("{:>5} {:>11} {:>11} {:>11} {:>8}  {top_label:<44} top heads", "layer", "min", "median", "max", "top-10%");
    for (l, (n, h)) in neurons.iter().zip(&heads).enumerate() {
        let mut sorted = n.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mass: f32 = n.iter().map(|v| v.abs()).sum();
        let mut by_abs: Vec<f32> = n.iter().map(|v| v.abs()).collect();
        by_abs.sort_by(|a, b| b.total_cmp(a));
        let share = by_abs[..n.len().div_ceil(10)].iter().sum::<f32>() / mass.max(f32::MIN_POSITIVE);
        let top_n = top_ids(n, top).iter().map(|&i| format!("{i}:{:.3}", n[i])).collect::<Vec<_>>().join(" ");
        let top_h = top_ids(h, 3).iter().map(|&i| format!("{i}:{:.3}", h[i])).collect::<Vec<_>>().join(" ");
        println!(
            "{:>5} {:>11.4} {:>11.4} {:>11.4} {:>7.0}%  {:<44} {}",
            l,
            sorted[sorted.len() - 1],
            sorted[sorted.len() / 2],
            sorted[0],
            share * 100.0,
            top_n,
            top_h
        );
    }
    Ok(())
}

fn top_ids(v: &[f32], k: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..v.len()).collect();
    ids.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    ids.truncate(k);
    ids
}

fn write_scores(ctx: &sift_engine::gpu::GpuContext, scores: &Scores, metrics: &[Metric], out: &Path, prompt: &str, model: &Path) -> Result<()> {
    let mut tables = Vec::new();
    for &metric in metrics {
        tables.push((metric, scores.read_neurons(ctx, metric)?, scores.read_heads(ctx, metric)?));
    }
    let positions = if scores.positions == Positions::Last { "last" } else { "all" };
    if out.extension().is_some_and(|e| e == "json") {
        let body = json!({
            "model": model.display().to_string(),
            "prompt": prompt,
            "tokens": scores.tokens,
            "log_prob": scores.log_prob,
            "target_token": scores.target_token,
            "positions": positions,
            "metrics": tables.iter().map(|(m, n, h)| (m.name().to_string(), json!({"neurons": n, "heads": h}))).collect::<serde_json::Map<_, _>>(),
        });
        write_atomic(out, serde_json::to_string(&body)?.as_bytes())?;
        return Ok(());
    }
    let flat: Vec<(String, Vec<usize>, Vec<u8>)> = tables
        .iter()
        .flat_map(|(m, n, h)| {
            let bytes = |rows: &Vec<Vec<f32>>| rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
            [
                (format!("neurons.{}", m.name()), vec![scores.n_layers, scores.n_neurons], bytes(n)),
                (format!("heads.{}", m.name()), vec![scores.n_layers, scores.n_heads], bytes(h)),
            ]
        })
        .collect();
    let views = flat
        .iter()
        .map(|(name, shape, bytes)| Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = [
        ("model", model.display().to_string()),
        ("prompt", prompt.to_string()),
        ("tokens", scores.tokens.to_string()),
        ("log_prob", scores.log_prob.to_string()),
        ("positions", positions.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(out, &bytes)?;
    Ok(())
}
