//! Evaluation: what a metric and activation ratio cost in quality. Greedy
//! generation and continuation log-likelihoods under any sparsity mode, BLEU,
//! and TruthfulQA (the paper's generation protocol, MC1/MC2).

pub mod bleu;
pub mod truthfulqa;

use crate::attribution::{Attributor, Metric};
use crate::error::{Result, SiftError};
use crate::model::sparse::{oracle_step, set_prompt_mask, PromptTarget, Ratios, Thresholds};
use crate::model::{GpuModel, Logits};
use crate::sampling::argmax;

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
}

impl Sparsity {
    pub fn label(&self) -> String {
        match self {
            Sparsity::Off => "off".into(),
            Sparsity::Prompt(m, r, t) => format!("prompt ({} target) {m} mlp {} heads {}", t.name(), r.mlp, r.heads),
            Sparsity::Oracle(m, r) => format!("oracle {m} mlp {} heads {}", r.mlp, r.heads),
            Sparsity::Threshold(t) => format!("threshold {:?}", t.rule),
        }
    }
}

fn log_softmax_at(logits: &[f32], i: u32) -> f64 {
    -crate::perplexity::nll(logits, i)
}

/// Sets up `sparsity` for a sequence starting with `prompt`; returns the
/// logits after the prompt (the prompt is in the cache).
fn start(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], sparsity: &Sparsity) -> Result<Vec<f32>> {
    model.disable_sparsity();
    model.reset();
    match sparsity {
        Sparsity::Off => model.forward(prompt, Logits::Last),
        Sparsity::Threshold(t) => {
            model.set_threshold_mask_every_token(t)?;
            model.forward(prompt, Logits::Last)
        }
        Sparsity::Prompt(metric, ratios, target) => {
            set_prompt_mask(model, attributor, prompt, *metric, *ratios, *target)?;
            // The cache holds the prompt; rerun its last token (sparse) for the next logits.
            model.rewind(prompt.len() - 1)?;
            model.forward(&prompt[prompt.len() - 1..], Logits::Last)
        }
        Sparsity::Oracle(metric, ratios) => Ok(oracle_step(model, attributor, prompt, *metric, *ratios)?.0),
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

/// Greedy generation of up to `n` tokens after `prompt`, stopping at a stop id.
pub fn greedy(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], n: usize, stop: &[u32], sparsity: &Sparsity) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(SiftError::InvalidInput("empty prompt".into()));
    }
    let result = (|| {
        let mut tokens = prompt.to_vec();
        let mut logits = start(model, attributor, prompt, sparsity)?;
        let mut out = Vec::new();
        while out.len() < n && tokens.len() < model.max_ctx {
            let next = argmax(&logits);
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            tokens.push(next);
            if out.len() < n {
                logits = step(model, attributor, &tokens, sparsity)?;
            }
        }
        Ok(out)
    })();
    finish(model);
    result
}

/// Sum of log p(continuation | context) under `sparsity` (decoded token by
/// token after the context, so sparse modes apply to the scored tokens).
pub fn continuation_log_prob(model: &mut GpuModel, attributor: &mut Attributor, context: &[u32], continuation: &[u32], sparsity: &Sparsity) -> Result<f64> {
    if context.is_empty() || continuation.is_empty() {
        return Err(SiftError::InvalidInput("a continuation needs a non-empty context and continuation".into()));
    }
    let result = (|| {
        if matches!(sparsity, Sparsity::Off) {
            // One batched forward.
            model.disable_sparsity();
            model.reset();
            let all: Vec<u32> = context.iter().chain(continuation).copied().collect();
            let logits = model.forward(&all, Logits::All)?;
            let v = model.config.vocab_size;
            return Ok(continuation.iter().enumerate().map(|(i, &t)| log_softmax_at(&logits[(context.len() + i - 1) * v..(context.len() + i) * v], t)).sum());
        }
        let mut tokens = context.to_vec();
        let mut logits = start(model, attributor, context, sparsity)?;
        let mut total = 0.0;
        for (i, &t) in continuation.iter().enumerate() {
            total += log_softmax_at(&logits, t);
            tokens.push(t);
            if i + 1 < continuation.len() {
                logits = step(model, attributor, &tokens, sparsity)?;
            }
        }
        Ok(total)
    })();
    finish(model);
    result
}
