//! `sift eval TASK`: what a sparsity mode, metric and activation ratio cost
//! in quality, on perplexity or TruthfulQA (the paper's generation protocol,
//! or MC1/MC2), following DESIGN.md's protocols.

use crate::common::{load_with, Loaded, ModelArgs};
use crate::sparsity::{Sparsity as Mode, SparsityArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sift_engine::attribution::Attributor;
use sift_engine::eval::continuation::{self, Shape};
use sift_engine::eval::{bleu, continuation_log_prob, decode, paper, truthfulqa, Next, Paper, RuleScope, Scored, Sparsity};
use sift_engine::model::sparse::{InputThresholds, Thresholds};
use std::path::{Path, PathBuf};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Perplexity of a text file (default WikiText-2 test); sparsity off or threshold.
    Perplexity,
    /// TruthfulQA generation: sacreBLEU, Sift's earlier BLEU and token agreement of sparse against dense greedy generations (--protocol paper: the paper's released protocol).
    TruthfulqaGen,
    /// TruthfulQA MC1 and MC2 by log-likelihood.
    TruthfulqaMc,
    /// Continuation quality (DESIGN.md): per window, P prompt tokens prefilled
    /// dense, then C tokens scored teacher-forced under the sparse rule, exactly
    /// as sparse decoding computes them; dense and sparse perplexity of those
    /// tokens, their ratio, and top-1 agreement with dense.
    Continuation,
}

/// How truthfulqa-gen generates and masks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Sift's: --tokens per answer, every layer masked, the oracle's masks
    /// from the sequence as generated (dense keys and values each step).
    Sift,
    /// The sparse-activation paper's released code: with --sparsity oracle,
    /// masks from the dense trajectory applied by step, the first token dense,
    /// the last --dense-tail of the layers dense, each answer as long as the
    /// question's best answer in tokens.
    Paper,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub task: Task,
    /// truthfulqa-gen: the protocol (see `sift eval --help`).
    #[arg(long, value_enum, default_value_t = Protocol::Sift)]
    pub protocol: Protocol,
    /// --protocol paper: the fraction of layers, from the last, left dense (ceil of it times the layer count).
    #[arg(long, default_value_t = 0.25)]
    pub dense_tail: f64,
    /// Data file (default: WikiText-2 test or truthfulqa.csv in ../shared/data).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The data file, as an option (the same as FILE).
    #[arg(long, conflicts_with = "file")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sparse: SparsityArgs,
    /// Questions (or perplexity windows) to evaluate.
    #[arg(long)]
    pub limit: Option<usize>,
    /// New tokens per TruthfulQA generation.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Perplexity window length; for continuation, the context the model is
    /// loaded with (at least prompt + score tokens).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    #[command(flatten)]
    pub windows: WindowArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// truthfulqa-gen: keep the dense references in this JSON file and reuse
    /// them on later runs with the same model and --tokens (they are most of
    /// the run's time).
    #[arg(long)]
    pub references: Option<PathBuf>,
}

/// The continuation protocol's windows (`eval continuation`, `frontier`).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct WindowArgs {
    /// Continuation: prompt tokens per window (prefilled dense; prompt mode attributes over them).
    #[arg(long, default_value_t = Shape::DEFAULT.prompt_tokens)]
    pub prompt_tokens: usize,
    /// Continuation: tokens scored per window, teacher-forced under the sparse rule.
    #[arg(long, default_value_t = Shape::DEFAULT.score_tokens)]
    pub score_tokens: usize,
    /// Continuation: windows of prompt + score tokens, from the start of the file.
    #[arg(long, default_value_t = Shape::DEFAULT.windows)]
    pub windows: usize,
}

impl WindowArgs {
    pub fn shape(self) -> Shape {
        Shape { prompt_tokens: self.prompt_tokens, score_tokens: self.score_tokens, windows: self.windows }
    }
}

/// `../shared/data/NAME` beside the repository.
pub fn shared_data(name: &str) -> PathBuf {
    PathBuf::from("../shared/data").join(name)
}

/// The engine's sparsity for these options (thresholds loaded and checked).
pub fn engine_sparsity(args: &SparsityArgs) -> Result<Sparsity> {
    Ok(match args.sparsity {
        Mode::Off => Sparsity::Off,
        Mode::Prompt => Sparsity::Prompt(args.metric()?, args.ratios()?, args.prompt_target()?),
        Mode::Oracle => Sparsity::Oracle(args.metric()?, args.ratios()?),
        Mode::Threshold => {
            let path = args.thresholds.as_ref().context("--sparsity threshold needs --thresholds FILE")?;
            match InputThresholds::is_input_file(path) {
                true => Sparsity::Inputs(InputThresholds::load(path)?),
                false => Sparsity::Threshold(Thresholds::load(path)?),
            }
        }
        Mode::File => bail!("sift eval takes --sparsity off, prompt, oracle, threshold or (for continuation) auto"),
        Mode::Auto => bail!("--sparsity auto is chosen per model, after it loads: sift eval takes it for continuation only"),
    })
}

/// A loaded model ready for any sparsity mode.
pub struct Evaluator {
    pub m: Loaded,
    pub attributor: Attributor,
    /// The paper protocol's unit rankings along each question's dense
    /// trajectory, per metric: the same for every ratio, so a sweep's cells
    /// of one metric share them (by question text and metric name).
    rankings: std::collections::HashMap<(String, &'static str), paper::Rankings>,
}

impl Evaluator {
    /// `ig_steps`: the Integrated Gradients steps of `--metric ig`.
    pub fn load(model: &ModelArgs, ctx: usize, ig_steps: usize) -> Result<Evaluator> {
        let mut m = load_with(model, ctx, true)?;
        let weights = m.weights.take().context("weights kept")?;
        m.model.enable_sparse(&weights)?;
        let mut attributor = Attributor::new(&m.model, &weights)?;
        attributor.set_ig_steps(ig_steps)?;
        Ok(Evaluator { m, attributor, rankings: Default::default() })
    }

    /// The dense greedy references of the paper's protocol, one per question.
    /// With `cache`, those an earlier run of the same model (weights read the
    /// same way, `GpuModel::numerics_key`) and token count saved there are
    /// reused (question by question), and the file is updated.
    pub fn references(&mut self, cache: Option<&Path>, qs: &[truthfulqa::Question], tokens: usize, pb: &ProgressBar) -> Result<Vec<Vec<u32>>> {
        #[derive(serde::Serialize, serde::Deserialize, Default)]
        struct Saved {
            model: String,
            tokens: usize,
            references: std::collections::BTreeMap<String, Vec<u32>>,
        }
        let model = self.m.model.numerics_key();
        let mut saved: Saved = match cache.map(|path| (path, std::fs::read_to_string(path))) {
            Some((path, Ok(text))) => serde_json::from_str(&text).with_context(|| format!("{} is not a references file; delete it to regenerate", path.display()))?,
            _ => Saved::default(),
        };
        if saved.model != model || saved.tokens != tokens {
            saved = Saved { model, tokens, references: Default::default() };
        }
        let mut out = Vec::with_capacity(qs.len());
        for q in qs {
            let r = match saved.references.get(&q.question) {
                Some(r) => r.clone(),
                None => {
                    let r = self.generate(q, tokens, &Sparsity::Off)?;
                    saved.references.insert(q.question.clone(), r.clone());
                    r
                }
            };
            out.push(r);
            pb.inc(1);
        }
        if let Some(path) = cache {
            sift_engine::output::write_atomic(path, serde_json::to_string(&saved)?.as_bytes())?;
        }
        Ok(out)
    }

    /// The model key a references file was saved under, if it is one.
    pub fn saved_references_key(path: &Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?.get("model")?.as_str().map(str::to_string)
    }

    pub fn generate(&mut self, q: &truthfulqa::Question, tokens: usize, s: &Sparsity) -> Result<Vec<u32>> {
        Ok(self.generate_scored(q, tokens, s)?.iter().map(|t| t.token).collect())
    }

    /// The paper protocol's dense references, each as long as its question's
    /// best answer in tokens, and those lengths.
    pub fn paper_references(&mut self, qs: &[truthfulqa::Question], pb: &ProgressBar) -> Result<(Vec<Vec<u32>>, Vec<usize>)> {
        let lengths = qs.iter().map(|q| Ok(self.m.tokenizer.encode_plain(&q.best)?.len().max(1))).collect::<Result<Vec<_>>>()?;
        let refs = qs.iter().zip(&lengths).map(|(q, &n)| self.generate(q, n, &Sparsity::Off).inspect(|_| pb.inc(1))).collect::<Result<_>>()?;
        Ok((refs, lengths))
    }

    /// The generation with each token's share of MLP neurons kept.
    pub fn generate_scored(&mut self, q: &truthfulqa::Question, tokens: usize, s: &Sparsity) -> Result<Vec<Scored>> {
        let (ids, stop) = self.gen_prompt(q)?;
        Ok(decode(&mut self.m.model, &mut self.attributor, &ids, Next::Greedy { n: tokens, stop: &stop }, s, RuleScope::EveryToken)?)
    }

    /// A question's generation prompt in tokens, and the ids generation stops at.
    fn gen_prompt(&self, q: &truthfulqa::Question) -> Result<(Vec<u32>, Vec<u32>)> {
        Ok((self.m.tokenizer.encode(&truthfulqa::gen_prompt(q))?, self.m.tokenizer.stop_ids.clone()))
    }

    /// Mean sacreBLEU and Sift's BLEU (0-100), token agreement (0-1) and
    /// first divergent token position of generations under `s` against `refs`.
    /// `lengths`: the tokens to generate for each question.
    pub fn gen_scores(&mut self, questions: &[truthfulqa::Question], refs: &[Vec<u32>], lengths: &[usize], s: &Sparsity, pb: &ProgressBar) -> Result<GenScores> {
        let (mut b, mut sacre, mut a, mut first) = (0.0, 0.0, 0.0, 0.0);
        let (mut kept, mut generated) = (0.0, 0usize);
        for ((q, r), &tokens) in questions.iter().zip(refs).zip(lengths) {
            let scored = match s {
                // The paper's masks follow the dense trajectory: the reference itself.
                Sparsity::Paper(p) => {
                    let (ids, stop) = self.gen_prompt(q)?;
                    let key = (q.question.clone(), p.metric.name());
                    if !self.rankings.contains_key(&key) {
                        let ranked = paper::Rankings::along(&mut self.m.model, &mut self.attributor, &ids, r, p.metric)?;
                        self.rankings.insert(key.clone(), ranked);
                    }
                    paper::generate_ranked(&mut self.m.model, &ids, r.len(), &stop, p, &self.rankings[&key])?
                }
                _ => self.generate_scored(q, tokens, s)?,
            };
            kept += scored.iter().map(|t| t.mlp_kept).sum::<f64>();
            generated += scored.len();
            let got: Vec<u32> = scored.iter().map(|t| t.token).collect();
            let (gt, rt) = (self.m.tokenizer.decode(&got)?, self.m.tokenizer.decode(r)?);
            b += bleu::sentence_bleu(&bleu::words(&gt), &bleu::words(&rt));
            sacre += bleu::sacrebleu(&gt, &rt);
            a += bleu::token_agreement(&got, r);
            first += bleu::first_divergence(&got, r) as f64;
            pb.inc(1);
        }
        let n = questions.len().max(1) as f64;
        let mlp_kept = if generated == 0 { 1.0 } else { kept / generated as f64 };
        Ok(GenScores { sacrebleu: sacre / n, bleu: 100.0 * b / n, agreement: a / n, first_divergence: first / n, mlp_kept })
    }
}

/// TruthfulQA generation scores against the dense references, averaged over questions.
pub struct GenScores {
    /// sacreBLEU per answer (`corpus_bleu([hyp], [[ref]])`, the paper's), averaged.
    pub sacrebleu: f64,
    /// Sift's earlier sentence BLEU (add-one smoothing, empty = empty scores 100).
    pub bleu: f64,
    pub agreement: f64,
    /// The first position where the generation leaves its reference.
    pub first_divergence: f64,
    /// MLP neurons kept over all layers and generated tokens: the effective AR.
    pub mlp_kept: f64,
}

pub fn progress(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(ProgressStyle::with_template("{msg:28} {bar:30} {pos}/{len} ({elapsed}, eta {eta})").unwrap());
    pb.set_message(what.to_string());
    pb
}

pub fn load_questions(data: &Option<PathBuf>, limit: Option<usize>) -> Result<Vec<truthfulqa::Question>> {
    let path = data.clone().unwrap_or_else(|| shared_data("truthfulqa.csv"));
    let mut qs = truthfulqa::load(&path)?;
    if let Some(n) = limit {
        if n == 0 {
            bail!("--limit must be at least 1");
        }
        qs.truncate(n);
    }
    Ok(qs)
}

/// Reads a text file to score, refusing an empty one by name.
pub fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim().is_empty() {
        bail!("{}: the file is empty", path.display());
    }
    Ok(text)
}

/// `sift eval continuation`: dense scores, then the setting's, on the same windows.
fn continuation(args: &Args) -> Result<serde_json::Value> {
    let shape = args.windows.shape();
    shape.check(args.ctx)?;
    let path = args.data.clone().or(args.file.clone()).unwrap_or_else(|| shared_data("wikitext2-test.txt"));
    let text = read_text(&path)?;
    let mut e = Evaluator::load(&args.model, args.ctx, args.sparse.ig_steps)?;
    let sparse_args = crate::auto::resolve(&e.m.model, &args.sparse)?;
    let sparsity = &engine_sparsity(&sparse_args)?;
    // Before the dense pass, not after it.
    if let Some(file) = &sparse_args.thresholds {
        sparsity.check(&e.m.model).with_context(|| file.display().to_string())?;
    }
    // Tokenized as the perplexity protocol does: the text without BOS, each
    // window starting with BOS where the model requires it.
    let tokens = e.m.tokenizer.encode_plain(&text)?;
    let windows = shape.cut(&tokens, e.m.tokenizer.required_bos()).with_context(|| path.display().to_string())?;
    let pb = progress(2 * windows.len(), "continuation windows");
    let dense = continuation::score_windows(&mut e.m.model, &mut e.attributor, &shape, &windows, &Sparsity::Off, |_| pb.inc(1))?;
    let sparse = continuation::score_windows(&mut e.m.model, &mut e.attributor, &shape, &windows, sparsity, |_| pb.inc(1))?;
    pb.finish_and_clear();
    let q = continuation::compare(&dense, &sparse)?;
    let mut out = json!({ "task": "continuation", "file": path.display().to_string() });
    merge(&mut out, serde_json::to_value(shape)?);
    merge(&mut out, serde_json::to_value(&q)?);
    merge(&mut out, settings(&sparse_args));
    out["sparsity"] = json!(sparsity.label());
    Ok(out)
}

/// The sparsity options a result was made with, as JSON fields.
pub fn settings(args: &SparsityArgs) -> serde_json::Value {
    let mode = format!("{:?}", args.sparsity).to_lowercase();
    match args.sparsity {
        Mode::Off => json!({ "mode": mode }),
        Mode::Prompt | Mode::Oracle => json!({ "mode": mode, "metric": args.metric, "ar": args.ar, "units": format!("{:?}", args.units).to_lowercase(), "prompt_target": args.prompt_target }),
        Mode::Threshold => json!({ "mode": mode, "thresholds": args.thresholds.as_ref().map(|p| p.display().to_string()) }),
        Mode::File => json!({ "mode": mode, "mask": args.mask.as_ref().map(|p| p.display().to_string()) }),
        Mode::Auto => json!({ "mode": mode }),
    }
}

/// Adds `from`'s fields to the JSON object `into`.
pub fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

pub fn run(args: Args) -> Result<()> {
    args.sparse.check_before_load(&args.model)?;
    if args.protocol == Protocol::Paper {
        if args.task != Task::TruthfulqaGen {
            bail!("--protocol paper applies to truthfulqa-gen (the paper's generation protocol), not to {:?}", args.task);
        }
        if args.sparse.sparsity != Mode::Oracle {
            bail!("--protocol paper masks every token from the dense trajectory: use it with --sparsity oracle");
        }
        if args.references.is_some() {
            bail!("--references keeps references of --tokens each; --protocol paper makes each as long as its best answer");
        }
        Paper::new(args.sparse.metric()?, args.sparse.ratios()?, args.dense_tail)?;
    }
    if args.task == Task::Continuation {
        let result = continuation(&args)?;
        return print_result(&result, args.json);
    }
    let sparsity = engine_sparsity(&args.sparse)?;
    let data = args.data.clone().or(args.file.clone());
    let result = match args.task {
        Task::Continuation => unreachable!("handled above"),
        Task::Perplexity => {
            if matches!(sparsity, Sparsity::Prompt(..) | Sparsity::Oracle(..)) {
                bail!("perplexity takes --sparsity off or threshold (prompt and oracle masks are defined for generation)");
            }
            let path = data.clone().unwrap_or_else(|| shared_data("wikitext2-test.txt"));
            let r = crate::perplexity::measure(&args.model, &path, args.ctx, args.limit, args.sparse.thresholds.as_deref().filter(|_| matches!(sparsity, Sparsity::Threshold(_))))?;
            json!({ "task": "perplexity", "perplexity": r.perplexity, "scored_tokens": r.scored_tokens, "windows": r.windows })
        }
        Task::TruthfulqaGen => {
            let qs = load_questions(&data, args.limit)?;
            let mut e = Evaluator::load(&args.model, 512, args.sparse.ig_steps)?;
            let pb = progress(2 * qs.len(), "TruthfulQA generation");
            let (sparsity, refs, lengths) = match (args.protocol, sparsity.clone()) {
                (Protocol::Paper, Sparsity::Oracle(metric, ratios)) => {
                    let (refs, lengths) = e.paper_references(&qs, &pb)?;
                    (Sparsity::Paper(Paper::new(metric, ratios, args.dense_tail)?), refs, lengths)
                }
                (_, s) => (s, e.references(args.references.as_deref(), &qs, args.tokens, &pb)?, vec![args.tokens; qs.len()]),
            };
            let g = e.gen_scores(&qs, &refs, &lengths, &sparsity, &pb)?;
            pb.finish_and_clear();
            let protocol = match args.protocol {
                Protocol::Sift => json!("sift"),
                Protocol::Paper => json!({ "name": "paper", "dense_tail": args.dense_tail, "tokens": "the best answer's" }),
            };
            json!({ "task": "truthfulqa-gen", "protocol": protocol, "questions": qs.len(), "sacrebleu": g.sacrebleu, "bleu": g.bleu, "token_agreement": g.agreement,
                    "first_divergence": g.first_divergence, "ar": args.sparse.ratios()?.mlp, "effective_mlp_ar": g.mlp_kept, "sparsity": sparsity.label() })
        }
        Task::TruthfulqaMc => {
            let qs = load_questions(&data, args.limit)?;
            let mut e = Evaluator::load(&args.model, 512, args.sparse.ig_steps)?;
            let pb = progress(qs.len(), "TruthfulQA MC");
            let (mut mc1, mut mc2) = (0.0, 0.0);
            for q in &qs {
                let ctx = e.m.tokenizer.encode(&truthfulqa::mc_prompt(q))?;
                let mut ll = |answer: &str| -> Result<f64> {
                    let cont = e.m.tokenizer.encode_plain(&format!(" {answer}"))?;
                    Ok(continuation_log_prob(&mut e.m.model, &mut e.attributor, &ctx, &cont, &sparsity)?)
                };
                let best = ll(&q.best)?;
                let correct: Vec<f64> = q.correct.iter().map(|a| ll(a)).collect::<Result<_>>()?;
                let incorrect: Vec<f64> = q.incorrect.iter().map(|a| ll(a)).collect::<Result<_>>()?;
                mc1 += truthfulqa::mc1(best, &incorrect) as u8 as f64;
                mc2 += truthfulqa::mc2(&correct, &incorrect);
                pb.inc(1);
            }
            pb.finish_and_clear();
            let n = qs.len() as f64;
            json!({ "task": "truthfulqa-mc", "questions": qs.len(), "mc1": mc1 / n, "mc2": mc2 / n })
        }
    };
    let mut result = result;
    if result.get("sparsity").is_none() {
        result["sparsity"] = json!(sparsity.label());
    }
    print_result(&result, args.json)
}

fn print_result(result: &serde_json::Value, as_json: bool) -> Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => s.clone(),
            _ => v.to_string(),
        };
        let fields: Vec<String> = result.as_object().unwrap().iter().map(|(k, v)| format!("{k}: {}", show(v))).collect();
        println!("{}", fields.join(" | "));
    }
    Ok(())
}
