//! Attribution against an independent implementation: PyTorch autograd on the
//! default model as Hugging Face transformers loads its GGUF
//! (`fixtures/make_attribution_reference.py`). For three prompts, Sift's
//! neuron and head scores under magnitude, GxO and corrected GxO must rank
//! every layer's units as PyTorch's do: Spearman >= 0.999 per layer, and the
//! top 20% of each layer the same units (>= 99% shared).

use sift_e2e::{fixtures_dir, real_model};
use sift_engine::attribution::{Metric, Positions, Target};

const METRICS: [Metric; 3] = [Metric::Magnitude, Metric::Gxo, Metric::CorrectedGxo];

/// Ranks from 1, ties given their mean rank.
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        for k in i..=j {
            r[order[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() as f64 + 1.0) / 2.0;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        num += (x - mean) * (y - mean);
        da += (x - mean).powi(2);
        db += (y - mean).powi(2);
    }
    num / (da * db).sqrt()
}

/// The share of `a`'s top `share` units that are among `b`'s.
fn top_overlap(a: &[f32], b: &[f32], share: f64) -> f64 {
    let k = ((a.len() as f64 * share).ceil() as usize).max(1);
    let top = |v: &[f32]| {
        let mut ids: Vec<usize> = (0..v.len()).collect();
        ids.sort_by(|&x, &y| v[y].total_cmp(&v[x]).then(x.cmp(&y)));
        ids.truncate(k);
        ids
    };
    let tb = top(b);
    top(a).iter().filter(|i| tb.contains(i)).count() as f64 / k as f64
}

#[test]
fn scores_rank_units_as_pytorch_autograd_does() {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("smollm2_attribution.json")).unwrap()).unwrap();
    let bytes = std::fs::read(fixtures_dir().join("smollm2_attribution.f32")).unwrap();
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let mut guard = real_model().lock().unwrap();
    let rm = &mut *guard;
    let c = rm.model.config.clone();
    let (l, f, h) = (c.n_layers, c.ffn_dim, c.n_heads);
    assert_eq!((meta["layers"].as_u64(), meta["ffn"].as_u64(), meta["heads"].as_u64()), (Some(l as u64), Some(f as u64), Some(h as u64)));
    let per_prompt = METRICS.len() * l * (f + h);
    let prompts = meta["prompts"].as_array().unwrap();
    assert_eq!(values.len(), prompts.len() * per_prompt, "fixture size");
    // The least Spearman and overlap seen, for neurons and heads.
    let mut worst = [(1.0f64, 1.0f64); 2];
    for (p, entry) in prompts.iter().enumerate() {
        let text = entry["prompt"].as_str().unwrap();
        let tokens: Vec<u32> = entry["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(rm.tokenizer.encode(text).unwrap(), tokens, "{text:?}: transformers' tokens");
        let base = p * per_prompt;
        for (m, &metric) in METRICS.iter().enumerate() {
            let opts = rm.attributor.options_for(metric, Positions::Last);
            let scores = rm.attributor.attribute(&mut rm.model, &tokens, &Target::Next, &opts).unwrap();
            assert_eq!(scores.target_token, entry["target"].as_u64().map(|t| t as u32), "{text:?}: the greedy next token");
            let f_torch = entry["log_prob"].as_f64().unwrap();
            assert!((scores.log_prob as f64 - f_torch).abs() < 2e-3, "{text:?}: F {} against {f_torch}", scores.log_prob);
            let sift = [scores.read_neurons(&rm.model.ctx, metric).unwrap(), scores.read_heads(&rm.model.ctx, metric).unwrap()];
            for (kind, (width, offset)) in [(f, base + m * l * f), (h, base + METRICS.len() * l * f + m * l * h)].into_iter().enumerate() {
                for layer in 0..l {
                    let torch = &values[offset + layer * width..][..width];
                    let ours = &sift[kind][layer];
                    let what = format!("{text:?} {metric} {} layer {layer}", ["neurons", "heads"][kind]);
                    let rho = spearman(ours, torch);
                    assert!(rho >= 0.999, "{what}: Spearman {rho}");
                    let overlap = top_overlap(ours, torch, 0.2);
                    assert!(overlap >= 0.99, "{what}: top 20% overlap {overlap}");
                    worst[kind] = (worst[kind].0.min(rho), worst[kind].1.min(overlap));
                }
            }
        }
    }
    println!("least Spearman and top-20% overlap: neurons {:?}, heads {:?}", worst[0], worst[1]);
}

#[test]
fn spearman_and_overlap_by_hand() {
    assert_eq!(ranks(&[3.0, 1.0, 2.0, 2.0]), vec![4.0, 1.0, 2.5, 2.5]);
    assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    assert_eq!(top_overlap(&[5.0, 4.0, 0.0, 0.0, 0.0], &[4.0, 5.0, 0.0, 0.0, 0.0], 0.4), 1.0);
    assert_eq!(top_overlap(&[5.0, 4.0, 0.0, 0.0, 0.0], &[0.0, 5.0, 4.0, 0.0, 0.0], 0.4), 0.5);
}
