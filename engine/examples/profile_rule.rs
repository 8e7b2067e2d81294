//! GPU time per kernel of one decode step, dense and under a thresholds
//! file's per-token rule, alternating (the least of each over the rounds,
//! since shared machines are noisy):
//!
//!     cargo run --release -p sift-engine --example profile_rule -- MODEL.gguf RULE.json [ROUNDS]
//!
//! `SIFT_TWO_DISPATCH_MLP=1` turns the one-dispatch MLPs off (the gate
//! rules then run the gather kernels), for A/B comparisons.

use sift_engine::gpu::{AdapterRequest, GpuContext};
use sift_engine::model::sparse::Thresholds;
use sift_engine::model::{self, GpuModel, Logits, ModelOptions};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_path, rule_path, rest @ ..] = args.as_slice() else {
        return Err("usage: profile_rule MODEL.gguf RULE.json [ROUNDS]".into());
    };
    let rounds: usize = rest.first().map_or(Ok(15), |r| r.parse())?;
    let loaded = model::load(Path::new(model_path))?;
    let gpu = GpuContext::new(&AdapterRequest { name: None, backend: None, no_subgroups: false })?;
    let mut m = GpuModel::with_options(gpu, &loaded.config, &loaded.weights, 256, ModelOptions { packed: true, ..Default::default() })?;
    m.warm_up()?;
    m.enable_sparse(&loaded.weights)?;
    let rule = Thresholds::load(Path::new(rule_path))?;
    // A decode step after 16 tokens of context.
    let tokens: Vec<u32> = (0..17).map(|i| 100 + i * 7).collect();
    let mut least: [Option<Vec<(&'static str, f64)>>; 2] = [None, None];
    let mut fused = 0;
    for round in 0..2 * rounds {
        let sparse = round % 2;
        if sparse == 1 {
            m.set_threshold_mask(&rule)?;
            fused = m.gate_rule_fused_layers();
        } else {
            m.disable_sparsity();
        }
        m.reset();
        m.forward(&tokens[..16], Logits::Last)?;
        let step = m.profile(&tokens[16..])?.ok_or("this adapter has no timestamp queries")?;
        let total = |p: &[(&str, f64)]| p.iter().map(|(_, s)| s).sum::<f64>();
        if least[sparse].as_ref().is_none_or(|l| total(l) > total(&step)) {
            least[sparse] = Some(step);
        }
    }
    for (name, step) in ["dense", "rule"].iter().zip(&least) {
        let step = step.as_ref().expect("measured");
        let kernels: Vec<String> = step.iter().filter(|(_, s)| *s > 1e-4).map(|(k, s)| format!("{k} {:.2}", s * 1e3)).collect();
        println!("{name}: {:.2} ms | {}", step.iter().map(|(_, s)| s).sum::<f64>() * 1e3, kernels.join(", "));
    }
    if rule.rule == sift_engine::model::sparse::Rule::Cats {
        println!("gate rule layers in one dispatch: {fused} of {}", loaded.config.n_layers);
    }
    Ok(())
}
