//! Attribution scores of one layer (`shaders/grad_norm.wgsl`, then
//! `shaders/attribution_scores.wgsl`): magnitude, GxO, SNIP, Fisher and
//! corrected GxO of every unit from its outputs and their gradients, or one
//! Integrated Gradients step. Scores stay on the GPU in one buffer
//! [metric slot, layer, unit].

use super::Call;
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// Metric slots of a score buffer, in order.
pub const SLOTS: usize = 6;
pub const SLOT_MAGNITUDE: usize = 0;
pub const SLOT_GXO: usize = 1;
pub const SLOT_SNIP: usize = 2;
pub const SLOT_FISHER: usize = 3;
pub const SLOT_INTEGRATED_GRADIENTS: usize = 4;
pub const SLOT_CORRECTED_GXO: usize = 5;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    width: u32,
    unit_dim: u32,
    n_units: u32,
    offset: u32,
    metric_stride: u32,
    mode: u32,
    _pad: [u32; 2],
}

/// The rows scored, and the weight of an Integrated Gradients step:
/// the `range` uniform, written per attribution.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ScoreRange {
    pub t0: u32,
    pub t1: u32,
    pub ig_weight: f32,
    pub _pad: u32,
}

/// Which kind of units a layer's buffers hold.
#[derive(Clone, Copy, Debug)]
pub struct Units {
    pub n_units: usize,
    /// 1 for MLP neurons, head_dim for heads.
    pub unit_dim: usize,
}

impl Units {
    pub fn width(&self) -> usize {
        self.n_units * self.unit_dim
    }
}

/// Norm then score dispatches for one layer.
pub struct ScoresCall {
    pub norm: Call,
    pub scores: Call,
}

/// Scores of layer `layer` (of `n_layers`) from `x` and `g` [T, width] into
/// `scores` [SLOTS, n_layers, n_units]; `integrated` selects the IG-step mode.
#[allow(clippy::too_many_arguments)]
pub fn call(
    ctx: &GpuContext,
    units: Units,
    layer: usize,
    n_layers: usize,
    integrated: bool,
    range: &wgpu::Buffer,
    x: &wgpu::Buffer,
    g: &wgpu::Buffer,
    norms: &wgpu::Buffer,
    scores: &wgpu::Buffer,
) -> ScoresCall {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let norm_kernel = Kernel::get(ctx, "grad_norm", include_str!("../../../shaders/grad_norm.wgsl"), &[U, U, R, W]);
    let score_kernel = Kernel::get(ctx, "attribution_scores", include_str!("../../../shaders/attribution_scores.wgsl"), &[U, U, R, R, R, W]);
    let width = units.width() as u32;
    let norm_params = uniform_buffer(ctx, "grad_norm params", &[width, units.unit_dim as u32, 0, 0]);
    let params = uniform_buffer(
        ctx,
        "attribution_scores params",
        &Params {
            width,
            unit_dim: units.unit_dim as u32,
            n_units: units.n_units as u32,
            offset: (layer * units.n_units) as u32,
            metric_stride: (n_layers * units.n_units) as u32,
            mode: integrated as u32,
            _pad: [0; 2],
        },
    );
    let n_units = units.n_units as u32;
    ScoresCall {
        norm: Call {
            group: norm_kernel.bind(ctx, &[&norm_params, range, g, norms]),
            kernel: norm_kernel,
            grid: Box::new(|n| [n.div_ceil(64), 1, 1]),
        },
        scores: Call {
            group: score_kernel.bind(ctx, &[&params, range, x, g, norms, scores]),
            kernel: score_kernel,
            grid: Box::new(move |_| [n_units.div_ceil(64), 1, 1]),
        },
    }
}

/// Per unit, summed over rows t0..t1: [magnitude, GxO, SNIP, Fisher, corrected GxO].
/// The corrected term is 0.5 ||x_u|| times the norm over the layer's units
/// of their mean gradients (the paper's `utils_ghead.py`; for neurons, the
/// norm of the row's gradient).
pub fn reference(x: &[f32], g: &[f32], units: Units, t0: usize, t1: usize) -> [Vec<f32>; 5] {
    let (w, ud) = (units.width(), units.unit_dim);
    let mut out: [Vec<f32>; 5] = std::array::from_fn(|_| vec![0.0; units.n_units]);
    for t in t0..t1 {
        let gn = g[t * w..(t + 1) * w].chunks(ud).map(|u| (u.iter().sum::<f32>() / ud as f32).powi(2)).sum::<f32>().sqrt();
        for u in 0..units.n_units {
            let xs = &x[t * w + u * ud..][..ud];
            let gs = &g[t * w + u * ud..][..ud];
            let m = xs.iter().map(|v| v * v).sum::<f32>().sqrt();
            let s = xs.iter().zip(gs).map(|(a, b)| a * b).sum::<f32>() / ud as f32;
            for (slot, v) in out.iter_mut().zip([m, s, s.abs(), s * s, s + 0.5 * m * gn]) {
                slot[u] += v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::test_util::*;

    #[test]
    fn scores_match_reference_for_neurons_and_heads() {
        let ctx = crate::testing::gpu();
        let (t, layers, layer) = (7usize, 3usize, 1usize);
        for units in [Units { n_units: 150, unit_dim: 1 }, Units { n_units: 6, unit_dim: 16 }] {
            let (x, g) = (random(t * units.width(), 81), random(t * units.width(), 82));
            let (xb, gb) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "g", &g));
            let norms = zeroed_buffer(&ctx, "norms", (t * 4) as u64);
            let n = SLOTS * layers * units.n_units;
            let scores = zeroed_buffer(&ctx, "scores", (n * 4) as u64);
            for (t0, t1) in [(0usize, t), (t - 1, t)] {
                let range = uniform_buffer(&ctx, "range", &ScoreRange { t0: t0 as u32, t1: t1 as u32, ig_weight: 0.25, _pad: 0 });
                let dense = call(&ctx, units, layer, layers, false, &range, &xb, &gb, &norms, &scores);
                let ig = call(&ctx, units, layer, layers, true, &range, &xb, &gb, &norms, &scores);
                ctx.queue.write_buffer(&scores, 0, &vec![0u8; n * 4]);
                crate::kernels::run_calls(&ctx, &[&dense.norm, &dense.scores, &ig.norm, &ig.scores, &ig.scores], t as u32);
                let got = read_buffer_f32(&ctx, &scores, 0, n).unwrap();
                let want = reference(&x, &g, units, t0, t1);
                let slot = |s: usize| &got[(s * layers + layer) * units.n_units..][..units.n_units];
                for (s, w) in [SLOT_MAGNITUDE, SLOT_GXO, SLOT_SNIP, SLOT_FISHER, SLOT_CORRECTED_GXO].iter().zip(&want) {
                    // Sums of a few products: 1e-5.
                    assert!(max_err(slot(*s), w) < 1e-5, "slot {s} rows {t0}..{t1} {units:?}");
                }
                // Two IG steps of weight 0.25 accumulate 0.5 * GxO.
                let half: Vec<f32> = want[1].iter().map(|v| v * 0.5).collect();
                assert!(max_err(slot(SLOT_INTEGRATED_GRADIENTS), &half) < 1e-5);
                // Other layers are untouched.
                assert!(got[..units.n_units].iter().all(|&v| v == 0.0));
            }
        }
    }
}
