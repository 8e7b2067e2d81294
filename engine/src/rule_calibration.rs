//! Per-token rules of one family, calibrated to keep a chosen share of the
//! MLP neurons: neuron i of a token is kept when |h_i| * w_i >= eps_layer,
//! with a per-neuron weight w that says what the rule believes matters:
//!
//! - magnitude: w = 1 (|h| alone);
//! - CETT's norm: w = ||W_down[:, i]|| (the Sparsing Law's rule);
//! - GxO estimate: w = E|dF/dh_i| over calibration text, so |h_i| w_i
//!   estimates the neuron's attribution |g_i h_i| without a backward pass
//!   (F = the text's own next-token log-probabilities);
//! - corrected GxO estimate: w = E|dF/dh_i| + 0.5 E||dF/dh||_layer, the
//!   paper's corrected GxO (S_i + 0.5 |h_i| ||g||) with its gradients
//!   replaced by their calibration means.
//!
//! The gate rules (CATS's family) read |silu(gate_i)| in place of |h_i|, so
//! that decoding can compute the gate rows first and skip the up rows and
//! W_down columns of the neurons they drop:
//!
//! - gate: w = 1 (CATS itself);
//! - gate x up x down: w = E|up_i| ||W_down[:, i]||, so that
//!   |silu(gate_i)| w_i estimates CETT's |h_i| ||W_down[:, i]||;
//! - gate GxO estimate: w = E|up_i| E|dF/dh_i|, so that it estimates |g_i h_i|.
//!
//! Each layer's eps is the (1 - keep) quantile of |v_i| w_i over the
//! calibration tokens and neurons, so every rule keeps the same share in
//! every layer, and rules compare at equal cost.

use crate::attribution::{AttributeOptions, Attributor, Positions, Target};
use crate::error::{Result, SiftError};
use crate::model::sparse::Rule;
use crate::model::{GpuModel, Weights};

/// Which per-neuron weight a rule multiplies |h_i| by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleWeight {
    Magnitude,
    DownNorm,
    GxoEstimate,
    CorrectedGxoEstimate,
    Gate,
    GateUpDown,
    GateGxoEstimate,
}

impl RuleWeight {
    pub const ALL: [RuleWeight; 7] = [
        RuleWeight::Magnitude,
        RuleWeight::DownNorm,
        RuleWeight::GxoEstimate,
        RuleWeight::CorrectedGxoEstimate,
        RuleWeight::Gate,
        RuleWeight::GateUpDown,
        RuleWeight::GateGxoEstimate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleWeight::Magnitude => "magnitude",
            RuleWeight::DownNorm => "down-norm",
            RuleWeight::GxoEstimate => "gxo-estimate",
            RuleWeight::CorrectedGxoEstimate => "corrected-gxo-estimate",
            RuleWeight::Gate => "gate",
            RuleWeight::GateUpDown => "gate-up-down",
            RuleWeight::GateGxoEstimate => "gate-gxo-estimate",
        }
    }

    /// Whether the rule weighs |silu(gate_i)| (CATS's family), not |h_i|.
    pub fn on_gate(self) -> bool {
        matches!(self, RuleWeight::Gate | RuleWeight::GateUpDown | RuleWeight::GateGxoEstimate)
    }

    /// The rule of the thresholds file it makes.
    pub fn rule(self) -> Rule {
        if self.on_gate() { Rule::Cats } else { Rule::Weighted }
    }

    pub fn parse(s: &str) -> Option<RuleWeight> {
        RuleWeight::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// What calibration text says about each layer's neurons.
pub struct RuleStats {
    pub n_layers: usize,
    pub ffn: usize,
    /// Per layer: |h| of every calibration token, [tokens, ffn].
    abs_h: Vec<Vec<f32>>,
    /// Per layer: |silu(gate)| of every calibration token, [tokens, ffn].
    abs_act: Vec<Vec<f32>>,
    /// Per layer: mean over tokens of |up_i|, [ffn].
    mean_abs_up: Vec<Vec<f64>>,
    /// Per layer: mean over tokens of |dF/dh_i|, [ffn].
    mean_abs_grad: Vec<Vec<f64>>,
    /// Per layer: mean over tokens of ||dF/dh||.
    mean_grad_norm: Vec<f64>,
    /// Per layer: ||W_down[:, i]||, [ffn].
    down_norms: Vec<Vec<f32>>,
}

impl RuleStats {
    /// One attribution pass per window (F = the window's next-token
    /// log-probabilities, every position's units), keeping every layer's
    /// neuron outputs and gradients. `progress(done)` after each window.
    pub fn collect(model: &mut GpuModel, attributor: &mut Attributor, weights: &Weights, windows: &[&[u32]], mut progress: impl FnMut(usize)) -> Result<RuleStats> {
        let c = model.config.clone();
        let (l, f) = (c.n_layers, c.ffn_dim);
        if windows.iter().any(|w| w.len() < 2) || windows.is_empty() {
            return Err(SiftError::InvalidInput("calibration needs at least one window of 2 or more tokens".into()));
        }
        let mut abs_h = vec![Vec::new(); l];
        let mut abs_act = vec![Vec::new(); l];
        let mut up_sum = vec![vec![0.0f64; f]; l];
        let mut grad_sum = vec![vec![0.0f64; f]; l];
        let mut norm_sum = vec![0.0f64; l];
        let mut tokens = 0usize;
        let opts = AttributeOptions { positions: Some(Positions::All), ig_steps: None };
        for (i, w) in windows.iter().enumerate() {
            // Every row of every window (a reused prefix would return only the new rows).
            attributor.forget_cached_tokens();
            attributor.attribute(model, w, &Target::Prompt, &opts)?;
            for layer in 0..l {
                let trace = attributor.read_trace(layer)?;
                abs_h[layer].extend(trace.neurons.iter().map(|v| v.abs()));
                for row in attributor.read_gate_up(layer)?.chunks(2 * f) {
                    let (gate, up) = row.split_at(f);
                    abs_act[layer].extend(gate.iter().map(|&g| crate::kernels::swiglu::silu(g).abs()));
                    up_sum[layer].iter_mut().zip(up).for_each(|(s, u)| *s += u.abs() as f64);
                }
                for row in trace.neuron_grads.chunks(f) {
                    grad_sum[layer].iter_mut().zip(row).for_each(|(s, g)| *s += g.abs() as f64);
                    norm_sum[layer] += row.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt();
                }
            }
            tokens += w.len();
            progress(i + 1);
        }
        model.reset();
        let n = tokens as f64;
        let down_norms = weights
            .layers
            .iter()
            .map(|lw| (0..f).map(|i| (0..c.dim).map(|r| lw.w_down[r * f + i].powi(2)).sum::<f32>().sqrt()).collect())
            .collect();
        let means = |sums: Vec<Vec<f64>>| sums.into_iter().map(|s| s.into_iter().map(|v| v / n).collect()).collect();
        Ok(RuleStats {
            n_layers: l,
            ffn: f,
            abs_h,
            abs_act,
            mean_abs_up: means(up_sum),
            mean_abs_grad: means(grad_sum),
            mean_grad_norm: norm_sum.into_iter().map(|s| s / n).collect(),
            down_norms,
        })
    }

    /// The rule's per-neuron weights, [layers, ffn].
    pub fn weights(&self, kind: RuleWeight) -> Vec<f32> {
        (0..self.n_layers)
            .flat_map(|l| {
                (0..self.ffn).map(move |i| match kind {
                    RuleWeight::Magnitude => 1.0,
                    RuleWeight::DownNorm => self.down_norms[l][i],
                    RuleWeight::GxoEstimate => self.mean_abs_grad[l][i] as f32,
                    RuleWeight::CorrectedGxoEstimate => (self.mean_abs_grad[l][i] + 0.5 * self.mean_grad_norm[l]) as f32,
                    RuleWeight::Gate => 1.0,
                    RuleWeight::GateUpDown => self.mean_abs_up[l][i] as f32 * self.down_norms[l][i],
                    RuleWeight::GateGxoEstimate => (self.mean_abs_up[l][i] * self.mean_abs_grad[l][i]) as f32,
                })
            })
            .collect()
    }

    /// Per-layer thresholds at which the rule `kind` with `weights` (its
    /// [`RuleStats::weights`]) keeps a share `keep` of the calibration tokens' neurons.
    pub fn thresholds(&self, kind: RuleWeight, weights: &[f32], keep: f64) -> Result<Vec<f32>> {
        if !(keep > 0.0 && keep <= 1.0) {
            return Err(SiftError::InvalidInput(format!("the share of neurons kept must be in (0, 1], not {keep}")));
        }
        let values = if kind.on_gate() { &self.abs_act } else { &self.abs_h };
        Ok((0..self.n_layers).map(|l| quantile_threshold(&values[l], &weights[l * self.ffn..(l + 1) * self.ffn], keep)).collect())
    }
}

/// The threshold eps at which a share `keep` of the values |h| * w (|h| is
/// [tokens, ffn], w is [ffn]) is at least eps: kept = {v >= eps}.
pub fn quantile_threshold(abs_h: &[f32], w: &[f32], keep: f64) -> f32 {
    let mut v: Vec<f32> = abs_h.chunks(w.len()).flat_map(|row| row.iter().zip(w).map(|(h, w)| h * w)).collect();
    if v.is_empty() || keep >= 1.0 {
        return 0.0;
    }
    let drop = (((1.0 - keep) * v.len() as f64).round() as usize).min(v.len() - 1);
    let (_, eps, _) = v.select_nth_unstable_by(drop, f32::total_cmp);
    *eps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_keeps_the_share_asked_for() {
        // Two tokens of four neurons, weights doubling the last two.
        let h = [1.0, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 8.0];
        let w = [1.0, 1.0, 2.0, 2.0];
        // Values: 1 2 6 8 / 0.5 0.5 1 16: keep half = the 4 largest (2, 6, 8, 16).
        let eps = quantile_threshold(&h, &w, 0.5);
        assert_eq!(eps, 2.0);
        let kept = h.chunks(4).flat_map(|r| r.iter().zip(&w).map(|(h, w)| h * w)).filter(|&v| v >= eps).count();
        assert_eq!(kept, 4);
        assert_eq!(quantile_threshold(&h, &w, 1.0), 0.0);
        assert_eq!(quantile_threshold(&h, &w, 0.125), 16.0);
    }

    #[test]
    fn rule_names_round_trip() {
        for w in RuleWeight::ALL {
            assert_eq!(RuleWeight::parse(w.name()), Some(w));
        }
        assert_eq!(RuleWeight::parse("cats"), None);
        assert!(RuleWeight::Gate.on_gate() && !RuleWeight::DownNorm.on_gate());
    }
}
