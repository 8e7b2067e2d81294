//! The sparse-activation paper's own generation protocol, as its released
//! code runs it (`main.py`, `utils_mask.py`), where Sift's `oracle` mode
//! differs:
//! - the masks are computed offline on the *dense* greedy trajectory: for
//!   generated token k, attribution at the dense prefix (prompt and the dense
//!   tokens before k) of F = log p(dense token k); they are then applied by
//!   step index to the sparse generation, whatever it generates;
//! - the first generated token is dense; masks apply from the second on;
//! - the last `dense_tail` of the layers (a quarter in the paper: 8 of Phi-2's
//!   32) are never masked;
//! - each token is decoded once under its own mask, so earlier tokens keep
//!   the keys and values computed under theirs (Sift's oracle reruns the
//!   sequence dense before every token).
//!
//! The sparse generation is as long as the dense one (the paper generates the
//! length of each question's best answer, which the caller chooses as `n`).

use super::{decode, finish, log_softmax_at, Next, RuleScope, Scored, Sparsity};
use crate::attribution::{Attributor, Metric, Positions, Target};
use crate::error::{Result, SiftError};
use crate::kernels::sparse::select_top_reference;
use crate::model::sparse::{active_count, Ratios};
use crate::model::{GpuModel, Logits};
use crate::sampling::argmax;

/// The protocol's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paper {
    pub metric: Metric,
    pub ratios: Ratios,
    /// The fraction of layers, counted from the last, never masked: in [0, 1).
    pub dense_tail: f64,
}

/// Per-layer active units of one step: MLP neurons, heads.
type StepMasks = (Vec<Vec<u32>>, Vec<Vec<u32>>);

impl Paper {
    pub fn new(metric: Metric, ratios: Ratios, dense_tail: f64) -> Result<Paper> {
        ratios.check()?;
        if !(0.0..1.0).contains(&dense_tail) {
            return Err(SiftError::InvalidInput(format!("--dense-tail must be in [0, 1), not {dense_tail}")));
        }
        Ok(Paper { metric, ratios, dense_tail })
    }

    /// How many of `n_layers`, the last ones, stay dense: ceil(dense_tail * n_layers).
    pub fn dense_layers(&self, n_layers: usize) -> usize {
        ((self.dense_tail * n_layers as f64).ceil() as usize).min(n_layers)
    }
}

/// Greedy generation of up to `n` tokens after `prompt` under the protocol,
/// stopping before a `stop` id; each token's `mlp_kept` is the share of MLP
/// neurons over all layers (the dense tail included) that computed it.
pub fn generate(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], n: usize, stop: &[u32], p: &Paper) -> Result<Vec<Scored>> {
    let dense: Vec<u32> = decode(model, attributor, prompt, Next::Greedy { n, stop }, &Sparsity::Off, RuleScope::Decoding)?.iter().map(|s| s.token).collect();
    generate_along(model, attributor, prompt, &dense, stop, p)
}

/// [`generate`] given the dense greedy trajectory `dense` after `prompt`
/// (as an evaluation already holds it for its reference): at most as many
/// tokens, stopping before a `stop` id.
pub fn generate_along(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], dense: &[u32], stop: &[u32], p: &Paper) -> Result<Vec<Scored>> {
    let rankings = Rankings::along(model, attributor, prompt, dense, p.metric)?;
    generate_ranked(model, prompt, dense.len(), stop, p, &rankings)
}

/// Per step of a dense trajectory (from its second token), each layer's
/// neurons and heads ranked by the metric, best first (ties by id, as
/// `select_top_reference` breaks them): the masks at any ratio are their
/// prefixes. They depend on the metric, not on the ratio or the dense tail,
/// so a sweep computes them once per question and metric.
#[derive(Clone, Debug)]
pub struct Rankings {
    pub metric: Metric,
    /// [step][layer]: unit ids, best first.
    neurons: Vec<Vec<Vec<u16>>>,
    heads: Vec<Vec<Vec<u16>>>,
}

impl Rankings {
    /// For generated token k >= 1: attribution at the dense prefix (prompt
    /// and `dense[..k]`) of F = log p(dense[k]).
    pub fn along(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], dense: &[u32], metric: Metric) -> Result<Rankings> {
        let c = model.config.clone();
        if c.ffn_dim > u16::MAX as usize + 1 || c.n_heads > u16::MAX as usize + 1 {
            return Err(SiftError::InvalidInput(format!("{} neurons or {} heads per layer are too many to rank in 16 bits", c.ffn_dim, c.n_heads)));
        }
        attributor.forget_cached_tokens();
        let opts = attributor.options_for(metric, Positions::Last);
        let rank = |scores: Vec<Vec<f32>>, n: usize| -> Vec<Vec<u16>> { scores.iter().map(|s| select_top_reference(s, n, n).remove(0).into_iter().map(|i| i as u16).collect()).collect() };
        let (mut neurons, mut heads) = (Vec::new(), Vec::new());
        for k in 1..dense.len() {
            let tokens = [prompt, &dense[..k]].concat();
            let scores = attributor.attribute(model, &tokens, &Target::Token(dense[k]), &opts)?;
            neurons.push(rank(scores.read_neurons(&model.ctx, metric)?, c.ffn_dim));
            heads.push(rank(scores.read_heads(&model.ctx, metric)?, c.n_heads));
        }
        Ok(Rankings { metric, neurons, heads })
    }

    /// The masks of step `k` (token k + 1 of the trajectory): the top units
    /// of each masked layer, every unit of the dense tail's.
    fn masks(&self, k: usize, c: &crate::model::Config, p: &Paper) -> Result<StepMasks> {
        let dense_from = c.n_layers - p.dense_layers(c.n_layers);
        let pick = |ranked: &[Vec<u16>], n: usize, ar: f64| -> Result<Vec<Vec<u32>>> {
            let keep = active_count(ar, n)?;
            Ok(ranked.iter().enumerate().map(|(l, r)| if l >= dense_from { (0..n as u32).collect() } else { r[..keep].iter().map(|&i| i as u32).collect() }).collect())
        };
        Ok((pick(&self.neurons[k], c.ffn_dim, p.ratios.mlp)?, pick(&self.heads[k], c.n_heads, p.ratios.heads)?))
    }

    /// Steps ranked (the trajectory's length less one).
    pub fn steps(&self) -> usize {
        self.neurons.len()
    }
}

/// The protocol's generation of up to `n` tokens (the dense trajectory's
/// length) after `prompt`, with masks from `rankings` (made for `p.metric`).
pub fn generate_ranked(model: &mut GpuModel, prompt: &[u32], n: usize, stop: &[u32], p: &Paper, rankings: &Rankings) -> Result<Vec<Scored>> {
    if rankings.metric != p.metric || rankings.steps() + 1 < n {
        return Err(SiftError::InvalidInput(format!("rankings for {} over {} steps cannot mask {n} tokens by {}", rankings.metric, rankings.steps(), p.metric)));
    }
    let c = model.config.clone();
    let result = (|| {
        model.disable_sparsity();
        model.reset();
        let mut logits = model.forward(prompt, Logits::Last)?;
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let top = argmax(&logits);
            if stop.contains(&top) {
                break;
            }
            out.push(Scored { token: top, log_prob: log_softmax_at(&logits, top), top, mlp_kept: model.active_fractions()?.0 });
            if k + 1 >= n {
                break;
            }
            let (mlp, heads) = rankings.masks(k, &c, p)?;
            model.set_mlp_mask(&mlp)?;
            if p.ratios.heads < 1.0 {
                model.set_head_mask(&heads)?;
            }
            logits = model.forward(&[top], Logits::Last)?;
        }
        Ok(out)
    })();
    finish(model);
    result
}
