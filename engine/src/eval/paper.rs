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
    attributor.forget_cached_tokens();
    let masks = (1..dense.len()).map(|k| masks_at(model, attributor, &[prompt, &dense[..k]].concat(), dense[k], p)).collect::<Result<Vec<_>>>()?;
    let result = (|| {
        model.disable_sparsity();
        model.reset();
        let mut logits = model.forward(prompt, Logits::Last)?;
        let mut out = Vec::with_capacity(dense.len());
        for k in 0..dense.len() {
            let top = argmax(&logits);
            if stop.contains(&top) {
                break;
            }
            out.push(Scored { token: top, log_prob: log_softmax_at(&logits, top), top, mlp_kept: model.active_fractions()?.0 });
            let Some((mlp, heads)) = masks.get(k) else { break };
            model.set_mlp_mask(mlp)?;
            if p.ratios.heads < 1.0 {
                model.set_head_mask(heads)?;
            }
            logits = model.forward(&[top], Logits::Last)?;
        }
        Ok(out)
    })();
    finish(model);
    result
}

/// The masks for the token after `tokens` (a dense prefix), whose dense
/// choice is `target`: the top units of each masked layer by the metric, all
/// of the dense tail's.
fn masks_at(model: &mut GpuModel, attributor: &mut Attributor, tokens: &[u32], target: u32, p: &Paper) -> Result<StepMasks> {
    let opts = attributor.options_for(p.metric, Positions::Last);
    let scores = attributor.attribute(model, tokens, &Target::Token(target), &opts)?;
    let c = model.config.clone();
    let dense_from = c.n_layers - p.dense_layers(c.n_layers);
    let pick = |per_layer: Vec<Vec<f32>>, n: usize, ar: f64| -> Result<Vec<Vec<u32>>> {
        let k = active_count(ar, n)?;
        Ok(per_layer
            .iter()
            .enumerate()
            .map(|(l, s)| if l >= dense_from { (0..n as u32).collect() } else { select_top_reference(s, n, k).remove(0) })
            .collect())
    };
    Ok((pick(scores.read_neurons(&model.ctx, p.metric)?, c.ffn_dim, p.ratios.mlp)?, pick(scores.read_heads(&model.ctx, p.metric)?, c.n_heads, p.ratios.heads)?))
}
