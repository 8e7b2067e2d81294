//! Evaluation helpers on a tiny random model: every sparsity mode at AR 1
//! scores a continuation as dense does, masks below 1 change it, and greedy
//! generation under `Off` is the plain greedy decode.

use sift_engine::attribution::{Attributor, Metric};
use sift_engine::eval::{continuation_log_prob, greedy, Sparsity};
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::model::sparse::{PromptTarget, Ratios, Rule, Thresholds};
use sift_engine::model::{GpuModel, Logits};
use sift_engine::sampling::argmax;
use sift_engine::testing::{gpu, random_weights, tiny_config};

#[test]
fn sparsity_modes_at_full_ratio_score_like_dense() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 31, true);
    w.round_matrices_to_f16();
    let mut model = GpuModel::new(gpu(), &c, &w, 64).unwrap();
    model.enable_sparse(&w).unwrap();
    let mut attr = Attributor::new(&model, &w).unwrap();
    let context: Vec<u32> = (0..8).map(|i| (i * 11 + 3) % c.vocab_size as u32).collect();
    let cont = [5u32, 77, 120, 9];
    let dense = continuation_log_prob(&mut model, &mut attr, &context, &cont, &Sparsity::Off).unwrap();
    // By hand: log p of each continuation token after its prefix.
    model.reset();
    let mut tokens = context.clone();
    let mut want = 0.0;
    let mut logits = model.forward(&context, Logits::Last).unwrap();
    for &t in &cont {
        want -= sift_engine::perplexity::nll(&logits, t);
        tokens.push(t);
        logits = model.forward(&[t], Logits::Last).unwrap();
    }
    assert!((dense - want).abs() < 1e-3, "{dense} vs {want}");
    let zero_thresholds = Thresholds::new(&model, Rule::Cett, vec![0.0; c.n_layers], serde_json::Value::Null);
    for s in [Sparsity::Prompt(Metric::CorrectedGxo, Ratios::both(1.0), PromptTarget::Tokens), Sparsity::Oracle(Metric::Gxo, Ratios::mlp(1.0)), Sparsity::Threshold(zero_thresholds)] {
        let got = continuation_log_prob(&mut model, &mut attr, &context, &cont, &s).unwrap();
        assert!((got - dense).abs() < 1e-3, "{}: {got} vs dense {dense}", s.label());
    }
    for s in [Sparsity::Prompt(Metric::CorrectedGxo, Ratios::both(0.3), PromptTarget::Next), Sparsity::Oracle(Metric::Magnitude, Ratios::mlp(0.2))] {
        let got = continuation_log_prob(&mut model, &mut attr, &context, &cont, &s).unwrap();
        assert!((got - dense).abs() > 1e-3, "{}: a 30% mask must change the score", s.label());
    }

    // Greedy under Off is the plain greedy decode.
    let got = greedy(&mut model, &mut attr, &context, 6, &[], &Sparsity::Off).unwrap();
    model.reset();
    let mut logits = model.forward(&context, Logits::Last).unwrap();
    let mut want = Vec::new();
    for _ in 0..6 {
        let t = argmax(&logits);
        want.push(t);
        logits = model.forward(&[t], Logits::Last).unwrap();
    }
    assert_eq!(got, want);
    assert!(greedy(&mut model, &mut attr, &[], 3, &[], &Sparsity::Off).is_err());
}
