//! Thresholds for TEAL's rule (`model::sparse::inputs`): per layer and site,
//! the magnitude below which a share of a projection's input elements falls
//! on calibration text, so that a rule keeps that share of every site in
//! every layer (TEAL's uniform allocation).

use crate::attribution::Attributor;
use crate::error::{Result, SiftError};
use crate::kernels::rmsnorm;
use crate::model::sparse::Site;
use crate::model::{GpuModel, Weights};
use crate::rule_calibration::quantile_threshold;

/// |input| of every calibration token, per site and layer ([site][layer], each [tokens, width]).
pub struct InputStats {
    values: [Vec<Vec<f32>>; 4],
    pub tokens: usize,
}

impl InputStats {
    /// One dense forward per window (the attribution pass's, which keeps every
    /// layer's residual, head and neuron outputs); `progress(done)` after each.
    pub fn collect(model: &mut GpuModel, attributor: &mut Attributor, weights: &Weights, windows: &[&[u32]], mut progress: impl FnMut(usize)) -> Result<InputStats> {
        let c = model.config.clone();
        if windows.is_empty() || windows.iter().any(|w| w.is_empty()) {
            return Err(SiftError::InvalidInput("calibration needs at least one non-empty window".into()));
        }
        let mut values: [Vec<Vec<f32>>; 4] = std::array::from_fn(|_| vec![Vec::new(); c.n_layers]);
        let mut tokens = 0;
        for (i, w) in windows.iter().enumerate() {
            attributor.forget_cached_tokens();
            attributor.trace_forward(model, w)?;
            for (l, lw) in weights.layers.iter().enumerate() {
                let (x_in, x_mid) = attributor.read_residuals(l)?;
                let trace = attributor.read_trace(l)?;
                let abs = |v: Vec<f32>| v.into_iter().map(f32::abs);
                values[0][l].extend(abs(rmsnorm::reference(&x_in, &lw.attn_norm, c.rms_eps)));
                values[1][l].extend(abs(trace.heads));
                values[2][l].extend(abs(rmsnorm::reference(&x_mid, &lw.ffn_norm, c.rms_eps)));
                values[3][l].extend(abs(trace.neurons));
            }
            tokens += w.len();
            progress(i + 1);
        }
        model.reset();
        Ok(InputStats { values, tokens })
    }

    /// Per-layer thresholds that keep a share `keep` of each of `sites`'
    /// input elements on the calibration tokens (other sites: 0, all kept).
    pub fn thresholds(&self, sites: &[Site], keep: f64) -> Result<[Vec<f32>; 4]> {
        if !(keep > 0.0 && keep <= 1.0) {
            return Err(SiftError::InvalidInput(format!("the share of inputs kept must be in (0, 1], not {keep}")));
        }
        Ok(std::array::from_fn(|i| {
            let on = sites.contains(&Site::ALL[i]);
            self.values[i].iter().map(|v| if on { quantile_threshold(v, &[1.0], keep) } else { 0.0 }).collect()
        }))
    }
}
