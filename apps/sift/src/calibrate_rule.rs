//! `sift calibrate-rule`: per-token rules that keep a chosen share of the MLP
//! neurons (`sift_engine::rule_calibration`), one thresholds file per rule
//! weight and share, so that rules that weigh |h_i| by what attribution says
//! matters (a GxO estimate) and rules that do not (magnitude, CETT's norm)
//! compare at equal cost in `sift frontier`.

use crate::common::{load_with, ModelArgs};
use crate::eval::{progress, read_text, shared_data};
use anyhow::{bail, Context, Result};
use serde_json::json;
use sift_engine::attribution::Attributor;
use sift_engine::input_calibration::InputStats;
use sift_engine::model::sparse::{InputThresholds, Site, Thresholds};
use sift_engine::rule_calibration::{RuleStats, RuleWeight};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Calibration text (default: ../shared/data/wikitext2-test.txt). Its
    /// windows are taken from the end of the file, away from the windows
    /// `sift eval continuation` and `sift frontier` score (the start).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Rule weights. On h: magnitude (|h_i|), down-norm (|h_i| ||W_down[:, i]||,
    /// the CETT rule), gxo-estimate (|h_i| E|dF/dh_i|), corrected-gxo-estimate
    /// (|h_i| (E|dF/dh_i| + 0.5 E||dF/dh||)). On the gate, which lets decoding
    /// skip a dropped neuron's up row and W_down column: gate (|silu(gate_i)|,
    /// CATS), gate-up-down (|silu(gate_i)| E|up_i| ||W_down[:, i]||),
    /// gate-gxo-estimate (|silu(gate_i)| E|up_i| E|dF/dh_i|). And `inputs`:
    /// TEAL's rule, |x_j| on the input of every projection of --input-sites
    /// (files named inputs-keepNN.json, or inputs-SITES-keepNN.json for some sites; the --keep share of each site's
    /// inputs is kept in every layer).
    #[arg(long, value_delimiter = ',', default_value = "magnitude,down-norm,gxo-estimate,corrected-gxo-estimate,gate,gate-up-down,gate-gxo-estimate")]
    pub weights: Vec<String>,
    /// Where `inputs` thresholds a projection's input: attn (before q/k/v),
    /// o (before W_o), mlp (before gate|up), down (before W_down).
    #[arg(long, value_delimiter = ',', default_value = "attn,o,mlp,down")]
    pub input_sites: Vec<String>,
    /// Shares of each layer's neurons to keep (one file each), in (0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.9,0.8,0.7,0.6,0.5")]
    pub keep: Vec<f64>,
    /// Calibration windows, from the end of the file.
    #[arg(long, default_value_t = 16)]
    pub windows: usize,
    /// Window length in tokens.
    #[arg(long, default_value_t = 256)]
    pub ctx: usize,
    /// Directory for the files, named WEIGHT-keepNN.json.
    #[arg(long, default_value = "rules")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let inputs = args.weights.iter().any(|w| w == "inputs");
    let sites: Vec<Site> = args
        .input_sites
        .iter()
        .map(|s| Site::ALL.into_iter().find(|x| x.name() == s).with_context(|| format!("unknown input site {s:?}; use attn, o, mlp or down")))
        .collect::<Result<_>>()?;
    let weights: Vec<RuleWeight> = args
        .weights
        .iter()
        .filter(|w| *w != "inputs")
        .map(|w| RuleWeight::parse(w).with_context(|| format!("unknown rule weight {w:?}; use {} or inputs", RuleWeight::ALL.map(RuleWeight::name).join(", "))))
        .collect::<Result<_>>()?;
    if let Some(k) = args.keep.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
        bail!("--keep takes shares in (0, 1], not {k}");
    }
    if args.windows == 0 || args.ctx < 2 {
        bail!("--windows must be at least 1 and --ctx at least 2");
    }
    let path = args.file.clone().unwrap_or_else(|| shared_data("wikitext2-test.txt"));
    let text = read_text(&path)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut m = load_with(&args.model, args.ctx, true)?;
    let model_weights = m.weights.take().context("weights kept for calibration")?;
    let mut attributor = Attributor::new(&m.model, &model_weights)?;
    if args.ctx > attributor.max_tokens(&m.model) {
        bail!("--ctx {} exceeds the {} tokens one attribution pass can hold on this adapter", args.ctx, attributor.max_tokens(&m.model));
    }
    let bos = m.tokenizer.required_bos();
    let tokens = m.tokenizer.encode_plain(&text)?;
    let needed = sift_engine::perplexity::text_tokens(args.windows, args.ctx, bos);
    if tokens.len() < needed {
        bail!("{}: {} tokens, fewer than {} windows of {}", path.display(), tokens.len(), args.windows, args.ctx);
    }
    let windows = sift_engine::perplexity::windows(&tokens[tokens.len() - needed..], args.ctx, bos, None);
    let windows: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
    if inputs {
        let pb = progress(windows.len(), "forward over windows (inputs)");
        let stats = InputStats::collect(&mut m.model, &mut attributor, &model_weights, &windows, |_| pb.inc(1))?;
        pb.finish_and_clear();
        let names: Vec<&str> = sites.iter().map(|s| s.name()).collect();
        for &keep in &args.keep {
            let info = json!({ "weight": "inputs", "sites": names, "keep": keep, "file": path.display().to_string(), "windows": args.windows, "ctx": args.ctx, "from": "end of file" });
            // inputs-keepNN.json for every site, else the sites named: inputs-o-down-keepNN.json.
            let which = if sites.len() == Site::ALL.len() { String::new() } else { format!("-{}", names.join("-")) };
            let out = args.out.join(format!("inputs{which}-keep{:02}.json", (keep * 100.0).round() as u32));
            InputThresholds::new(&m.model, stats.thresholds(&sites, keep)?, info).save(&out)?;
            println!("{}", out.display());
        }
        if weights.is_empty() {
            return Ok(());
        }
    }
    let pb = progress(windows.len(), "attribution over windows");
    let stats = RuleStats::collect(&mut m.model, &mut attributor, &model_weights, &windows, |_| pb.inc(1))?;
    pb.finish_and_clear();
    for kind in &weights {
        let w = stats.weights(*kind);
        for &keep in &args.keep {
            let thresholds = stats.thresholds(*kind, &w, keep)?;
            let info = json!({ "weight": kind.name(), "keep": keep, "file": path.display().to_string(), "windows": args.windows, "ctx": args.ctx, "from": "end of file", "target": "the windows' own next-token log-probabilities" });
            let out = args.out.join(format!("{}-keep{:02}.json", kind.name(), (keep * 100.0).round() as u32));
            Thresholds::weighted(&m.model, kind.rule(), w.clone(), thresholds, info).save(&out)?;
            println!("{}", out.display());
        }
    }
    Ok(())
}
