//! Evaluation: what a metric and activation ratio cost in quality. Greedy
//! generation and continuation log-likelihoods under any sparsity mode, BLEU,
//! and TruthfulQA (the paper's generation protocol, MC1/MC2).

pub mod bleu;
pub mod continuation;
pub mod paper;
pub mod truthfulqa;

use crate::attribution::{Attributor, Metric};
use crate::error::{Result, SiftError};
use crate::model::sparse::{oracle_step, set_prompt_mask, InputThresholds, PromptTarget, Ratios, Thresholds};
use crate::model::{GpuModel, Logits};
use crate::sampling::argmax;
pub use paper::Paper;

/// How an evaluation runs the model.
#[derive(Clone, Debug)]
pub enum Sparsity {
    Off,
    /// Masks from attribution over the prompt (the context), fixed after.
    Prompt(Metric, Ratios, PromptTarget),
    /// Masks from a dense forward and backward before every token.
    Oracle(Metric, Ratios),
    /// A threshold rule on every token.
    Threshold(Thresholds),
    /// TEAL's rule: magnitude thresholds on every projection's input, every token.
    Inputs(InputThresholds),
    /// The paper's own protocol (`paper`): masks from the dense trajectory,
    /// first token dense, a dense tail of layers. Generation only.
    Paper(Paper),
}

impl Sparsity {
    /// Refuses a thresholds file (neuron or input rule) made for another
    /// model; other modes carry no file.
    pub fn check(&self, model: &GpuModel) -> Result<()> {
        match self {
            Sparsity::Threshold(t) => t.check(model),
            Sparsity::Inputs(t) => t.check(model),
            _ => Ok(()),
        }
    }

    /// What [`Sparsity::check`] can tell from the model's metadata alone, before it loads.
    pub fn check_shape(&self, c: &crate::model::Config) -> Result<()> {
        match self {
            Sparsity::Threshold(t) => t.check_shape(c),
            Sparsity::Inputs(t) => t.check_shape(c),
            _ => Ok(()),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Sparsity::Off => "off".into(),
            Sparsity::Prompt(m, r, t) => format!("prompt ({} target) {m} mlp {} heads {}", t.name(), r.mlp, r.heads),
            Sparsity::Oracle(m, r) => format!("oracle {m} mlp {} heads {}", r.mlp, r.heads),
            Sparsity::Threshold(t) => format!("threshold {:?}", t.rule),
            Sparsity::Inputs(_) => "threshold on the projections' inputs (TEAL)".into(),
            Sparsity::Paper(p) => format!("paper protocol {} mlp {} heads {} dense tail {}", p.metric, p.ratios.mlp, p.ratios.heads, p.dense_tail),
        }
    }
}

fn log_softmax_at(logits: &[f32], i: u32) -> f64 {
    -crate::perplexity::nll(logits, i)
}

/// Where a threshold rule applies besides the decoded tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuleScope {
    /// As sparse decoding runs it: the prompt is prefilled dense, and every
    /// token after it (from the last prompt token's logits on) is under the rule.
    #[default]
    Decoding,
    /// The rule also zeroes the prompt's neurons, as the Sparsing Law measures it.
    EveryToken,
}

/// Sets up `sparsity` for a sequence starting with `prompt`; returns the
/// logits after the prompt (the prompt is in the cache), computed under the
/// sparse mode.
pub(crate) fn start(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], sparsity: &Sparsity, scope: RuleScope) -> Result<Vec<f32>> {
    model.disable_sparsity();
    model.reset();
    let (head, last) = prompt.split_at(prompt.len() - 1);
    match sparsity {
        Sparsity::Off => model.forward(prompt, Logits::Last),
        Sparsity::Threshold(t) if scope == RuleScope::EveryToken => {
            model.set_threshold_mask_every_token(t)?;
            model.forward(prompt, Logits::Last)
        }
        Sparsity::Threshold(t) => {
            // Dense prefill; the last prompt token runs one-token, under the rule.
            if !head.is_empty() {
                model.forward(head, Logits::Last)?;
            }
            model.set_threshold_mask(t)?;
            model.forward(last, Logits::Last)
        }
        Sparsity::Inputs(t) => {
            let every_token = scope == RuleScope::EveryToken;
            if !every_token && !head.is_empty() {
                model.forward(head, Logits::Last)?;
            }
            model.set_input_rule(t, every_token)?;
            // Only what the scored tokens read counts.
            let logits = if every_token { model.forward(prompt, Logits::Last) } else { model.forward(last, Logits::Last) };
            model.input_share_read()?;
            logits
        }
        Sparsity::Prompt(metric, ratios, target) => {
            set_prompt_mask(model, attributor, prompt, *metric, *ratios, *target)?;
            // The cache holds the prompt; rerun its last token (sparse) for the next logits.
            model.rewind(head.len())?;
            model.forward(last, Logits::Last)
        }
        Sparsity::Oracle(metric, ratios) => {
            // A sequence's scores must not depend on what the attributor
            // cached before it (its reused prefix rounds differently).
            attributor.forget_cached_tokens();
            Ok(oracle_step(model, attributor, prompt, *metric, *ratios)?.0)
        }
        Sparsity::Paper(_) => Err(SiftError::InvalidInput("the paper's protocol runs through eval::decode".into())),
    }
}

/// Logits after appending `token` to `tokens` (already in the cache but `token`).
fn step(model: &mut GpuModel, attributor: &mut Attributor, tokens: &[u32], sparsity: &Sparsity) -> Result<Vec<f32>> {
    match sparsity {
        Sparsity::Oracle(metric, ratios) => Ok(oracle_step(model, attributor, tokens, *metric, *ratios)?.0),
        _ => model.forward(&tokens[tokens.len() - 1..], Logits::Last),
    }
}

fn finish(model: &mut GpuModel) {
    model.disable_sparsity();
    model.reset();
}

/// Which tokens [`decode`] appends.
#[derive(Clone, Copy, Debug)]
pub enum Next<'a> {
    /// The model's own greedy choice, up to `n` tokens, stopping before a `stop` id.
    Greedy { n: usize, stop: &'a [u32] },
    /// These tokens, whatever the model predicts (teacher forcing).
    Forced(&'a [u32]),
}

/// One decoded position: the token appended there, its log-probability,
/// the model's top token, and the fraction of MLP neurons kept for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub token: u32,
    pub log_prob: f64,
    pub top: u32,
    pub mlp_kept: f64,
}

/// Decodes after `prompt` under `sparsity`, one token a step, exactly as
/// sparse generation does (`Next::Greedy`) or scoring given tokens with the
/// same computation (`Next::Forced`), so that teacher-forced scores are
/// those generation would produce. Dense forced scoring runs as one batched
/// forward.
pub fn decode(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], next: Next, sparsity: &Sparsity, scope: RuleScope) -> Result<Vec<Scored>> {
    if prompt.is_empty() {
        return Err(SiftError::InvalidInput("empty prompt".into()));
    }
    if let Next::Forced(tokens) = next {
        model.check_fits(prompt.len() + tokens.len())?;
    }
    if let Sparsity::Paper(p) = sparsity {
        return match next {
            Next::Greedy { n, stop } => paper::generate(model, attributor, prompt, n, stop, p),
            Next::Forced(_) => Err(SiftError::InvalidInput("the paper's protocol applies to generation; score continuations under another mode".into())),
        };
    }
    let result = (|| {
        if let (Sparsity::Off, Next::Forced(forced)) = (sparsity, next) {
            model.disable_sparsity();
            model.reset();
            let all: Vec<u32> = prompt.iter().chain(forced).copied().collect();
            let logits = model.forward(&all, Logits::All)?;
            let v = model.config.vocab_size;
            let at = |i: usize| &logits[(prompt.len() + i - 1) * v..(prompt.len() + i) * v];
            return Ok(forced.iter().enumerate().map(|(i, &t)| Scored { token: t, log_prob: log_softmax_at(at(i), t), top: argmax(at(i)), mlp_kept: 1.0 }).collect());
        }
        let mut tokens = prompt.to_vec();
        let mut logits = start(model, attributor, prompt, sparsity, scope)?;
        let mut out: Vec<Scored> = Vec::new();
        loop {
            let top = argmax(&logits);
            let token = match next {
                Next::Greedy { n, stop } if out.len() < n && tokens.len() < model.max_ctx && !stop.contains(&top) => top,
                Next::Forced(forced) if out.len() < forced.len() => forced[out.len()],
                _ => break,
            };
            let mlp_kept = model.active_fractions()?.0;
            out.push(Scored { token, log_prob: log_softmax_at(&logits, token), top, mlp_kept });
            tokens.push(token);
            let more = match next {
                Next::Greedy { n, .. } => out.len() < n && tokens.len() < model.max_ctx,
                Next::Forced(forced) => out.len() < forced.len(),
            };
            if !more {
                break;
            }
            logits = step(model, attributor, &tokens, sparsity)?;
        }
        Ok(out)
    })();
    finish(model);
    result
}

/// Greedy generation of up to `n` tokens after `prompt`, stopping at a stop
/// id (a threshold rule applies to the prompt too).
pub fn greedy(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], n: usize, stop: &[u32], sparsity: &Sparsity) -> Result<Vec<u32>> {
    let scored = decode(model, attributor, prompt, Next::Greedy { n, stop }, sparsity, RuleScope::EveryToken)?;
    Ok(scored.iter().map(|s| s.token).collect())
}

/// Sum of log p(continuation | context) under `sparsity` (decoded token by
/// token after the context, so sparse modes apply to the scored tokens; a
/// threshold rule applies to the context too).
pub fn continuation_log_prob(model: &mut GpuModel, attributor: &mut Attributor, context: &[u32], continuation: &[u32], sparsity: &Sparsity) -> Result<f64> {
    if context.is_empty() || continuation.is_empty() {
        return Err(SiftError::InvalidInput("a continuation needs a non-empty context and continuation".into()));
    }
    let scored = decode(model, attributor, context, Next::Forced(continuation), sparsity, RuleScope::EveryToken)?;
    Ok(scored.iter().map(|s| s.log_prob).sum())
}
