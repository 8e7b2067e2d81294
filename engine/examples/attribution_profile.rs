//! GPU time per kernel of one attribution pass (forward keeping activations,
//! backward, scores) beside the plain forward's over the same tokens:
//!
//!     cargo run --release -p sift-engine --example attribution_profile -- MODEL.gguf [TOKENS]

use sift_engine::attribution::{AttributeOptions, Attributor, Target};
use sift_engine::gpu::{AdapterRequest, GpuContext};
use sift_engine::model::{self, GpuModel, Logits, ModelOptions};
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_path, rest @ ..] = args.as_slice() else {
        return Err("usage: attribution_profile MODEL.gguf [TOKENS]".into());
    };
    let n: usize = rest.first().map_or(Ok(64), |r| r.parse())?;
    let loaded = model::load(Path::new(model_path))?;
    let gpu = GpuContext::new(&AdapterRequest { name: None, backend: None, no_subgroups: false })?;
    let mut m = GpuModel::with_options(gpu, &loaded.config, &loaded.weights, n + 1, ModelOptions { packed: true, ..Default::default() })?;
    m.warm_up()?;
    let mut attributor = Attributor::new(&m, &loaded.weights)?;
    let tokens: Vec<u32> = (0..n as u32).map(|i| 100 + (i * 37) % 5000).collect();
    let opts = AttributeOptions::default();
    let (mut fwd, mut attr) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..4 {
        m.reset();
        let t = Instant::now();
        m.forward(&tokens, Logits::Last)?;
        fwd = fwd.min(t.elapsed().as_secs_f64());
        attributor.forget_cached_tokens();
        let t = Instant::now();
        attributor.attribute(&mut m, &tokens, &Target::Next, &opts)?;
        attr = attr.min(t.elapsed().as_secs_f64());
    }
    println!("{n} tokens: forward {:.0} ms, attribution {:.0} ms: {:.2}x (best of 4 each)", fwd * 1e3, attr * 1e3, attr / fwd);
    attributor.set_profiling(true);
    attributor.forget_cached_tokens();
    attributor.attribute(&mut m, &tokens, &Target::Next, &opts)?;
    let mut rows = attributor.last_profile().ok_or("no timestamp queries")?.to_vec();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|(_, s)| s).sum();
    for (role, s) in rows {
        println!("{role:<22} {:>9.1} ms {:>6.1}%", s * 1e3, 100.0 * s / total);
    }
    println!("{:<22} {:>9.1} ms", "total", total * 1e3);
    Ok(())
}
