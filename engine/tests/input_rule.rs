//! TEAL's rule on a tiny random Llama (`model::sparse::inputs`): decoding
//! (and, set for every token, a batched forward) with per-site thresholds on
//! the projections' inputs equals the CPU reference with the same rule
//! applied to its own inputs, in both kernel families; the share of weights
//! it reports reading is the reference's count; bad files are clear errors.

use sift_engine::kernels::rope::RopeStyle;
use sift_engine::kernels::KernelFamily;
use sift_engine::model::sparse::InputThresholds;
use sift_engine::model::{Config, CpuModel, GpuModel, Logits, Site, Weights};
use sift_engine::testing::{gpu, random_weights, tiny_config};
use std::cell::{Cell, RefCell};

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// Per site, the median |input| over every layer of a dense reference
/// forward of `tokens`: thresholds that keep about half.
fn median_thresholds(c: &Config, w: &Weights, tokens: &[u32]) -> [f32; 4] {
    let seen = RefCell::new([(); 4].map(|_| Vec::new()));
    CpuModel::new(c, w, 64).forward_edited(tokens, &|_, s, v| seen.borrow_mut()[s as usize].extend(v.iter().map(|x| x.abs())));
    seen.into_inner().map(|mut v| {
        v.sort_by(f32::total_cmp);
        // Between two values, not on one.
        (v[v.len() / 2] + v[v.len() / 2 + 1]) / 2.0
    })
}

/// The reference under the rule: logits of `tokens[n_dense..]` after a dense
/// `tokens[..n_dense]`, and the share of projection weights the kept inputs
/// select. Asserts no input lies within float error of its threshold, so the
/// GPU must make the same choices.
fn reference(c: &Config, w: &Weights, tokens: &[u32], n_dense: usize, t: [f32; 4]) -> (Vec<f32>, f64) {
    let mut cpu = CpuModel::new(c, w, 64);
    if n_dense > 0 {
        cpu.forward(&tokens[..n_dense]);
    }
    let (read, margin) = (Cell::new(0.0f64), Cell::new(f32::INFINITY));
    let logits = cpu.forward_edited(&tokens[n_dense..], &|_, s, v| {
        let t = t[s as usize];
        for x in v.iter_mut() {
            margin.set(margin.get().min((x.abs() - t).abs() / t));
            if x.abs() < t {
                *x = 0.0;
            } else {
                read.set(read.get() + s.rows(c) as f64);
            }
        }
    });
    assert!(margin.into_inner() > 1e-5, "an input within float error of its threshold: choose other tokens");
    let n = (tokens.len() - n_dense) as f64;
    let all: f64 = Site::ALL.iter().map(|s| (c.n_layers * s.width(c) * s.rows(c)) as f64).sum::<f64>() * n;
    (logits, read.into_inner() / all)
}

fn file(model: &GpuModel, t: [f32; 4]) -> InputThresholds {
    let l = model.config.n_layers;
    InputThresholds::new(model, t.map(|v| vec![v; l]), serde_json::Value::Null)
}

#[test]
fn input_rule_equals_the_reference_with_small_inputs_zeroed() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 23, false);
    w.round_matrices_to_f16();
    let tokens: Vec<u32> = (0..7).map(|i| (i * 17 + 2) % c.vocab_size as u32).collect();
    let t = median_thresholds(&c, &w, &tokens);
    for family in [KernelFamily::RowPerInvocation, KernelFamily::Cooperative] {
        let mut model = GpuModel::with_family(gpu(), &c, &w, 64, family).unwrap();
        let rule = file(&model, t);
        // Decoding: a dense prefill, then each token alone under the rule.
        for last in [4usize, 6] {
            model.disable_sparsity();
            model.reset();
            model.forward(&tokens[..last], Logits::Last).unwrap();
            model.set_input_rule(&rule, false).unwrap();
            let got = model.forward(&tokens[last..last + 1], Logits::Last).unwrap();
            let (want, share) = reference(&c, &w, &tokens[..last + 1], last, t);
            assert!(rel(&got, &want) < 1e-4, "{family:?} token {last}: {}", rel(&got, &want));
            let read = model.input_share_read().unwrap().unwrap();
            assert!((read - share).abs() < 1e-12, "{family:?}: read {read}, reference {share}");
            assert!(share > 0.2 && share < 0.8, "the medians should keep about half: {share}");
        }
        // Every token of a batched forward.
        model.disable_sparsity();
        model.reset();
        model.set_input_rule(&rule, true).unwrap();
        let got = model.forward(&tokens, Logits::All).unwrap();
        let (want, share) = reference(&c, &w, &tokens, 0, t);
        assert!(rel(&got, &want) < 1e-4, "{family:?} batched: {}", rel(&got, &want));
        assert!((model.input_share_read().unwrap().unwrap() - share).abs() < 1e-12);
        // Thresholds of 0 keep everything: the dense forward.
        model.disable_sparsity();
        model.reset();
        let dense = model.forward(&tokens, Logits::All).unwrap();
        model.reset();
        model.set_input_rule(&file(&model, [0.0; 4]), true).unwrap();
        // (Over more tokens than the matvec takes, dense runs the same unfused kernels.)
        assert_eq!(model.forward(&tokens, Logits::All).unwrap(), dense, "{family:?}");
    }
}

#[test]
fn bad_input_thresholds_files_are_clear_errors() {
    let c = tiny_config(RopeStyle::Neox);
    let w = random_weights(&c, 24, false);
    let mut model = GpuModel::new(gpu(), &c, &w, 32).unwrap();
    let dir = std::env::temp_dir().join(format!("sift-input-rule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = file(&model, [0.1; 4]);
    let path = dir.join("inputs.json");
    good.save(&path).unwrap();
    assert!(InputThresholds::is_input_file(&path));
    let loaded = InputThresholds::load(&path).unwrap();
    assert_eq!(loaded.attn, good.attn);
    // A negative threshold names the site, the layer and the file.
    let mut bad = good.clone();
    bad.o[1] = -1.0;
    bad.save(&path).unwrap();
    let err = InputThresholds::load(&path).unwrap_err().to_string();
    assert!(err.contains("inputs.json") && err.contains("o threshold of layer 1"), "{err}");
    // A layer missing.
    let mut short = good.clone();
    short.mlp.pop();
    let err = model.set_input_rule(&short, false).unwrap_err().to_string();
    assert!(err.contains("mlp thresholds") && err.contains(&format!("{} layers", c.n_layers)), "{err}");
    // Another model's file.
    let mut other = good.clone();
    other.model.fingerprint = "0000".into();
    let err = model.set_input_rule(&other, false).unwrap_err().to_string();
    assert!(err.contains("another model"), "{err}");
    // A neuron-rule thresholds file is not this kind.
    std::fs::write(&path, r#"{"format": "sift-thresholds-1"}"#).unwrap();
    assert!(!InputThresholds::is_input_file(&path));
    std::fs::remove_dir_all(&dir).ok();
}
