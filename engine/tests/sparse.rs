//! Sparse decoding on a tiny random Llama: decoding with a neuron mask equals
//! the dense CPU reference with the inactive neurons zeroed at the decoded
//! positions, in both kernel families; the mask applied is the mask asked for;
//! bad masks and activation ratios are clear errors.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use sift_engine::attribution::cpu::{self, Intervention};
use sift_engine::attribution::{AttributeOptions, Attributor, Metric, Target};
use sift_engine::kernels::backward::log_softmax::NONE;
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::kernels::sparse::select_top_reference;
use sift_engine::kernels::KernelFamily;
use sift_engine::model::{GpuModel, Logits};
use sift_engine::sampling::argmax;
use sift_engine::testing::{gpu, random_weights, tiny_config};

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn sparse_decoding_equals_dense_with_inactive_neurons_zeroed() {
    let c = tiny_config(RopeStyle::Interleaved);
    let mut w = random_weights(&c, 11, false);
    w.round_matrices_to_f16();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for family in [KernelFamily::RowPerInvocation, KernelFamily::Cooperative] {
        for ar in [0.1, 0.3, 1.0] {
            let k = ((ar * c.ffn_dim as f64).ceil()) as usize;
            let mask: Vec<Vec<u32>> = (0..c.n_layers)
                .map(|_| {
                    let mut ids: Vec<u32> = (0..c.ffn_dim as u32).collect();
                    ids.shuffle(&mut rng);
                    ids.truncate(k);
                    ids
                })
                .collect();
            let mut model = GpuModel::with_family(gpu(), &c, &w, 64, family).unwrap();
            model.enable_sparse_mlp(&w).unwrap();
            model.set_mlp_mask(&mask).unwrap();
            let prompt: Vec<u32> = (0..9).map(|i| (i * 31 + 4) % c.vocab_size as u32).collect();
            let mut logits = model.forward(&prompt, Logits::Last).unwrap();
            let mut tokens = prompt.clone();
            let zero_inactive = |l: usize, neurons: bool, x: &mut [f32]| {
                if neurons {
                    for row in x.chunks_mut(c.ffn_dim).skip(prompt.len()) {
                        for (i, v) in row.iter_mut().enumerate() {
                            if !mask[l].contains(&(i as u32)) {
                                *v = 0.0;
                            }
                        }
                    }
                }
            };
            for step in 0..6 {
                let next = argmax(&logits);
                tokens.push(next);
                logits = model.forward(&[next], Logits::Last).unwrap();
                let r = cpu::attribute(&c, &w, &tokens, &vec![NONE; tokens.len()], &Intervention { scale_layer: None, perturb: Some(&zero_inactive) });
                let want = &r.logits[(tokens.len() - 1) * c.vocab_size..];
                // Same tolerance as the dense forward against the CPU: 1e-4 of the logit range.
                assert!(rel(&logits, want) < 1e-4, "{family:?} ar {ar} step {step}: {}", rel(&logits, want));
                if ar < 1.0 && step == 0 {
                    let dense = cpu::attribute(&c, &w, &tokens, &vec![NONE; tokens.len()], &Intervention::default());
                    assert!(rel(&dense.logits[(tokens.len() - 1) * c.vocab_size..], want) > 1e-3, "the mask must matter");
                }
            }
            let mut sorted = mask.clone();
            sorted.iter_mut().for_each(|m| m.sort_unstable());
            assert_eq!(model.read_mlp_mask().unwrap().unwrap(), sorted, "the mask applied is the mask asked for");
        }
    }
}

#[test]
fn masks_from_scores_keep_the_top_scored_neurons_per_layer() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 12, true);
    w.round_matrices_to_f16();
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    model.enable_sparse_mlp(&w).unwrap();
    let prompt: Vec<u32> = (0..10).map(|i| (i * 17 + 2) % c.vocab_size as u32).collect();
    let scores = attr.attribute(&mut model, &prompt, &Target::Prompt, &AttributeOptions::default()).unwrap();
    for (metric, ar) in [(Metric::CorrectedGxo, 0.2), (Metric::Magnitude, 0.55), (Metric::Gxo, 1.0)] {
        model.set_mlp_mask_from_scores(&scores, metric, ar).unwrap();
        let k = (ar * c.ffn_dim as f64).ceil() as usize;
        assert_eq!(model.active_neurons(), Some(k));
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
    model.enable_sparse_mlp(&w).unwrap();
    for ar in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(msg(model.set_mlp_mask_from_scores(&scores, Metric::Gxo, ar)).contains("activation ratio must be in (0, 1]"), "{ar}");
    }
    assert!(msg(model.set_mlp_mask_from_scores(&scores, Metric::IntegratedGradients, 0.5)).contains("not computed"));
    let layer = |ids: &[u32]| ids.to_vec();
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 2])])).contains("needs 3 layers"));
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 2]), layer(&[3, 500]), layer(&[0, 1])])).contains("neuron 500 in layer 1 is out of range"));
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 1]), layer(&[3, 4]), layer(&[0, 1])])).contains("appears twice"));
    assert!(msg(model.set_mlp_mask(&[layer(&[1, 2]), layer(&[3]), layer(&[0, 1])])).contains("same, non-zero number"));
}

#[test]
fn oracle_step_equals_dense_with_the_last_tokens_inactive_neurons_zeroed() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 14, false);
    w.round_matrices_to_f16();
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    model.enable_sparse_mlp(&w).unwrap();
    let mut tokens: Vec<u32> = (0..7).map(|i| (i * 29 + 3) % c.vocab_size as u32).collect();
    for step in 0..3 {
        let logits = sift_engine::model::sparse::oracle_step(&mut model, &mut attr, &tokens, Metric::CorrectedGxo, 0.3).unwrap();
        assert_eq!(model.position(), tokens.len());
        let mask = model.read_mlp_mask().unwrap().unwrap();
        let last = tokens.len() - 1;
        let zero = |l: usize, neurons: bool, x: &mut [f32]| {
            if neurons {
                for (i, v) in x[last * c.ffn_dim..].iter_mut().enumerate() {
                    if !mask[l].contains(&(i as u32)) {
                        *v = 0.0;
                    }
                }
            }
        };
        let r = cpu::attribute(&c, &w, &tokens, &vec![NONE; tokens.len()], &Intervention { scale_layer: None, perturb: Some(&zero) });
        assert!(rel(&logits, &r.logits[last * c.vocab_size..]) < 1e-4, "step {step}");
        tokens.push(argmax(&logits));
    }
    assert!(model.rewind(100).is_err());
}
