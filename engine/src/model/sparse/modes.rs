//! The modes that choose masks from attribution: `prompt` (once, over the
//! prompt, kept for the whole generation) and `oracle` (the paper's per-token
//! protocol). `threshold` needs no attribution: see `GpuModel::set_threshold_mask`.

use super::active_count;
use crate::attribution::{Attributor, Positions, Scores, Target};
use crate::attribution::Metric;
use crate::error::Result;
use crate::model::{GpuModel, Logits};

/// Activation ratios for MLP neurons and attention heads (1.0 = all kept;
/// heads at 1.0 run dense).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    pub mlp: f64,
    pub heads: f64,
}

impl Ratios {
    /// Only MLP neurons are masked.
    pub fn mlp(ar: f64) -> Ratios {
        Ratios { mlp: ar, heads: 1.0 }
    }

    /// One AR over heads and neurons, as the paper reports it: both kept at
    /// `ar`, so the weighted ratio (heads 1/3, MLP 2/3) is `ar` too.
    pub fn both(ar: f64) -> Ratios {
        Ratios { mlp: ar, heads: ar }
    }

    /// The paper's single figure: heads weigh 1/3, the MLP 2/3.
    pub fn weighted(self) -> f64 {
        self.heads / 3.0 + 2.0 * self.mlp / 3.0
    }

    /// Checks both ratios are in (0, 1].
    pub fn check(self) -> Result<()> {
        active_count(self.mlp, 1)?;
        active_count(self.heads, 1)?;
        Ok(())
    }
}

/// What `prompt` mode attributes, once, over the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptTarget {
    /// F = log p of the model's greedy next token, with the last prompt
    /// token's units scored: the units the first generated token uses. On
    /// TruthfulQA this keeps 7-9x the BLEU of `Tokens` (docs/results.md).
    #[default]
    Next,
    /// F = the sum of the prompt's own next-token log-probabilities, with
    /// every prompt token's units scored (their scores summed).
    Tokens,
}

impl PromptTarget {
    pub const ALL: [PromptTarget; 2] = [PromptTarget::Next, PromptTarget::Tokens];

    pub fn name(self) -> &'static str {
        match self {
            PromptTarget::Next => "next",
            PromptTarget::Tokens => "tokens",
        }
    }

    pub fn parse(s: &str) -> Option<PromptTarget> {
        PromptTarget::ALL.into_iter().find(|t| t.name() == s)
    }
}

impl GpuModel {
    /// The top `ratios` of neurons and heads per layer by `metric`; heads at
    /// ratio 1.0 run dense.
    pub fn set_masks_from_scores(&mut self, scores: &Scores, metric: Metric, ratios: Ratios) -> Result<()> {
        ratios.check()?;
        self.set_mlp_mask_from_scores(scores, metric, ratios.mlp)?;
        if ratios.heads < 1.0 {
            self.set_head_mask_from_scores(scores, metric, ratios.heads)
        } else {
            self.clear_head_mask();
            Ok(())
        }
    }
}

/// `prompt` mode: attribution once over the prompt for `target` (a one-token
/// prompt always uses its greedy next token), then the top `ratios` of units
/// per layer by `metric`, fixed for the whole generation. Leaves the prompt
/// in the KV cache.
pub fn set_prompt_mask(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], metric: Metric, ratios: Ratios, target: PromptTarget) -> Result<Scores> {
    ratios.check()?;
    let (target, positions) = match target {
        PromptTarget::Tokens if prompt.len() >= 2 => (Target::Prompt, Positions::All),
        _ => (Target::Next, Positions::Last),
    };
    let opts = attributor.options_for(metric, positions);
    let scores = attributor.attribute(model, prompt, &target, &opts)?;
    model.set_masks_from_scores(&scores, metric, ratios)?;
    // The mask decodes the whole generation: compact it now, with the prompt.
    model.compact_mlp_mask();
    Ok(scores)
}

/// `oracle` mode, one step (the paper's per-token protocol): a dense forward
/// and backward over `tokens` with F = log p of the dense model's greedy next
/// token, the top `ratios` of the last token's units by `metric`, then the
/// last token run again with only those. Returns its logits and the scores.
/// Slower than dense decoding by design: an accuracy reference, not a fast path.
pub fn oracle_step(model: &mut GpuModel, attributor: &mut Attributor, tokens: &[u32], metric: Metric, ratios: Ratios) -> Result<(Vec<f32>, Scores)> {
    ratios.check()?;
    let opts = attributor.options_for(metric, Positions::Last);
    let scores = attributor.attribute(model, tokens, &Target::Next, &opts)?;
    model.set_masks_from_scores(&scores, metric, ratios)?;
    model.rewind(tokens.len() - 1)?;
    Ok((model.forward(&tokens[tokens.len() - 1..], Logits::Last)?, scores))
}
