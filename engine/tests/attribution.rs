//! The GPU attribution pass on a tiny random Llama (3 layers, GQA 4/2, f16-rounded
//! weights so GPU and CPU multiply the same numbers): gradients against the CPU
//! reference backward and against central finite differences of the CPU
//! forward, every metric against the CPU reference, the corrected term against
//! its formula, unit factors, and bad input.

use sift_engine::attribution::cpu::{self, Intervention};
use sift_engine::attribution::{AttributeOptions, Attributor, Metric, Positions, Target, UnitFactors};
use sift_engine::kernels::backward::log_softmax::{GREEDY, NONE};
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::kernels::KernelFamily;
use sift_engine::model::{Config, GpuModel, Logits, Weights};
use sift_engine::testing::{gpu, random_weights, tiny_config};

fn tiny(style: RopeStyle, tied: bool) -> (Config, Weights) {
    let c = tiny_config(style);
    let mut w = random_weights(&c, 7, tied);
    w.round_matrices_to_f16();
    (c, w)
}

fn prompt(c: &Config, n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 53 + 11) % c.vocab_size) as u32).collect()
}

/// max |a - b| relative to max |b|.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

fn cpu_targets(tokens: &[u32], target: &Target) -> Vec<u32> {
    let n = tokens.len();
    let mut t = vec![NONE; n];
    match target {
        Target::Next => t[n - 1] = GREEDY,
        Target::Token(id) => t[n - 1] = *id,
        Target::Prompt => t[..n - 1].copy_from_slice(&tokens[1..]),
        Target::Terms(terms) => terms.iter().for_each(|&(p, id)| t[p] = id),
    }
    t
}

// GPU vs CPU backward: same f16 weights, f32 arithmetic in another order
// through ~20 kernels each way; 1e-3 of the largest gradient catches any wrong
// element or missing term (those are O(1) relative errors).
const GRAD_TOL: f32 = 1e-3;

#[test]
fn gradients_match_cpu_backward_for_every_layer_both_families() {
    for (style, tied, family) in [(RopeStyle::Interleaved, true, KernelFamily::RowPerInvocation), (RopeStyle::Neox, false, KernelFamily::Cooperative)] {
        let (c, w) = tiny(style, tied);
        let mut model = GpuModel::with_family(gpu(), &c, &w, 64, family).unwrap();
        let mut attr = Attributor::new(&model, &w).unwrap();
        let tokens = prompt(&c, 13);
        // Targets the tiny model finds unlikely: its greedy token has p ~ 1 and
        // gradients at rounding level, which would test nothing.
        for target in [Target::Token(3), Target::Prompt, Target::Terms(vec![(3, 40), (12, 7)])] {
            let scores = attr.attribute(&mut model, &tokens, &target, &AttributeOptions::default()).unwrap();
            assert!(scores.log_prob < -1.0, "{target:?}: F = {}", scores.log_prob);
            let want = cpu::attribute(&c, &w, &tokens, &cpu_targets(&tokens, &target), &Intervention::default());
            assert!((scores.log_prob as f64 - want.f).abs() < 1e-3 * want.f.abs().max(1.0), "{target:?}: F {} vs {}", scores.log_prob, want.f);
            for l in 0..c.n_layers {
                let got = attr.read_trace(l).unwrap();
                assert!(rel(&got.heads, &want.heads[l]) < 1e-4, "{family:?} {target:?} layer {l} heads");
                assert!(rel(&got.neurons, &want.neurons[l]) < 1e-4, "{family:?} {target:?} layer {l} neurons");
                let (eh, en) = (rel(&got.head_grads, &want.head_grads[l]), rel(&got.neuron_grads, &want.neuron_grads[l]));
                assert!(eh < GRAD_TOL && en < GRAD_TOL, "{family:?} {target:?} layer {l}: head grads {eh}, neuron grads {en}");
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences_of_the_cpu_forward() {
    let (c, w) = tiny(RopeStyle::Interleaved, false);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let tokens = prompt(&c, 10);
    let target = Target::Prompt;
    let targets = cpu_targets(&tokens, &target);
    attr.attribute(&mut model, &tokens, &target, &AttributeOptions::default()).unwrap();
    let reference = cpu::attribute(&c, &w, &tokens, &targets, &Intervention::default());
    let eps = 1e-2f32;
    // First, middle and last layer; heads and neurons; early, middle and last positions.
    for l in [0, 1, 2] {
        let trace = attr.read_trace(l).unwrap();
        for neurons in [false, true] {
            let width = if neurons { c.ffn_dim } else { c.q_dim() };
            for (t, j) in [(0usize, 5usize), (4, width / 2 + 1), (9, width - 1), (7, 17)] {
                let at = t * width + j;
                let f = |delta: f32| {
                    let perturb = |layer: usize, is_neurons: bool, x: &mut [f32]| {
                        if layer == l && is_neurons == neurons {
                            x[at] += delta;
                        }
                    };
                    cpu::attribute(&c, &w, &tokens, &targets, &Intervention { scale_layer: None, perturb: Some(&perturb) }).f
                };
                let numeric = ((f(eps) - f(-eps)) / (2.0 * eps as f64)) as f32;
                let (gpu_g, cpu_g) = if neurons {
                    (trace.neuron_grads[at], reference.neuron_grads[l][at])
                } else {
                    (trace.head_grads[at], reference.head_grads[l][at])
                };
                // f32 forward noise over 2*eps plus the O(eps^2) truncation: ~1e-3 absolute.
                let tol = 2e-3 + 1e-2 * numeric.abs();
                assert!((gpu_g - numeric).abs() < tol, "layer {l} neurons={neurons} ({t},{j}): gpu {gpu_g} vs numeric {numeric}");
                assert!((cpu_g - numeric).abs() < tol, "layer {l} neurons={neurons} ({t},{j}): cpu {cpu_g} vs numeric {numeric}");
            }
        }
    }
}

#[test]
fn every_metric_matches_the_cpu_reference() {
    let (c, w) = tiny(RopeStyle::Neox, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let tokens = prompt(&c, 9);
    let steps = 4;
    // The tiny model is nearly certain of its greedy token (F ~ 0, gradients at
    // rounding level), so these targets are tokens it finds unlikely.
    // The last row alone (IG's steps run it alone), the last row of a
    // many-row target, and every row.
    for (target, positions) in [
        (Target::Token(3), Positions::Last),
        (Target::Terms(vec![(4, 9), (8, 100)]), Positions::Last),
        (Target::Prompt, Positions::All),
        (Target::Terms(vec![(4, 9), (8, 100)]), Positions::All),
    ] {
        let opts = AttributeOptions { positions: Some(positions), ig_steps: Some(steps) };
        let scores = attr.attribute(&mut model, &tokens, &target, &opts).unwrap();
        assert!(scores.log_prob < -1.0, "{target:?}: F = {}", scores.log_prob);
        let targets = cpu_targets(&tokens, &target);
        let t0 = if positions == Positions::Last { tokens.len() - 1 } else { 0 };
        let reference = cpu::attribute(&c, &w, &tokens, &targets, &Intervention::default());
        let (neurons, heads) = cpu::metrics(&c, &reference, t0, tokens.len());
        let (ig_neurons, ig_heads) = cpu::integrated_gradients(&c, &w, &tokens, &targets, steps, t0, tokens.len());
        let ctx = gpu();
        for (i, metric) in [Metric::Magnitude, Metric::Gxo, Metric::Snip, Metric::Fisher, Metric::CorrectedGxo].into_iter().enumerate() {
            let (gn, gh) = (scores.read_neurons(&ctx, metric).unwrap(), scores.read_heads(&ctx, metric).unwrap());
            for l in 0..c.n_layers {
                assert!(rel(&gn[l], &neurons[l][i]) < GRAD_TOL, "{target:?} {metric} neurons layer {l}: {}", rel(&gn[l], &neurons[l][i]));
                assert!(rel(&gh[l], &heads[l][i]) < GRAD_TOL, "{target:?} {metric} heads layer {l}: {}", rel(&gh[l], &heads[l][i]));
            }
        }
        let (gn, gh) = (scores.read_neurons(&ctx, Metric::IntegratedGradients).unwrap(), scores.read_heads(&ctx, Metric::IntegratedGradients).unwrap());
        for l in 0..c.n_layers {
            assert!(rel(&gn[l], &ig_neurons[l]) < GRAD_TOL, "{target:?} IG neurons layer {l}: {}", rel(&gn[l], &ig_neurons[l]));
            assert!(rel(&gh[l], &ig_heads[l]) < GRAD_TOL, "{target:?} IG heads layer {l}: {}", rel(&gh[l], &ig_heads[l]));
        }
        // IG is not GxO (the path matters on a nonlinear network).
        assert!(rel(&gn[1], &neurons[1][1]) > 1e-2, "{target:?} {positions:?}: IG is GxO within {}", rel(&gn[1], &neurons[1][1]));
    }
}

/// Scoring the last token of a sequence that extends the last one attributed
/// runs only the new token (its keys and values go after the cached ones) and
/// gives the scores of a full pass; a sequence that differs earlier is run
/// again from where it differs, never on stale keys; forgetting the cache
/// runs every token again. Integrated Gradients, whose steps run the last
/// row alone, match the reference too and leave the cache and the trace dense.
#[test]
fn last_token_scores_reuse_cached_tokens_and_equal_a_full_pass() {
    let (c, w) = tiny(RopeStyle::Neox, false);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let opts = AttributeOptions { positions: Some(Positions::Last), ig_steps: None };
    let ig_steps = 3;
    let ig_opts = AttributeOptions { ig_steps: Some(ig_steps), ..opts.clone() };
    let mut tokens = prompt(&c, 8);
    attr.attribute(&mut model, &tokens, &Target::Prompt, &AttributeOptions::default()).unwrap();
    let ctx = gpu();
    for (step, extra) in [5u32, 77, 140].into_iter().enumerate() {
        if step == 2 {
            // Change an early token: the cache no longer matches from there.
            tokens[3] = 200;
        }
        tokens.push(extra);
        let target = Target::Token(3);
        let scores = attr.attribute(&mut model, &tokens, &target, &opts).unwrap();
        let rows_run = attr.read_trace(0).unwrap().neurons.len() / c.ffn_dim;
        assert_eq!(rows_run, if step == 2 { tokens.len() - 3 } else { 1 }, "step {step}");
        assert_eq!(model.position(), tokens.len());
        let reference = cpu::attribute(&c, &w, &tokens, &cpu_targets(&tokens, &target), &Intervention::default());
        let (neurons, heads) = cpu::metrics(&c, &reference, tokens.len() - 1, tokens.len());
        for (i, metric) in [Metric::Magnitude, Metric::Gxo, Metric::Snip, Metric::Fisher, Metric::CorrectedGxo].into_iter().enumerate() {
            let (gn, gh) = (scores.read_neurons(&ctx, metric).unwrap(), scores.read_heads(&ctx, metric).unwrap());
            for l in 0..c.n_layers {
                assert!(rel(&gn[l], &neurons[l][i]) < GRAD_TOL, "step {step} {metric} neurons layer {l}: {}", rel(&gn[l], &neurons[l][i]));
                assert!(rel(&gh[l], &heads[l][i]) < GRAD_TOL, "step {step} {metric} heads layer {l}: {}", rel(&gh[l], &heads[l][i]));
            }
        }
        // IG of the same tokens, all run again: the steps run the last alone.
        attr.forget_cached_tokens();
        let scores = attr.attribute(&mut model, &tokens, &target, &ig_opts).unwrap();
        let trace = attr.read_trace(c.n_layers - 1).unwrap();
        assert_eq!(trace.neurons.len(), c.ffn_dim, "step {step}: IG's trace is the last row");
        assert!(rel(&trace.neuron_grads, &reference.neuron_grads[c.n_layers - 1][(tokens.len() - 1) * c.ffn_dim..]) < GRAD_TOL, "step {step}: IG's trace is dense");
        let targets = cpu_targets(&tokens, &target);
        let (ig_neurons, ig_heads) = cpu::integrated_gradients(&c, &w, &tokens, &targets, ig_steps, tokens.len() - 1, tokens.len());
        let (gn, gh) = (scores.read_neurons(&ctx, Metric::IntegratedGradients).unwrap(), scores.read_heads(&ctx, Metric::IntegratedGradients).unwrap());
        for l in 0..c.n_layers {
            assert!(rel(&gn[l], &ig_neurons[l]) < GRAD_TOL, "step {step} IG neurons layer {l}: {}", rel(&gn[l], &ig_neurons[l]));
            assert!(rel(&gh[l], &ig_heads[l]) < GRAD_TOL, "step {step} IG heads layer {l}: {}", rel(&gh[l], &ig_heads[l]));
        }
        // The model's cache holds the dense sequence: the next token decodes
        // as the reference does.
        let logits = model.forward(&[9], Logits::Last).unwrap();
        let mut next = tokens.clone();
        next.push(9);
        let r = cpu::attribute(&c, &w, &next, &vec![NONE; next.len()], &Intervention::default());
        assert!(rel(&logits, &r.logits[(next.len() - 1) * c.vocab_size..]) < 1e-4, "step {step}: decoding after the pass");
    }
    // The same tokens again reuse everything but the last; once forgotten, every token runs.
    let rerun = |attr: &mut Attributor, model: &mut GpuModel| {
        attr.attribute(model, &tokens, &Target::Token(3), &opts).unwrap();
        attr.read_trace(0).unwrap().neurons.len() / c.ffn_dim
    };
    assert_eq!(rerun(&mut attr, &mut model), 1);
    attr.forget_cached_tokens();
    assert_eq!(rerun(&mut attr, &mut model), tokens.len());
}

/// Integrated Gradients are computed once per tokens, target and steps: the
/// same prompt again gives the same scores (and the gradient metrics of a new
/// pass), and another prompt or step count is computed afresh.
#[test]
fn integrated_gradients_are_kept_per_prompt_target_and_steps() {
    let (c, w) = tiny(RopeStyle::Neox, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let ctx = gpu();
    let (a, b) = (prompt(&c, 7), prompt(&c, 9));
    let target = Target::Token(3);
    let check = |attr: &mut Attributor, model: &mut GpuModel, tokens: &[u32], steps: usize| {
        let opts = AttributeOptions { positions: Some(Positions::Last), ig_steps: Some(steps) };
        let scores = attr.attribute(model, tokens, &target, &opts).unwrap();
        let targets = cpu_targets(tokens, &target);
        let (ig_neurons, _) = cpu::integrated_gradients(&c, &w, tokens, &targets, steps, tokens.len() - 1, tokens.len());
        let reference = cpu::attribute(&c, &w, tokens, &targets, &Intervention::default());
        let (gxo, _) = cpu::metrics(&c, &reference, tokens.len() - 1, tokens.len());
        let (ig, g) = (scores.read_neurons(&ctx, Metric::IntegratedGradients).unwrap(), scores.read_neurons(&ctx, Metric::Gxo).unwrap());
        for l in 0..c.n_layers {
            assert!(rel(&ig[l], &ig_neurons[l]) < GRAD_TOL, "{} tokens, {steps} steps: IG layer {l}: {}", tokens.len(), rel(&ig[l], &ig_neurons[l]));
            assert!(rel(&g[l], &gxo[l][1]) < GRAD_TOL, "{} tokens: GxO layer {l}", tokens.len());
        }
    };
    for (tokens, steps) in [(&a, 3), (&b, 3), (&a, 3), (&a, 5), (&b, 3)] {
        check(&mut attr, &mut model, tokens, steps);
    }
}

#[test]
fn corrected_term_is_half_magnitude_times_layer_gradient_norm() {
    let (c, w) = tiny(RopeStyle::Interleaved, false);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let tokens = prompt(&c, 11);
    // Next resolves to the greedy token.
    let next = attr.attribute(&mut model, &tokens, &Target::Next, &AttributeOptions::default()).unwrap();
    let logits = GpuModel::new(gpu(), &c, &w, 64).unwrap().forward(&tokens, Logits::Last).unwrap();
    assert_eq!(next.target_token, Some(sift_engine::sampling::argmax(&logits)));
    let scores = attr.attribute(&mut model, &tokens, &Target::Token(5), &AttributeOptions::default()).unwrap();
    assert_eq!(scores.positions, Positions::Last);
    assert!(scores.log_prob < -1.0);
    let ctx = gpu();
    let (corrected, gxo) = (scores.read_neurons(&ctx, Metric::CorrectedGxo).unwrap(), scores.read_neurons(&ctx, Metric::Gxo).unwrap());
    let (hc, hg) = (scores.read_heads(&ctx, Metric::CorrectedGxo).unwrap(), scores.read_heads(&ctx, Metric::Gxo).unwrap());
    for l in 0..c.n_layers {
        let tr = attr.read_trace(l).unwrap();
        // The trace's last row is the last token (the second pass reran only it).
        let last = tr.neurons.len() / c.ffn_dim - 1;
        // C(i) = 0.5 * |x_i| * sqrt(sum_k g_k^2), k over the layer's units at the last token.
        let x = &tr.neurons[last * c.ffn_dim..][..c.ffn_dim];
        let g = &tr.neuron_grads[last * c.ffn_dim..][..c.ffn_dim];
        let g_norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        for i in 0..c.ffn_dim {
            let direct = 0.5 * x[i].abs() * g_norm;
            assert!((corrected[l][i] - gxo[l][i] - direct).abs() <= 1e-5 * (1.0 + direct.abs()), "layer {l} neuron {i}");
            assert!((gxo[l][i] - g[i] * x[i]).abs() <= 1e-6 * (1.0 + (g[i] * x[i]).abs()));
        }
        // Heads, the paper's form: 0.5 * ||x_h|| * ||(mean_d g_{h,d})_h||, the
        // norm over the layer's heads of each head's mean gradient.
        let (x, g) = (&tr.heads[last * c.q_dim()..][..c.q_dim()], &tr.head_grads[last * c.q_dim()..][..c.q_dim()]);
        let head_means: Vec<f32> = (0..c.n_heads).map(|h| g[h * c.head_dim..(h + 1) * c.head_dim].iter().sum::<f32>() / c.head_dim as f32).collect();
        let g_norm = head_means.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(g_norm < g.iter().map(|v| v * v).sum::<f32>().sqrt() / 2.0, "layer {l}: the mean-gradient norm is the smaller one");
        for h in 0..c.n_heads {
            let xh = &x[h * c.head_dim..][..c.head_dim];
            let direct = 0.5 * xh.iter().map(|v| v * v).sum::<f32>().sqrt() * g_norm;
            assert!((hc[l][h] - hg[l][h] - direct).abs() <= 1e-5 * (1.0 + direct.abs()), "layer {l} head {h}");
        }
    }
}

#[test]
fn unit_factors_zero_units_like_the_cpu_reference_and_the_cache_continues() {
    let (c, w) = tiny(RopeStyle::Neox, false);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let tokens = prompt(&c, 12);
    let mut factors = UnitFactors::ones(&c);
    factors.from_token = 5;
    for i in (0..factors.neurons.len()).step_by(3) {
        factors.neurons[i] = 0.0;
    }
    factors.heads[1] = 0.0;
    factors.heads[c.n_heads + 3] = 0.0;
    let got = attr.log_prob(&mut model, &tokens, &Target::Prompt, &factors).unwrap();
    let zero = |l: usize, neurons: bool, x: &mut [f32]| {
        let (units, unit_dim) = if neurons { (c.ffn_dim, 1) } else { (c.n_heads, c.head_dim) };
        let f = if neurons { &factors.neurons } else { &factors.heads };
        for (t, row) in x.chunks_mut(units * unit_dim).enumerate().skip(factors.from_token) {
            let _ = t;
            row.iter_mut().enumerate().for_each(|(j, v)| *v *= f[l * units + j / unit_dim]);
        }
    };
    let targets = cpu_targets(&tokens, &Target::Prompt);
    let want = cpu::attribute(&c, &w, &tokens, &targets, &Intervention { scale_layer: None, perturb: Some(&zero) }).f;
    let dense = cpu::attribute(&c, &w, &tokens, &targets, &Intervention::default()).f;
    assert!((got as f64 - want).abs() < 1e-3, "masked F {got} vs cpu {want}");
    assert!((want - dense).abs() > 1e-2, "the mask must change F for this test to mean anything");

    // After an attribution the cache holds the prompt: decoding continues from it.
    attr.attribute(&mut model, &tokens, &Target::Next, &AttributeOptions::default()).unwrap();
    assert_eq!(model.position(), tokens.len());
    let next = model.forward(&[9], Logits::Last).unwrap();
    let mut fresh = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut all = tokens.clone();
    all.push(9);
    let want = fresh.forward(&all, Logits::Last).unwrap();
    assert!(rel(&next, &want) < 1e-4);
}

#[test]
fn bad_input_gives_clear_errors() {
    let (c, w) = tiny(RopeStyle::Neox, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 32).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let opts = AttributeOptions::default();
    let tokens = prompt(&c, 6);
    let err = |r: sift_engine::Result<_>| r.map(|_: sift_engine::attribution::Scores| ()).unwrap_err().to_string();
    assert!(err(attr.attribute(&mut model, &[], &Target::Next, &opts)).contains("non-empty prompt"));
    assert!(err(attr.attribute(&mut model, &[1, 5000], &Target::Next, &opts)).contains("token id 5000 is outside the vocabulary"));
    assert!(err(attr.attribute(&mut model, &tokens, &Target::Token(c.vocab_size as u32), &opts)).contains("outside the vocabulary"));
    assert!(err(attr.attribute(&mut model, &tokens, &Target::Terms(vec![(6, 3)]), &opts)).contains("target position 6 is outside the 6-token prompt"));
    assert!(err(attr.attribute(&mut model, &[4], &Target::Prompt, &opts)).contains("at least two tokens"));
    assert!(err(attr.attribute(&mut model, &prompt(&c, 40), &Target::Next, &opts)).contains("longer than"));
    let zero_steps = AttributeOptions { positions: None, ig_steps: Some(0) };
    assert!(err(attr.attribute(&mut model, &tokens, &Target::Next, &zero_steps)).contains("at least one step"));
    let no_ig = attr.attribute(&mut model, &tokens, &Target::Next, &opts).unwrap();
    assert!(no_ig.read_neurons(&gpu(), Metric::IntegratedGradients).unwrap_err().to_string().contains("not computed"));
    let other = GpuModel::new(gpu(), &c, &w, 32).unwrap();
    let mut other = other;
    assert!(err(attr.attribute(&mut other, &tokens, &Target::Next, &opts)).contains("another model"));
}

/// Calibration's forward trace: every row of the window, even when an
/// earlier pass cached a shared prefix (a window starting with BOS, as every
/// one does for a model that requires it), the CPU reference's neuron
/// outputs, and no gradients; the next attribution runs every row again.
#[test]
fn trace_forward_reads_every_row_without_gradients() {
    let (c, w) = tiny(RopeStyle::Interleaved, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let first = prompt(&c, 10);
    attr.attribute(&mut model, &first, &Target::Next, &AttributeOptions::default()).unwrap();
    let mut second = first[..4].to_vec();
    second.extend([7, 8, 9, 10, 11]);
    attr.trace_forward(&mut model, &second).unwrap();
    let reference = cpu::attribute(&c, &w, &second, &vec![NONE; second.len()], &Intervention::default());
    for l in 0..c.n_layers {
        let trace = attr.read_trace(l).unwrap();
        assert_eq!(trace.neurons.len(), second.len() * c.ffn_dim, "layer {l}: every row");
        assert!(rel(&trace.neurons, &reference.neurons[l]) < 1e-4, "layer {l}: {}", rel(&trace.neurons, &reference.neurons[l]));
        assert!(trace.neuron_grads.is_empty() && trace.head_grads.is_empty(), "no stale gradients");
    }
    attr.attribute(&mut model, &second, &Target::Next, &AttributeOptions::default()).unwrap();
    assert_eq!(attr.read_trace(0).unwrap().neurons.len(), second.len() * c.ffn_dim, "nothing reused after a trace");
}

/// A timed pass (`set_profiling`) gives the same scores as an untimed one and
/// a GPU time for the forward's and the backward's kernel roles.
#[test]
fn a_profiled_pass_scores_the_same_and_times_its_kernels() {
    let (c, w) = tiny(RopeStyle::Interleaved, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let tokens = prompt(&c, 9);
    let ctx = gpu();
    let plain = attr.attribute(&mut model, &tokens, &Target::Next, &AttributeOptions::default()).unwrap().read_neurons(&ctx, Metric::Gxo).unwrap();
    assert!(attr.last_profile().is_none());
    attr.set_profiling(true);
    attr.forget_cached_tokens();
    let timed = attr.attribute(&mut model, &tokens, &Target::Next, &AttributeOptions::default()).unwrap().read_neurons(&ctx, Metric::Gxo).unwrap();
    assert_eq!(timed, plain);
    if ctx.features.contains(sift_engine::wgpu::Features::TIMESTAMP_QUERY) {
        let profile = attr.last_profile().expect("a timed pass");
        for role in ["gate_up", "down", "attention", "lm_head_backward", "down_backward", "gate_up_backward", "rmsnorm_backward"] {
            assert!(profile.iter().any(|(r, s)| *r == role && *s >= 0.0), "no {role} in {profile:?}");
        }
        assert!(profile.iter().map(|(_, s)| s).sum::<f64>() > 0.0);
    }
}
