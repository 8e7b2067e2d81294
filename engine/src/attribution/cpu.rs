//! The attribution pass in plain Rust f32: the forward from position 0 keeping
//! what the backward needs, then the backward to every head and neuron output,
//! composed from the kernels' reference functions. It is the independent check
//! of the GPU pass, and is itself checked against finite differences.

use crate::kernels::attention::AttentionShape;
use crate::kernels::backward;
use crate::kernels::scores::{self, Units};
use crate::kernels::{attention, embedding, linear, rmsnorm, rope, swiglu};
use crate::model::{Config, Weights};

/// Head and neuron outputs of every layer and F's gradients with respect to them.
pub struct CpuAttribution {
    /// F: the sum of the targeted log-probabilities.
    pub f: f64,
    /// [T, vocab]
    pub logits: Vec<f32>,
    /// Per layer [T, heads * head_dim] and [T, ffn_dim].
    pub heads: Vec<Vec<f32>>,
    pub neurons: Vec<Vec<f32>>,
    pub head_grads: Vec<Vec<f32>>,
    pub neuron_grads: Vec<Vec<f32>>,
}

/// Edits layer `.0`'s heads (`.1` false) or neurons in place.
pub type Perturb<'a> = &'a dyn Fn(usize, bool, &mut [f32]);

/// Per layer, [magnitude, GxO, SNIP, Fisher, corrected GxO] of each unit.
pub type LayerMetrics = Vec<[Vec<f32>; 5]>;

/// Changes a forward may make to unit outputs.
#[derive(Default)]
pub struct Intervention<'a> {
    /// Multiply one layer's neurons or heads (an Integrated Gradients step);
    /// the backward carries the factor and stops at that layer.
    pub scale_layer: Option<ScaleLayer>,
    /// Added after a layer's heads (false) or neurons (true) are computed;
    /// forward only (finite differences).
    pub perturb: Option<Perturb<'a>>,
}

/// One layer's neurons (or heads) multiplied by `alpha` in rows `from_row..`.
#[derive(Clone, Copy, Debug)]
pub struct ScaleLayer {
    pub layer: usize,
    pub neurons: bool,
    pub alpha: f32,
    pub from_row: usize,
}

/// Runs the attribution pass over `tokens` from position 0; `targets` has one
/// entry per token: a token id, `log_softmax::NONE` or `log_softmax::GREEDY`.
pub fn attribute(c: &Config, w: &Weights, tokens: &[u32], targets: &[u32], iv: &Intervention) -> CpuAttribution {
    let n = tokens.len();
    let table = c.rope_table(n);
    let inverse_table: Vec<[f32; 2]> = table.iter().map(|&[cs, sn]| [cs, -sn]).collect();
    let rope_shape = |n_heads| rope::RopeShape { n_heads, head_dim: c.head_dim, rot_dim: c.rot_dim, style: c.rope_style };
    let att_shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
    // Multiplies rows of layer l's heads or neurons ([T, width]) by their factor.
    let scale = |l: usize, neurons: bool, x: &mut [f32]| {
        if let Some(s) = iv.scale_layer.filter(|s| s.layer == l && s.neurons == neurons) {
            let width = x.len() / n;
            x[s.from_row * width..].iter_mut().for_each(|a| *a *= s.alpha);
        }
    };

    // Forward, keeping each layer's inputs.
    struct Saved {
        x_in: Vec<f32>,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        x_mid: Vec<f32>,
        gate: Vec<f32>,
        up: Vec<f32>,
    }
    let mut x = embedding::reference(&w.embed, c.dim, tokens);
    let (mut saved, mut heads, mut neurons) = (Vec::new(), Vec::new(), Vec::new());
    for (l, lw) in w.layers.iter().enumerate() {
        let x_in = x.clone();
        let xn = rmsnorm::reference(&x, &lw.attn_norm, c.rms_eps);
        let mut q = linear::reference(&xn, &lw.wq, c.q_dim(), c.dim);
        let mut k = linear::reference(&xn, &lw.wk, c.kv_dim(), c.dim);
        let v = linear::reference(&xn, &lw.wv, c.kv_dim(), c.dim);
        rope::reference(&mut q, &rope_shape(c.n_heads), 0, &table);
        rope::reference(&mut k, &rope_shape(c.n_kv_heads), 0, &table);
        let mut att = attention::reference(att_shape, &q, &k, &v, 0);
        scale(l, false, &mut att);
        if let Some(p) = iv.perturb {
            p(l, false, &mut att);
        }
        add(&mut x, &linear::reference(&att, &lw.wo, c.dim, c.q_dim()));
        let x_mid = x.clone();
        let xn = rmsnorm::reference(&x, &lw.ffn_norm, c.rms_eps);
        let gate = linear::reference(&xn, &lw.w_gate, c.ffn_dim, c.dim);
        let up = linear::reference(&xn, &lw.w_up, c.ffn_dim, c.dim);
        let mut h = swiglu::reference(&gate, &up);
        scale(l, true, &mut h);
        if let Some(p) = iv.perturb {
            p(l, true, &mut h);
        }
        add(&mut x, &linear::reference(&h, &lw.w_down, c.dim, c.ffn_dim));
        saved.push(Saved { x_in, q, k, v, x_mid, gate, up });
        heads.push(att);
        neurons.push(h);
    }
    let xf = rmsnorm::reference(&x, &w.out_norm, c.rms_eps);
    let lm = w.lm_head.as_ref().unwrap_or(&w.embed);
    let logits = linear::reference(&xf, lm, c.vocab_size, c.dim);
    let (dlogits, lps, _) = backward::log_softmax::reference(&logits, c.vocab_size, targets);
    let f = lps.iter().map(|&v| v as f64).sum();

    // Backward, from the logits down to the first layer's head outputs.
    let stop = iv.scale_layer.map_or(0, |s| s.layer);
    let mut head_grads = vec![Vec::new(); c.n_layers];
    let mut neuron_grads = vec![Vec::new(); c.n_layers];
    let dxf = linear_transposed(&dlogits, lm, c.vocab_size, c.dim);
    let mut dx = backward::rmsnorm::reference(&x, &w.out_norm, &dxf, c.rms_eps);
    for l in (stop..c.n_layers).rev() {
        let (lw, s) = (&w.layers[l], &saved[l]);
        let gh = linear_transposed(&dx, &lw.w_down, c.dim, c.ffn_dim);
        let mut dh = gh.clone();
        scale(l, true, &mut dh);
        let (dgate, dup) = backward::swiglu::reference(&s.gate, &s.up, &dh);
        let mut dxn = linear_transposed(&dgate, &lw.w_gate, c.ffn_dim, c.dim);
        add(&mut dxn, &linear_transposed(&dup, &lw.w_up, c.ffn_dim, c.dim));
        add(&mut dx, &backward::rmsnorm::reference(&s.x_mid, &lw.ffn_norm, &dxn, c.rms_eps));
        let ga = linear_transposed(&dx, &lw.wo, c.dim, c.q_dim());
        neuron_grads[l] = gh;
        if l == stop {
            head_grads[l] = ga;
            break;
        }
        let (mut dq, mut dk, dv) = backward::attention::reference(att_shape, &s.q, &s.k, &s.v, &ga);
        head_grads[l] = ga;
        rope::reference(&mut dq, &rope_shape(c.n_heads), 0, &inverse_table);
        rope::reference(&mut dk, &rope_shape(c.n_kv_heads), 0, &inverse_table);
        let mut dxn = linear_transposed(&dq, &lw.wq, c.q_dim(), c.dim);
        add(&mut dxn, &linear_transposed(&dk, &lw.wk, c.kv_dim(), c.dim));
        add(&mut dxn, &linear_transposed(&dv, &lw.wv, c.kv_dim(), c.dim));
        add(&mut dx, &backward::rmsnorm::reference(&s.x_in, &lw.attn_norm, &dxn, c.rms_eps));
    }
    CpuAttribution { f, logits, heads, neurons, head_grads, neuron_grads }
}

/// Per layer, the five gradient metrics of neurons and of heads over rows t0..t1
/// ([magnitude, GxO, SNIP, Fisher, corrected GxO], each [layers][units]).
pub fn metrics(c: &Config, a: &CpuAttribution, t0: usize, t1: usize) -> (LayerMetrics, LayerMetrics) {
    let neuron_units = Units { n_units: c.ffn_dim, unit_dim: 1 };
    let head_units = Units { n_units: c.n_heads, unit_dim: c.head_dim };
    let neurons = (0..c.n_layers).map(|l| scores::reference(&a.neurons[l], &a.neuron_grads[l], neuron_units, t0, t1)).collect();
    let heads = (0..c.n_layers).map(|l| scores::reference(&a.heads[l], &a.head_grads[l], head_units, t0, t1)).collect();
    (neurons, heads)
}

/// Integrated Gradients per layer (neurons, heads): a layer's neurons (or its
/// heads) in the scored rows t0.. scaled from 0 to 1 in `steps` (right Riemann
/// sum) with all else unchanged, the gradients averaged and multiplied by the
/// unscaled outputs, summed over rows t0..t1. Only the scored units move along
/// the path: they are the inputs IG attributes.
pub fn integrated_gradients(c: &Config, w: &Weights, tokens: &[u32], targets: &[u32], steps: usize, t0: usize, t1: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dense = attribute(c, w, tokens, targets, &Intervention::default());
    let (mut neurons, mut heads) = (Vec::new(), Vec::new());
    for l in 0..c.n_layers {
        let mut gn = vec![0.0f32; dense.neurons[l].len()];
        let mut gh = vec![0.0f32; dense.heads[l].len()];
        for k in 1..=steps {
            let alpha = k as f32 / steps as f32;
            let scale_layer = |neurons| Some(ScaleLayer { layer: l, neurons, alpha, from_row: t0 });
            let scaled = |neurons| attribute(c, w, tokens, targets, &Intervention { scale_layer: scale_layer(neurons), perturb: None });
            add(&mut gn, &scaled(true).neuron_grads[l]);
            add(&mut gh, &scaled(false).head_grads[l]);
        }
        gn.iter_mut().chain(gh.iter_mut()).for_each(|g| *g /= steps as f32);
        let gxo = |x: &[f32], g: &[f32], units: Units| scores::reference(x, g, units, t0, t1)[1].clone();
        neurons.push(gxo(&dense.neurons[l], &gn, Units { n_units: c.ffn_dim, unit_dim: 1 }));
        heads.push(gxo(&dense.heads[l], &gh, Units { n_units: c.n_heads, unit_dim: c.head_dim }));
    }
    (neurons, heads)
}

/// x W for W [n, k] and x [T, n]: the transposed linear layer.
pub fn linear_transposed(x: &[f32], w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let t = x.len() / n;
    let mut y = vec![0.0f32; t * k];
    for ti in 0..t {
        let yr = &mut y[ti * k..(ti + 1) * k];
        for o in 0..n {
            let xv = x[ti * n + o];
            if xv != 0.0 {
                yr.iter_mut().zip(&w[o * k..(o + 1) * k]).for_each(|(a, b)| *a += xv * b);
            }
        }
    }
    y
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
