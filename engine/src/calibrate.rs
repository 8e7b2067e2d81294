//! The Sparsing Law's CETT-PPL-p% calibration (Luo et al. 2024). Per layer,
//! neuron i of a token has output norm n_i = |h_i| * ||W_down[:, i]||; a
//! threshold eps drops D = {i : n_i < eps}, and
//! CETT(eps) = mean over tokens of ||sum_{i in D} h_i W_down[:, i]|| / ||sum_i h_i W_down[:, i]||.
//! All layers share one CETT value; each layer's eps is found by binary search
//! so that its CETT equals it; an outer binary search over the shared value
//! finds where perplexity rises by p% over dense. The activation ratio there
//! is the model's PPL-p% sparsity.
//!
//! CETT for every eps comes from one pass per token: neurons sorted by n_i,
//! the norm of the running partial sum after each (so a search step costs a
//! binary search per token, not a matrix product).

use crate::attribution::Attributor;
use crate::error::{Result, SiftError};
use crate::model::{GpuModel, Weights};

/// One token of one layer: n_i ascending, and prefix[k] = ||partial output of
/// the k smallest|| (prefix[ffn] is the whole MLP output's norm).
pub struct TokenCett {
    sorted: Vec<f32>,
    prefix: Vec<f32>,
}

/// A layer's calibration tokens.
pub type LayerCett = Vec<TokenCett>;

/// Per-token CETT tables of one layer from its neuron outputs `h` ([tokens,
/// ffn]) and its transposed down projection `down_t` ([ffn, dim]).
pub fn layer_cett(h: &[f32], down_t: &[f32], ffn: usize, dim: usize) -> LayerCett {
    let norms: Vec<f32> = down_t.chunks(dim).map(|c| c.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
    h.chunks(ffn)
        .map(|row| {
            let n: Vec<f32> = row.iter().zip(&norms).map(|(h, w)| h.abs() * w).collect();
            let mut order: Vec<usize> = (0..ffn).collect();
            order.sort_by(|&a, &b| n[a].total_cmp(&n[b]));
            let mut acc = vec![0.0f64; dim];
            let mut prefix = Vec::with_capacity(ffn + 1);
            prefix.push(0.0);
            for &i in &order {
                for (a, w) in acc.iter_mut().zip(&down_t[i * dim..(i + 1) * dim]) {
                    *a += (row[i] * w) as f64;
                }
                prefix.push(acc.iter().map(|a| a * a).sum::<f64>().sqrt() as f32);
            }
            TokenCett { sorted: order.iter().map(|&i| n[i]).collect(), prefix }
        })
        .collect()
}

/// Runs the dense model over each calibration window and builds every
/// layer's CETT tables from its neuron outputs (`progress(done, total)`).
pub fn collect(model: &mut GpuModel, attributor: &mut Attributor, weights: &Weights, windows: &[&[u32]], mut progress: impl FnMut(usize, usize)) -> Result<Vec<LayerCett>> {
    let c = model.config.clone();
    let mut h: Vec<Vec<f32>> = vec![Vec::new(); c.n_layers];
    for (i, w) in windows.iter().enumerate() {
        // The attribution pass's forward keeps every layer's neuron outputs,
        // every row of the window (no backward: only outputs are needed).
        attributor.trace_forward(model, w)?;
        for (l, hl) in h.iter_mut().enumerate() {
            hl.extend(attributor.read_trace(l)?.neurons);
        }
        progress(i + 1, windows.len() + 1);
    }
    model.reset();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(c.n_layers);
    let mut tables: Vec<Option<LayerCett>> = (0..c.n_layers).map(|_| None).collect();
    std::thread::scope(|s| {
        for (t, chunk) in tables.chunks_mut(c.n_layers.div_ceil(threads)).enumerate() {
            let (h, weights, c) = (&h, weights, &c);
            s.spawn(move || {
                for (j, slot) in chunk.iter_mut().enumerate() {
                    let l = t * c.n_layers.div_ceil(threads) + j;
                    let down_t = crate::attribution::transposed::transpose(&weights.layers[l].w_down, c.dim, c.ffn_dim, 0);
                    *slot = Some(layer_cett(&h[l], &down_t, c.ffn_dim, c.dim));
                }
            });
        }
    });
    progress(windows.len() + 1, windows.len() + 1);
    Ok(tables.into_iter().map(|t| t.expect("every layer computed")).collect())
}

/// CETT of a layer at threshold `eps` (tokens whose MLP output is zero count as 0).
pub fn cett(layer: &LayerCett, eps: f32) -> f64 {
    mean(layer, |t| {
        let k = t.sorted.partition_point(|&n| n < eps);
        let full = *t.prefix.last().unwrap();
        if full > 0.0 { (t.prefix[k] / full) as f64 } else { 0.0 }
    })
}

/// Fraction of a layer's neurons kept at `eps`, over the calibration tokens.
pub fn active_ratio(layer: &LayerCett, eps: f32) -> f64 {
    mean(layer, |t| 1.0 - t.sorted.partition_point(|&n| n < eps) as f64 / t.sorted.len() as f64)
}

fn mean(layer: &LayerCett, f: impl Fn(&TokenCett) -> f64) -> f64 {
    layer.iter().map(f).sum::<f64>() / layer.len().max(1) as f64
}

/// The largest x in [lo, hi] where `ok(x)` holds, for `ok` true up to some
/// point and false after it (`iters` halvings). `lo` is assumed to hold.
pub fn largest_where(mut lo: f64, mut hi: f64, iters: usize, mut ok: impl FnMut(f64) -> Result<bool>) -> Result<f64> {
    if ok(hi)? {
        return Ok(hi);
    }
    for _ in 0..iters {
        let mid = 0.5 * (lo + hi);
        if ok(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The largest threshold whose CETT does not exceed `target` (CETT grows with eps).
pub fn eps_for_cett(layer: &LayerCett, target: f64) -> f32 {
    let max = layer.iter().filter_map(|t| t.sorted.last()).fold(0.0f32, |m, &v| m.max(v));
    largest_where(0.0, max as f64 * 1.0001 + 1e-30, 60, |eps| Ok(cett(layer, eps as f32) <= target)).expect("infallible") as f32
}

/// Per-layer thresholds for a shared CETT value, and the mean activation ratio they give.
pub fn thresholds_for(layers: &[LayerCett], target: f64) -> (Vec<f32>, f64) {
    let eps: Vec<f32> = layers.iter().map(|l| eps_for_cett(l, target)).collect();
    let ar = layers.iter().zip(&eps).map(|(l, &e)| active_ratio(l, e)).sum::<f64>() / layers.len().max(1) as f64;
    (eps, ar)
}

/// One calibrated tolerance.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Calibration {
    /// Allowed perplexity rise (0.01 = 1%).
    pub tolerance: f64,
    pub cett: f64,
    pub thresholds: Vec<f32>,
    /// Mean fraction of neurons kept on the calibration tokens.
    pub activation_ratio: f64,
    /// Perplexity on the calibration text with these thresholds.
    pub ppl: f64,
    pub dense_ppl: f64,
}

/// The outer search: the largest shared CETT whose thresholds keep
/// `ppl_with(thresholds)` within `tolerance` of `dense_ppl`.
pub fn calibrate(layers: &[LayerCett], dense_ppl: f64, tolerance: f64, iters: usize, mut ppl_with: impl FnMut(&[f32]) -> Result<f64>) -> Result<Calibration> {
    if tolerance.is_nan() || tolerance <= 0.0 {
        return Err(SiftError::InvalidInput(format!("the perplexity tolerance must be positive, not {tolerance}")));
    }
    let limit = dense_ppl * (1.0 + tolerance);
    let mut measured: Vec<(f64, f64)> = Vec::new();
    let cett = largest_where(0.0, 1.0, iters, |c| {
        let ppl = ppl_with(&thresholds_for(layers, c).0)?;
        measured.push((c, ppl));
        Ok(ppl <= limit)
    })?;
    let (thresholds, activation_ratio) = thresholds_for(layers, cett);
    let ppl = match measured.iter().find(|(c, _)| *c == cett) {
        Some(&(_, p)) => p,
        None => ppl_with(&thresholds)?,
    };
    Ok(Calibration { tolerance, cett, thresholds, activation_ratio, ppl, dense_ppl })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two neurons, dim 2: W_down columns e0 and 2*e1.
    fn two_neurons(h: &[f32]) -> LayerCett {
        layer_cett(h, &[1.0, 0.0, 0.0, 2.0], 2, 2)
    }

    #[test]
    fn cett_by_hand() {
        // Token: h = (3, 1) -> n = (3, 2); output (3, 2), norm sqrt(13).
        let l = two_neurons(&[3.0, 1.0]);
        assert_eq!(cett(&l, 0.0), 0.0);
        assert_eq!(cett(&l, 2.0), 0.0, "n < eps is strict");
        // eps 2.5 drops neuron 1: ||(0, 2)|| / sqrt(13).
        assert!((cett(&l, 2.5) - 2.0 / 13f64.sqrt()).abs() < 1e-6);
        assert!((cett(&l, 10.0) - 1.0).abs() < 1e-6);
        assert_eq!(active_ratio(&l, 2.5), 0.5);
        // Mean over tokens: a second token h = (0, 0) counts as 0.
        let two = two_neurons(&[3.0, 1.0, 0.0, 0.0]);
        assert!((cett(&two, 2.5) - 1.0 / 13f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn inner_search_finds_the_threshold_of_a_cett() {
        let l = two_neurons(&[3.0, 1.0]);
        // Any target between 2/sqrt(13) and 1 is first reached by dropping
        // neuron 1 too: the largest eps below that is just under 3.
        let eps = eps_for_cett(&l, 0.9);
        assert!(eps <= 3.0 && eps > 2.999, "{eps}");
        assert!(cett(&l, eps) <= 0.9);
        let eps = eps_for_cett(&l, 0.1);
        assert!(eps <= 2.0 && eps > 1.999, "{eps}");
        assert_eq!(eps_for_cett(&l, 1.0), 3.0 * 1.0001);
    }

    #[test]
    fn largest_where_is_a_binary_search() {
        let x = largest_where(0.0, 1.0, 40, |x| Ok(x <= 0.3141)).unwrap();
        assert!((x - 0.3141).abs() < 1e-9);
        assert_eq!(largest_where(0.0, 1.0, 40, |_| Ok(true)).unwrap(), 1.0);
    }

    #[test]
    fn outer_search_stops_at_the_tolerance() {
        // Perplexity rises with the thresholds: 10 * (1 + mean eps).
        let l = vec![two_neurons(&[3.0, 1.0, 1.0, 0.5])];
        let ppl = |eps: &[f32]| Ok(10.0 * (1.0 + eps[0] as f64 / 10.0));
        let c = calibrate(&l, 10.0, 0.25, 30, ppl).unwrap();
        assert!(c.ppl <= 12.5 + 1e-9, "{c:?}");
        assert!(c.cett > 0.0 && c.activation_ratio < 1.0, "{c:?}");
        // A little more CETT would break the tolerance.
        let (eps, _) = thresholds_for(&l, (c.cett + 0.02).min(1.0));
        assert!(ppl(&eps).unwrap() > 12.5 || c.cett > 0.98, "{c:?}");
        assert!(calibrate(&l, 10.0, 0.0, 30, ppl).is_err());
    }
}
