//! Sparse decoding on a tiny random Llama: decoding with neuron and head
//! masks (fixed, oracle, or per-token thresholds) equals the dense CPU
//! reference with the inactive units zeroed at the decoded positions, in both
//! kernel families; the mask applied is the mask asked for; bad masks, files
//! and activation ratios are clear errors.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use sift_engine::attribution::cpu::{self, Intervention};
use sift_engine::attribution::{AttributeOptions, Attributor, Metric, Target};
use sift_engine::kernels::backward::log_softmax::NONE;
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::kernels::sparse::select_top_reference;
use sift_engine::kernels::KernelFamily;
use sift_engine::model::sparse::{MaskFile, Ratios, Rule, Thresholds};
use sift_engine::model::{Config, GpuModel, Logits, Weights};
use sift_engine::sampling::argmax;
use sift_engine::gpu::GpuContext;
use sift_engine::testing::{gpu, gpu_without_subgroups, random_weights, tiny_config};
use std::sync::Arc;

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// Random fixed masks, both kernel families: the gather kernels (first
/// decoded token) and the compacted mask (the tokens after it).
#[test]
fn sparse_decoding_equals_dense_with_inactive_neurons_zeroed() {
    let c = tiny_config(RopeStyle::Interleaved);
    let mut w = random_weights(&c, 11, false);
    w.round_matrices_to_f16();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for family in [KernelFamily::RowPerInvocation, KernelFamily::Cooperative] {
        for ar in [0.1, 0.3, 1.0] {
            let model = decode_with_random_masks(gpu(), &c, &w, family, ar, &mut rng, false);
            assert_eq!(model.mlp_mask_grouped_layers(), 0, "f16 weights have no 4-bit copy to keep");
        }
    }
}

/// The same with the layers' weights from Q4_1, as GGUF files store them: on
/// CPU adapters the compacted W_down keeps their 4 bits in groups of 8 per
/// block (`kernels::column_groups`), and decoding stays exact.
#[test]
fn sparse_decoding_with_4_bit_mlp_weights_equals_dense_with_inactive_neurons_zeroed() {
    use sift_engine::loader::quant::{dequantize, quantize, GgmlType};
    // Heads of 32: whole blocks of W_o's columns, which then keeps 4 bits too.
    let c = Config { head_dim: 32, rot_dim: 32, ..tiny_config(RopeStyle::Interleaved) };
    let mut w = random_weights(&c, 12, false);
    w.round_matrices_to_f16();
    let q4_1 = |m: &mut Vec<f32>| *m = dequantize(GgmlType::Q4_1, &quantize(GgmlType::Q4_1, m), m.len());
    for l in &mut w.layers {
        [&mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down].into_iter().for_each(q4_1);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    // Half the neurons: at most 2 slots a neuron, always grouped. Compacted
    // from the first token: the gather kernels read f16 copies of the
    // weights, which round Q4_1's values. Where workgroups of 8 are one
    // subgroup (lavapipe), each layer's MLP is one dispatch
    // (`kernels::fused_mlp`), which adds the 2 active heads' output
    // projection (64 of W_o's columns, in 4 bits) first; elsewhere the
    // gate|up stores its rows at their slots for the grouped down.
    for ctx in [gpu(), gpu_without_subgroups()] {
        let fused = ctx.has_subgroups_of_8();
        let model = decode_with_random_masks(ctx, &c, &w, KernelFamily::RowPerInvocation, 0.5, &mut rng, true);
        assert_eq!(model.mlp_mask_grouped_layers(), c.n_layers);
        assert_eq!(model.mlp_mask_fused_layers(), if fused { c.n_layers } else { 0 });
        assert_eq!(model.output_projection_fused_layers(), if fused { c.n_layers } else { 0 });
    }
}

/// Decodes 6 tokens with random masks of ceil(ar * n) neurons (and heads,
/// below AR 1) per layer, checking every step against the CPU reference
/// with the inactive units zeroed, and that the masks read back are the
/// ones set; `compact_first`: the MLP mask compacted before the first token,
/// else from the second. Returns the model, its masks still set.
fn decode_with_random_masks(ctx: Arc<GpuContext>, c: &Config, w: &Weights, family: KernelFamily, ar: f64, rng: &mut rand::rngs::StdRng, compact_first: bool) -> GpuModel {
    // ceil(ar * n) of n units per layer, in random order.
    let mut random_lists = |n: usize| -> Vec<Vec<u32>> {
        (0..c.n_layers)
            .map(|_| {
                let mut ids: Vec<u32> = (0..n as u32).collect();
                ids.shuffle(rng);
                ids.truncate(((ar * n as f64).ceil()) as usize);
                ids
            })
            .collect()
    };
    // Heads masked too, below AR 1: ceil(ar * 4) of 4 per layer.
    let (mask, heads) = (random_lists(c.ffn_dim), random_lists(c.n_heads));
    let mut model = GpuModel::with_family(ctx, c, w, 64, family).unwrap();
    model.enable_sparse(w).unwrap();
    model.set_mlp_mask(&mask).unwrap();
    if ar < 1.0 {
        model.set_head_mask(&heads).unwrap();
    }
    let prompt: Vec<u32> = (0..9).map(|i| (i * 31 + 4) % c.vocab_size as u32).collect();
    let mut logits = model.forward(&prompt, Logits::Last).unwrap();
    if compact_first {
        model.compact_mlp_mask();
    }
    let mut tokens = prompt.clone();
    let zero_inactive = |l: usize, neurons: bool, x: &mut [f32]| {
        let (width, unit, active) = if neurons { (c.ffn_dim, 1, &mask[l]) } else { (c.q_dim(), c.head_dim, &heads[l]) };
        if !neurons && ar == 1.0 {
            return;
        }
        for row in x.chunks_mut(width).skip(prompt.len()) {
            for (i, v) in row.iter_mut().enumerate() {
                if !active.contains(&((i / unit) as u32)) {
                    *v = 0.0;
                }
            }
        }
    };
    for step in 0..6 {
        let next = argmax(&logits);
        tokens.push(next);
        logits = model.forward(&[next], Logits::Last).unwrap();
        // The first token gathers active rows; the rest run the mask compacted.
        assert_eq!(model.mlp_mask_compacted(), compact_first || step > 0, "step {step}");
        let r = cpu::attribute(c, w, &tokens, &vec![NONE; tokens.len()], &Intervention { scale_layer: None, perturb: Some(&zero_inactive) });
        let want = &r.logits[(tokens.len() - 1) * c.vocab_size..];
        // Same tolerance as the dense forward against the CPU: 1e-4 of the logit range.
        assert!(rel(&logits, want) < 1e-4, "{family:?} ar {ar} step {step}: {}", rel(&logits, want));
        if ar < 1.0 && step == 0 {
            let dense = cpu::attribute(c, w, &tokens, &vec![NONE; tokens.len()], &Intervention::default());
            assert!(rel(&dense.logits[(tokens.len() - 1) * c.vocab_size..], want) > 1e-3, "the mask must matter");
        }
    }
    let mut sorted = mask.clone();
    sorted.iter_mut().for_each(|m| m.sort_unstable());
    assert_eq!(model.read_mlp_mask().unwrap().unwrap(), sorted, "the mask applied is the mask asked for");
    if ar < 1.0 {
        let mut sorted = heads.clone();
        sorted.iter_mut().for_each(|m| m.sort_unstable());
        assert_eq!(model.read_head_mask().unwrap().unwrap(), sorted, "the head mask applied is the mask asked for");
    }
    model
}

#[test]
fn masks_from_scores_keep_the_top_scored_neurons_per_layer() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 12, true);
    w.round_matrices_to_f16();
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    model.enable_sparse(&w).unwrap();
    let prompt: Vec<u32> = (0..10).map(|i| (i * 17 + 2) % c.vocab_size as u32).collect();
    let scores = attr.attribute(&mut model, &prompt, &Target::Prompt, &AttributeOptions::default()).unwrap();
    for (metric, ar) in [(Metric::CorrectedGxo, 0.2), (Metric::Magnitude, 0.55), (Metric::Gxo, 1.0)] {
        model.set_mlp_mask_from_scores(&scores, metric, ar).unwrap();
        let k = (ar * c.ffn_dim as f64).ceil() as usize;
        assert_eq!(model.active_fractions().unwrap(), (k as f64 / c.ffn_dim as f64, 1.0));
        let flat: Vec<f32> = scores.read_neurons(&gpu(), metric).unwrap().concat();
        let mut want = select_top_reference(&flat, c.ffn_dim, k);
        want.iter_mut().for_each(|m| m.sort_unstable());
        assert_eq!(model.read_mlp_mask().unwrap().unwrap(), want, "{metric} ar {ar}");
    }
    model.disable_sparsity();
    assert!(model.read_mlp_mask().unwrap().is_none());
}

#[test]
fn bad_masks_and_ratios_are_clear_errors() {
    let c = tiny_config(RopeStyle::Neox);
    let w = random_weights(&c, 13, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 32).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let scores = attr.attribute(&mut model, &[1, 2, 3], &Target::Prompt, &AttributeOptions::default()).unwrap();
    let msg = |r: sift_engine::Result<()>| r.unwrap_err().to_string();
    assert!(msg(model.set_mlp_mask_from_scores(&scores, Metric::Gxo, 0.5)).contains("not enabled"));
    model.enable_sparse(&w).unwrap();
    for ar in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(msg(model.set_mlp_mask_from_scores(&scores, Metric::Gxo, ar)).contains("activation ratio must be in (0, 1]"), "{ar}");
    }
    assert!(msg(model.set_mlp_mask_from_scores(&scores, Metric::IntegratedGradients, 0.5)).contains("not computed"));
    let layer = |ids: &[u32]| ids.to_vec();
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 2])])).contains("needs 3 layers"));
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 2]), layer(&[3, 500]), layer(&[0, 1])])).contains("neuron 500 in layer 1 is out of range"));
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 1]), layer(&[3, 4]), layer(&[0, 1])])).contains("appears twice"));
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 2]), layer(&[]), layer(&[0, 1])])).contains("layer 1 of the mask has no active neurons"));
    assert!(msg(model.set_head_mask(&[layer(&[0]), layer(&[4]), layer(&[1])])).contains("head 4 in layer 1 is out of range"));
    for ar in [0.0, 1.01] {
        assert!(msg(model.set_head_mask_from_scores(&scores, Metric::Gxo, ar)).contains("activation ratio"));
        assert!(sift_engine::model::sparse::Ratios::both(ar).check().is_err());
    }
}

#[test]
fn oracle_step_equals_dense_with_the_last_tokens_inactive_neurons_zeroed() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 14, false);
    w.round_matrices_to_f16();
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    model.enable_sparse(&w).unwrap();
    let mut tokens: Vec<u32> = (0..7).map(|i| (i * 29 + 3) % c.vocab_size as u32).collect();
    for step in 0..3 {
        let logits = sift_engine::model::sparse::oracle_step(&mut model, &mut attr, &tokens, Metric::CorrectedGxo, Ratios::both(0.5)).unwrap().0;
        assert_eq!(model.position(), tokens.len());
        let mask = model.read_mlp_mask().unwrap().unwrap();
        let heads = model.read_head_mask().unwrap().unwrap();
        assert!(heads.iter().all(|h| h.len() == 2) && mask.iter().all(|m| m.len() == 48));
        let last = tokens.len() - 1;
        let zero = |l: usize, neurons: bool, x: &mut [f32]| {
            let (width, unit, active) = if neurons { (c.ffn_dim, 1, &mask[l]) } else { (c.q_dim(), c.head_dim, &heads[l]) };
            for (i, v) in x[last * width..].iter_mut().enumerate() {
                if !active.contains(&((i / unit) as u32)) {
                    *v = 0.0;
                }
            }
        };
        let r = cpu::attribute(&c, &w, &tokens, &vec![NONE; tokens.len()], &Intervention { scale_layer: None, perturb: Some(&zero) });
        assert!(rel(&logits, &r.logits[last * c.vocab_size..]) < 1e-4, "step {step}");
        tokens.push(argmax(&logits));
    }
    assert!(model.rewind(100).is_err());
}

/// Threshold mode, both rules: each decoded token (after a dense prefill of
/// the tokens before it) equals the CPU reference with that token's inactive
/// neurons zeroed, and the neurons kept are the ones the rule keeps on the
/// reference's own neuron outputs.
#[test]
fn threshold_decoding_equals_dense_with_the_rules_inactive_neurons_zeroed() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 15, false);
    w.round_matrices_to_f16();
    let all = [(Rule::Cett, false, 0.25f32), (Rule::Cats, false, 0.3), (Rule::Weighted, true, 0.25), (Rule::Cats, true, 0.3)];
    threshold_decoding_matches_reference(&c, &w, &[KernelFamily::RowPerInvocation, KernelFamily::Cooperative], &all, 0);
}

/// The same on a Q4_1 model whose widths are whole 64-row blocks: where
/// workgroups of 8 are one subgroup (lavapipe), the gate rules run in one
/// dispatch per layer from per-neuron 4-bit weights (`kernels::cats_mlp`).
#[test]
fn threshold_decoding_with_4_bit_mlp_weights_equals_dense_with_the_rules_inactive_neurons_zeroed() {
    use sift_engine::loader::quant::{dequantize, quantize, GgmlType};
    let c = Config { ffn_dim: 128, ..tiny_config(RopeStyle::Neox) };
    let mut w = random_weights(&c, 18, false);
    w.round_matrices_to_f16();
    let q4_1 = |m: &mut Vec<f32>| *m = dequantize(GgmlType::Q4_1, &quantize(GgmlType::Q4_1, m), m.len());
    for l in &mut w.layers {
        [&mut l.w_gate, &mut l.w_up, &mut l.w_down].into_iter().for_each(q4_1);
    }
    let fused = if gpu().has_subgroups_of_8() { c.n_layers } else { 0 };
    // The gate rules in the CPU kernel family (elsewhere, and for the rules
    // on h, the gather kernels read f16 copies of the weights, which round Q4_1's values).
    threshold_decoding_matches_reference(&c, &w, &[KernelFamily::RowPerInvocation], &[(Rule::Cats, false, 0.3), (Rule::Cats, true, 0.3)], fused);
}

/// `rules`: (rule, with per-neuron weights, threshold); `gate_rule_fused`:
/// the layers a gate rule (CATS) should run fused, with the row-per-invocation kernels.
fn threshold_decoding_matches_reference(c: &Config, w: &Weights, families: &[KernelFamily], rules: &[(Rule, bool, f32)], gate_rule_fused: usize) {
    let (c, w) = (c.clone(), w);
    let down_norms: Vec<Vec<f32>> = w.layers.iter().map(|l| (0..c.ffn_dim).map(|i| (0..c.dim).map(|d| l.w_down[d * c.ffn_dim + i].powi(2)).sum::<f32>().sqrt()).collect()).collect();
    // A weighted rule's per-neuron weights (rule_calibration makes them from gradients).
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let rule_weights: Vec<f32> = (0..c.n_layers * c.ffn_dim).map(|_| rand::Rng::random_range(&mut rng, 0.0f32..2.0)).collect();
    for &family in families {
        for &(rule, weighted, t) in rules {
            let mut model = GpuModel::with_family(gpu(), &c, w, 64, family).unwrap();
            model.enable_sparse(w).unwrap();
            let thresholds = match weighted {
                true => Thresholds::weighted(&model, rule, rule_weights.clone(), vec![t; c.n_layers], serde_json::Value::Null),
                false => Thresholds::new(&model, rule, vec![t; c.n_layers], serde_json::Value::Null),
            };
            model.set_threshold_mask(&thresholds).unwrap();
            let want_fused = if rule == Rule::Cats && family == KernelFamily::RowPerInvocation { gate_rule_fused } else { 0 };
            assert_eq!(model.gate_rule_fused_layers(), want_fused, "{family:?} {rule:?}");
            let mut tokens: Vec<u32> = (0..6).map(|i| (i * 13 + 5) % c.vocab_size as u32).collect();
            for step in 0..3 {
                let last = tokens.len() - 1;
                model.reset();
                model.forward(&tokens[..last], Logits::Last).unwrap();
                let logits = model.forward(&tokens[last..], Logits::Last).unwrap();
                let mask = model.read_mlp_mask().unwrap().unwrap();
                let seen = std::cell::RefCell::new(vec![Vec::new(); c.n_layers]);
                let zero = |l: usize, neurons: bool, x: &mut [f32]| {
                    if neurons {
                        seen.borrow_mut()[l] = x[last * c.ffn_dim..].to_vec();
                        for (i, v) in x[last * c.ffn_dim..].iter_mut().enumerate() {
                            if !mask[l].contains(&(i as u32)) {
                                *v = 0.0;
                            }
                        }
                    }
                };
                let r = cpu::attribute(&c, w, &tokens, &vec![NONE; tokens.len()], &Intervention { scale_layer: None, perturb: Some(&zero) });
                assert!(rel(&logits, &r.logits[last * c.vocab_size..]) < 1e-4, "{family:?} {rule:?} step {step}: {}", rel(&logits, &r.logits[last * c.vocab_size..]));
                // The rule on the reference's values; neurons within float
                // error of the threshold may go either way.
                for l in 0..c.n_layers {
                    let h = &seen.borrow()[l];
                    // (CATS thresholds silu(gate), which the reference does not expose;
                    // its kernel is checked against a reference in the kernel tests.)
                    if rule != Rule::Cats {
                        for i in 0..c.ffn_dim {
                            let weight = if rule == Rule::Cett { down_norms[l][i] } else { rule_weights[l * c.ffn_dim + i] };
                            let (v, on) = (h[i].abs() * weight, mask[l].contains(&(i as u32)));
                            assert!(on == (v >= t) || (v - t).abs() < 1e-4, "{family:?} layer {l} neuron {i}: {v} vs {t}, active {on}");
                        }
                    }
                    let frac = mask[l].len() as f64 / c.ffn_dim as f64;
                    assert!(frac > 0.1 && frac < 0.9, "{rule:?} layer {l}: {frac} active (the test's thresholds should mask some)");
                }
                tokens.push(argmax(&logits));
            }
        }
    }
}

#[test]
fn mask_and_threshold_files_round_trip_and_bad_files_are_clear_errors() {
    let c = tiny_config(RopeStyle::Neox);
    let w = random_weights(&c, 16, true);
    let mut model = GpuModel::new(gpu(), &c, &w, 32).unwrap();
    model.enable_sparse(&w).unwrap();
    let dir = std::env::temp_dir().join(format!("sift-mask-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let neurons: Vec<Vec<u32>> = (0..c.n_layers as u32).map(|l| vec![l, l + 10, 95]).collect();
    let heads: Vec<Vec<u32>> = vec![vec![0], vec![1, 3], vec![2]];
    model.set_mlp_mask(&neurons).unwrap();
    model.set_head_mask(&heads).unwrap();
    let path = dir.join("mask.json");
    MaskFile::from_model(&model, serde_json::json!({"test": true})).unwrap().save(&path).unwrap();
    model.disable_sparsity();
    MaskFile::load(&path).unwrap().apply(&mut model).unwrap();
    assert_eq!(model.read_mlp_mask().unwrap().unwrap(), neurons);
    assert_eq!(model.read_head_mask().unwrap().unwrap(), heads);

    let msg = |r: sift_engine::Result<()>| r.unwrap_err().to_string();
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut v);
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let out_of_range = edit("range.json", &|v| v["neurons"][1][0] = 96.into());
    assert!(msg(MaskFile::load(&out_of_range).unwrap().apply(&mut model)).contains("neuron 96 in layer 1 is out of range"));
    let other = edit("other.json", &|v| v["model"]["fingerprint"] = "0123456789abcdef".into());
    assert!(msg(MaskFile::load(&other).unwrap().apply(&mut model)).contains("made for another model"));
    let layers = edit("layers.json", &|v| v["model"]["n_layers"] = 4.into());
    assert!(msg(MaskFile::load(&layers).unwrap().apply(&mut model)).contains("4 layers"));
    let format = edit("format.json", &|v| v["format"] = "something-else".into());
    assert!(MaskFile::load(&format).unwrap_err().to_string().contains("format is 'something-else'"));
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"format\": \"sift-mask-1\", ").unwrap();
    let e = MaskFile::load(&broken).unwrap_err().to_string();
    assert!(e.contains("broken.json") && e.contains("not valid JSON") && e.contains("line 1"), "{e}");
    assert!(MaskFile::load(&dir.join("missing.json")).unwrap_err().to_string().contains("missing.json"));

    let th = Thresholds::new(&model, Rule::Cett, vec![0.1; c.n_layers], serde_json::Value::Null);
    let tpath = dir.join("thresholds.json");
    th.save(&tpath).unwrap();
    model.set_threshold_mask(&Thresholds::load(&tpath).unwrap()).unwrap();
    let mut short = th.clone();
    short.thresholds.pop();
    assert!(msg(model.set_threshold_mask(&short)).contains("has 2 thresholds; the model has 3 layers"));
    let other_model = GpuModel::new(gpu(), &c, &random_weights(&c, 17, true), 32).unwrap();
    let mut foreign = th.clone();
    foreign.model = sift_engine::model::sparse::files::ModelId::of(&other_model);
    assert!(msg(model.set_threshold_mask(&foreign)).contains("made for another model"));
    let mut v: serde_json::Value = serde_json::to_value(&th).unwrap();
    v["thresholds"][0] = (-1.0).into();
    std::fs::write(dir.join("negative.json"), v.to_string()).unwrap();
    assert!(Thresholds::load(&dir.join("negative.json")).unwrap_err().to_string().contains("layer 0 is -1"));
    // Weighted rules: the weights round-trip; missing, wrong-sized or negative ones are refused.
    let weighted = Thresholds::weighted(&model, Rule::Weighted, vec![0.5; c.n_layers * c.ffn_dim], vec![0.1; c.n_layers], serde_json::Value::Null);
    let wpath = dir.join("weighted.json");
    weighted.save(&wpath).unwrap();
    model.set_threshold_mask(&Thresholds::load(&wpath).unwrap()).unwrap();
    let bad_weights = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(&weighted).unwrap();
        f(&mut v);
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let none = bad_weights("no-weights.json", &|v| v.as_object_mut().unwrap().remove("weights").map(drop).unwrap());
    assert!(Thresholds::load(&none).unwrap_err().to_string().contains("needs its per-neuron weights"));
    let negative = bad_weights("negative-weight.json", &|v| v["weights"][5] = (-2.0).into());
    assert!(Thresholds::load(&negative).unwrap_err().to_string().contains("weight 5 is -2"));
    let cett_with = bad_weights("cett-weights.json", &|v| v["rule"] = "cett".into());
    assert!(Thresholds::load(&cett_with).unwrap_err().to_string().contains("takes no per-neuron weights"));
    // A gate rule (CATS) may weigh its neurons.
    let cats_with = bad_weights("cats-weights.json", &|v| v["rule"] = "cats".into());
    model.set_threshold_mask(&Thresholds::load(&cats_with).unwrap()).unwrap();
    let short = bad_weights("short-weights.json", &|v| {
        v["weights"].as_array_mut().unwrap().pop();
    });
    assert!(msg(model.set_threshold_mask(&Thresholds::load(&short).unwrap())).contains("287 neuron weights; the model has 288"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the threshold applied to every token, a batched forward equals the
/// CPU reference with the rule zeroing every token's neurons (the Sparsing
/// Law's setting, used by calibration and perplexity).
#[test]
fn threshold_on_every_token_equals_the_reference_with_the_rule_applied() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 18, false);
    w.round_matrices_to_f16();
    let down_norms: Vec<Vec<f32>> = w.layers.iter().map(|l| (0..c.ffn_dim).map(|i| (0..c.dim).map(|d| l.w_down[d * c.ffn_dim + i].powi(2)).sum::<f32>().sqrt()).collect()).collect();
    let eps = [0.2f32, 0.3, 0.25];
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    model.enable_sparse(&w).unwrap();
    model.set_threshold_mask(&Thresholds::new(&model, Rule::Cett, eps.to_vec(), serde_json::Value::Null)).unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 7 + 1) % c.vocab_size as u32).collect();
    let dense = cpu::attribute(&c, &w, &tokens, &vec![NONE; tokens.len()], &Intervention::default());
    let dropped = std::cell::Cell::new(0usize);
    let rule = |l: usize, neurons: bool, x: &mut [f32]| {
        if neurons {
            for row in x.chunks_mut(c.ffn_dim) {
                for (i, v) in row.iter_mut().enumerate() {
                    if v.abs() * down_norms[l][i] < eps[l] {
                        *v = 0.0;
                        dropped.set(dropped.get() + 1);
                    }
                }
            }
        }
    };
    let want = cpu::attribute(&c, &w, &tokens, &vec![NONE; tokens.len()], &Intervention { scale_layer: None, perturb: Some(&rule) });
    let frac = dropped.get() as f64 / (tokens.len() * c.n_layers * c.ffn_dim) as f64;
    assert!(frac > 0.1 && frac < 0.9, "{frac} of the neurons dropped");
    // Off: batched forwards stay dense.
    let got = model.forward(&tokens, Logits::All).unwrap();
    assert!(rel(&got, &dense.logits) < 1e-4);
    model.set_threshold_mask_every_token(&Thresholds::new(&model, Rule::Cett, eps.to_vec(), serde_json::Value::Null)).unwrap();
    model.reset();
    let got = model.forward(&tokens, Logits::All).unwrap();
    assert!(rel(&got, &want.logits) < 1e-4, "{}", rel(&got, &want.logits));
    assert!(rel(&dense.logits, &want.logits) > 1e-3, "the rule must matter");
}

/// The decode footprint (the bench's roofline) counts the weight bytes a
/// step reads: dense, every layer's f16 matrices and the lm-head, rows padded
/// to blocks of 64 on CPU adapters; with compacted neuron and head masks, the
/// compacted matrices in place of the dense MLP, W_q and W_o.
#[test]
fn decode_footprint_counts_the_weights_a_step_reads() {
    use sift_engine::kernels::compact::width_for;
    let c = tiny_config(RopeStyle::Interleaved);
    let mut w = random_weights(&c, 11, false);
    w.round_matrices_to_f16();
    let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    for family in [KernelFamily::RowPerInvocation, KernelFamily::Cooperative] {
        let rows = |n: usize| if family == KernelFamily::RowPerInvocation { n.div_ceil(64) * 64 } else { n };
        let matrix = |r: usize, k: usize| (rows(r) * k * 2) as u64;
        let mut model = GpuModel::with_family(gpu(), &c, &w, 64, family).unwrap();
        let dense = model.decode_footprint();
        let attention = matrix(q + 2 * kv, c.dim) + matrix(c.dim, q);
        let mlp = matrix(2 * c.ffn_dim, c.dim) + matrix(c.dim, c.ffn_dim);
        let lm_head = matrix(c.vocab_size, c.dim);
        assert_eq!(dense.weight_bytes, c.n_layers as u64 * (attention + mlp) + lm_head, "{family:?} dense");
        model.enable_sparse(&w).unwrap();
        let k = 13;
        model.set_mlp_mask(&vec![(0..k as u32).map(|i| i * 7).collect(); c.n_layers]).unwrap();
        model.compact_mlp_mask();
        model.set_head_mask(&vec![vec![1u32, 3]; c.n_layers]).unwrap();
        let sparse = model.decode_footprint();
        let (neurons, query_rows) = (width_for(k), width_for(2 * c.head_dim));
        let attention = matrix(query_rows + 2 * kv, c.dim) + matrix(c.dim, query_rows);
        let mlp = matrix(2 * neurons, c.dim) + matrix(c.dim, neurons);
        assert_eq!(sparse.weight_bytes, c.n_layers as u64 * (attention + mlp) + lm_head, "{family:?} sparse");
        assert!(0 < sparse.dispatches && sparse.dispatches <= dense.dispatches, "{family:?}: {sparse:?} {dense:?}");
    }
}
