//! `sift sweep`: TruthfulQA (the paper's generation protocol) for every
//! metric x activation ratio x mode. Resumable: each finished cell is
//! appended to `sweep.csv` at once, and a rerun skips the cells already
//! there. Cells run AR by AR (every metric at one AR, then the next), so a
//! sweep cut short still compares the metrics. The dense references are kept
//! in `references.json` for reruns. Writes `sweep.json` and the chart
//! `sweep.svg` / `sweep.png` (BLEU vs AR, one line per metric, one panel per
//! mode) after every cell.

use crate::chart::{self, Panel, Series};
use crate::eval::{load_questions, progress, Evaluator};
use crate::common::ModelArgs;
use crate::sparsity::Units;
use anyhow::{bail, Context, Result};
use sift_engine::attribution::{Metric, DEFAULT_IG_STEPS};
use sift_engine::eval::{Paper, Sparsity};
use sift_engine::model::sparse::{PromptTarget, Ratios};
use sift_engine::output::{self, write_atomic};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Metrics, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "magnitude,gxo,snip,fisher,ig,corrected-gxo")]
    pub metrics: Vec<String>,
    /// Activation ratios, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.8,1.0")]
    pub ars: Vec<f64>,
    /// Modes, comma-separated: oracle, prompt (masks from the greedy next
    /// token's attribution), prompt-tokens (from the prompt's own tokens),
    /// paper (the paper's protocol, `sift eval --protocol paper`: masks from
    /// the dense trajectory, first token and --dense-tail dense, each answer
    /// as long as its best answer; its rows' tokens column is 0).
    #[arg(long, value_delimiter = ',', default_value = "oracle,prompt")]
    pub modes: Vec<String>,
    /// Paper mode: the fraction of layers, from the last, left dense (rows
    /// of another tail than 0.25 say it in their mode).
    #[arg(long, default_value_t = 0.25)]
    pub dense_tail: f64,
    /// Which units the AR masks.
    #[arg(long, value_enum, default_value_t = Units::Both)]
    pub units: Units,
    /// TruthfulQA questions (the first N).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// New tokens per generation.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// TruthfulQA CSV (default ../shared/data/truthfulqa.csv).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "sweep")]
    pub out: PathBuf,
    /// Integrated Gradients steps. A prompt's IG is computed once for all
    /// the ARs of a run. Cells with other than the default are labelled
    /// "ig (N steps)".
    #[arg(long, default_value_t = DEFAULT_IG_STEPS)]
    pub ig_steps: usize,
}

/// A cell's metric as the CSV names it: the IG step count shows unless it is
/// the default.
fn metric_label(metric: Metric, ig_steps: usize) -> String {
    match metric {
        Metric::IntegratedGradients if ig_steps != DEFAULT_IG_STEPS => format!("{} ({ig_steps} steps)", metric.name()),
        _ => metric.name().into(),
    }
}

const HEADER: &str = "task,mode,metric,ar,units,questions,tokens,bleu,token_agreement,sacrebleu";
/// Sweeps written before sacreBLEU was reported: read (their sacreBLEU
/// unknown), never appended to.
const HEADER_BEFORE_SACREBLEU: &str = "task,mode,metric,ar,units,questions,tokens,bleu,token_agreement";

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub mode: String,
    pub metric: String,
    pub ar: f64,
    pub units: String,
    pub questions: usize,
    pub tokens: usize,
    /// Sift's earlier BLEU.
    pub bleu: f64,
    pub token_agreement: f64,
    /// sacreBLEU (NaN in a sweep written before it was reported).
    pub sacrebleu: f64,
}

impl Row {
    fn key(&self) -> (String, String, String, String, usize, usize) {
        (self.mode.clone(), self.metric.clone(), format!("{:.4}", self.ar), self.units.clone(), self.questions, self.tokens)
    }
}

/// Reads a sweep CSV, and whether it was written before sacreBLEU was
/// reported; any malformed row is an error naming the file and line.
pub fn read_rows(path: &Path) -> Result<(Vec<Row>, bool)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let fields = match lines.next() {
        Some((_, h)) if h.trim() == HEADER => 10,
        Some((_, h)) if h.trim() == HEADER_BEFORE_SACREBLEU => 9,
        Some(_) => bail!("{}: line 1: not a sift sweep file (expected the header {HEADER})", path.display()),
        None => return Ok((Vec::new(), false)),
    };
    let mut rows = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |what: String| anyhow::anyhow!("{}: line {}: {what}", path.display(), i + 1);
        if f.len() != fields {
            return Err(bad(format!("{} fields, expected {fields}", f.len())));
        }
        let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad(format!("field {} is not a number: {:?}", HEADER.split(',').nth(k).unwrap(), f[k])));
        rows.push(Row { mode: f[1].into(), metric: f[2].into(), ar: num(3)?, units: f[4].into(), questions: num(5)? as usize, tokens: num(6)? as usize, bleu: num(7)?, token_agreement: num(8)?, sacrebleu: if fields == 10 { num(9)? } else { f64::NAN } });
    }
    Ok((rows, fields == 9))
}

fn write_outputs(dir: &Path, rows: &[Row], limit: usize) -> Result<()> {
    write_atomic(&dir.join("sweep.json"), (serde_json::to_string_pretty(rows)? + "\n").as_bytes())?;
    let modes: Vec<String> = rows.iter().map(|r| r.mode.clone()).fold(Vec::new(), |mut v, m| {
        if !v.contains(&m) {
            v.push(m);
        }
        v
    });
    let panels: Vec<Panel> = modes
        .iter()
        .map(|mode| {
            let mut metrics: Vec<String> = Vec::new();
            rows.iter().filter(|r| &r.mode == mode).for_each(|r| {
                if !metrics.contains(&r.metric) {
                    metrics.push(r.metric.clone());
                }
            });
            let series = metrics
                .iter()
                .map(|m| {
                    let mut points: Vec<(f64, f64)> = rows.iter().filter(|r| &r.mode == mode && &r.metric == m).map(|r| (r.ar, score(r))).collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series { name: m.clone(), points }
                })
                .collect();
            Panel { title: format!("{mode} mode"), series }
        })
        .collect();
    let what = if rows.iter().any(|r| r.sacrebleu.is_nan()) { "BLEU (Sift's earlier form; * rows predate sacreBLEU)" } else { "sacreBLEU" };
    let title = format!("TruthfulQA: {what} of sparse vs dense generation ({limit} questions)");
    let svg = chart::svg(&title, "BLEU (%)", 100.0, &panels);
    write_atomic(&dir.join("sweep.svg"), svg.as_bytes())?;
    write_atomic(&dir.join("sweep.png"), &chart::png(&svg)?)?;
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let metrics: Vec<Metric> = args.metrics.iter().map(|m| Metric::parse(m).with_context(|| format!("unknown metric {m:?}"))).collect::<Result<_>>()?;
    if args.ig_steps == 0 {
        bail!("--ig-steps must be at least 1");
    }
    for &ar in &args.ars {
        if !(ar > 0.0 && ar <= 1.0) {
            bail!("--ars: every activation ratio must be in (0, 1], not {ar}");
        }
    }
    for m in &args.modes {
        if mode_sparsity(m, Metric::Gxo, Ratios::mlp(1.0), args.dense_tail)?.is_none() {
            bail!("--modes: {m:?} is not oracle, prompt, prompt-tokens or paper");
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let csv = args.out.join("sweep.csv");
    // A row cut short by a crash is dropped (and its cell run again).
    if csv.exists() {
        if let (_, Some(torn)) = output::read_log(&csv)? {
            eprintln!("sift sweep: dropped a torn last line of {} (its cell runs again): {torn:?}", csv.display());
        }
    }
    let (mut rows, old_format) = if csv.exists() { read_rows(&csv)? } else { Default::default() };
    if !csv.exists() || rows.is_empty() && std::fs::read_to_string(&csv)?.trim().is_empty() {
        write_atomic(&csv, format!("{HEADER}\n").as_bytes())?;
    }
    let units = match args.units {
        Units::Mlp => "mlp",
        Units::Both => "both",
    };
    let qs = load_questions(&args.data, Some(args.limit))?;
    let mut todo: Vec<(String, Metric, f64)> = Vec::new();
    for mode in &args.modes {
        for &ar in &args.ars {
            for &metric in &metrics {
                let probe = Row { mode: mode_label(mode, args.dense_tail), metric: metric_label(metric, args.ig_steps), ar, units: units.into(), questions: qs.len(), tokens: tokens_column(mode, args.tokens), bleu: 0.0, token_agreement: 0.0, sacrebleu: 0.0 };
                if !rows.iter().any(|r| r.key() == probe.key()) {
                    todo.push((mode.clone(), metric, ar));
                }
            }
        }
    }
    eprintln!("sift sweep: {} cells to run, {} already in {}", todo.len(), rows.len(), csv.display());
    if old_format && !todo.is_empty() {
        bail!("{} was written before sacreBLEU was reported; its cells can be redrawn but not extended: choose another --out", csv.display());
    }
    if !todo.is_empty() {
        let mut e = Evaluator::load(&args.model, 512, args.ig_steps)?;
        let references = args.out.join("references.json");
        // Cells already there must come from the same numerics as the new ones.
        if let Some(saved) = Evaluator::saved_references_key(&references).filter(|k| !rows.is_empty() && *k != e.m.model.numerics_key()) {
            bail!(
                "{} holds results of {saved}, but this run reads the weights as {}; rerun with{} --f16-weights, or choose another --out",
                args.out.display(),
                e.m.model.numerics_key(),
                if saved.contains("packed") { "out" } else { "" }
            );
        }
        let paper_cells = todo.iter().any(|(mode, ..)| mode == "paper");
        let pb = progress(qs.len() * (todo.len() + 1 + paper_cells as usize), "dense references");
        let refs = e.references(Some(&references), &qs, args.tokens, &pb)?;
        // The paper's answers are as long as each best answer: their own references.
        let (paper_refs, best_lengths) = if paper_cells { e.paper_references(&qs, &pb)? } else { Default::default() };
        for (mode, metric, ar) in todo {
            pb.set_message(format!("{mode} {metric} AR {ar}"));
            let ratios = if units == "both" { Ratios::both(ar) } else { Ratios::mlp(ar) };
            let s = mode_sparsity(&mode, metric, ratios, args.dense_tail)?.expect("modes checked above");
            let (cell_refs, lengths) = if mode == "paper" { (&paper_refs, best_lengths.clone()) } else { (&refs, vec![args.tokens; qs.len()]) };
            let crate::eval::GenScores { bleu, sacrebleu, agreement, .. } = e.gen_scores(&qs, cell_refs, &lengths, &s, &pb)?;
            let row = Row { mode: mode_label(&mode, args.dense_tail), metric: metric_label(metric, args.ig_steps), ar, units: units.into(), questions: qs.len(), tokens: tokens_column(&mode, args.tokens), bleu, token_agreement: agreement, sacrebleu };
            let line = format!("truthfulqa-gen,{},{},{},{},{},{},{:.4},{:.4},{:.4}", row.mode, row.metric, row.ar, row.units, row.questions, row.tokens, row.bleu, row.token_agreement, row.sacrebleu);
            output::append_line(&csv, &line)?;
            rows.push(row);
            write_outputs(&args.out, &rows, qs.len())?;
        }
        pb.finish_and_clear();
    }
    write_outputs(&args.out, &rows, qs.len())?;
    print_table(&rows);
    eprintln!("wrote {}, sweep.json, sweep.svg and sweep.png in {}", csv.display(), args.out.display());
    Ok(())
}

/// The engine's sparsity for a sweep mode name (None: not a mode).
fn mode_sparsity(mode: &str, metric: Metric, ratios: Ratios, dense_tail: f64) -> Result<Option<Sparsity>> {
    Ok(match mode {
        "oracle" => Some(Sparsity::Oracle(metric, ratios)),
        "prompt" => Some(Sparsity::Prompt(metric, ratios, PromptTarget::Next)),
        "prompt-tokens" => Some(Sparsity::Prompt(metric, ratios, PromptTarget::Tokens)),
        "paper" => Some(Sparsity::Paper(Paper::new(metric, ratios, dense_tail)?)),
        _ => None,
    })
}

/// A row's mode column: the mode, and for the paper's a dense tail other
/// than its 0.25 (so rows of different tails are different cells).
fn mode_label(mode: &str, dense_tail: f64) -> String {
    match mode {
        "paper" if dense_tail != 0.25 => format!("paper (dense tail {dense_tail})"),
        _ => mode.to_string(),
    }
}

/// A row's tokens column: 0 for the paper's mode (each answer as long as
/// its best answer).
fn tokens_column(mode: &str, tokens: usize) -> usize {
    if mode == "paper" {
        0
    } else {
        tokens
    }
}

/// The score a row is tabled and charted by: sacreBLEU, or Sift's earlier
/// BLEU for a row that predates it.
fn score(r: &Row) -> f64 {
    if r.sacrebleu.is_nan() {
        r.bleu
    } else {
        r.sacrebleu
    }
}

/// sacreBLEU per metric (rows) and AR (columns), one table per mode.
pub fn print_table(rows: &[Row]) {
    let mut modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
    modes.dedup();
    modes.sort();
    modes.dedup();
    for mode in modes {
        let mut ars: Vec<f64> = rows.iter().filter(|r| r.mode == mode).map(|r| r.ar).collect();
        ars.sort_by(f64::total_cmp);
        ars.dedup();
        let mut metrics: Vec<&str> = rows.iter().filter(|r| r.mode == mode).map(|r| r.metric.as_str()).collect();
        metrics.sort();
        metrics.dedup();
        println!("\n{mode} mode: sacreBLEU of sparse vs dense greedy generation");
        print!("{:<15}", "metric");
        ars.iter().for_each(|a| print!(" {:>6}", format!("{:.0}%", a * 100.0)));
        println!();
        for m in metrics {
            print!("{m:<15}");
            for a in &ars {
                match rows.iter().rev().find(|r| r.mode == mode && r.metric == m && r.ar == *a) {
                    Some(r) if r.sacrebleu.is_nan() => print!(" {:>6}", format!("{:.1}*", r.bleu)),
                    Some(r) => print!(" {:>6.1}", r.sacrebleu),
                    None => print!(" {:>6}", "-"),
                }
            }
            println!();
        }
    }
    if rows.iter().any(|r| r.sacrebleu.is_nan()) {
        println!("* Sift's earlier BLEU: the row was written before sacreBLEU was reported");
    }
}
