//! GPU time per kernel of a whole prefill, batch by batch (the KV cache
//! grows, so attention's share does too), and its wall time:
//!
//!     cargo run --release -p sift-engine --example prefill_profile -- MODEL.gguf [TOKENS]

use sift_engine::gpu::{AdapterRequest, GpuContext};
use sift_engine::model::{self, GpuModel, Logits, ModelOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_path, rest @ ..] = args.as_slice() else {
        return Err("usage: prefill_profile MODEL.gguf [TOKENS]".into());
    };
    let n: usize = rest.first().map_or(Ok(512), |r| r.parse())?;
    let loaded = model::load(Path::new(model_path))?;
    let gpu = GpuContext::new(&AdapterRequest { name: None, backend: None, no_subgroups: false })?;
    let mut m = GpuModel::with_options(gpu, &loaded.config, &loaded.weights, n + 1, ModelOptions { packed: true, ..Default::default() })?;
    m.warm_up()?;
    let tokens: Vec<u32> = (0..n as u32).map(|i| 100 + (i * 37) % 5000).collect();
    let mut wall = f64::INFINITY;
    for _ in 0..3 {
        m.reset();
        let t = Instant::now();
        m.forward(&tokens, Logits::Last)?;
        wall = wall.min(t.elapsed().as_secs_f64());
    }
    m.reset();
    let mut total: BTreeMap<&str, f64> = BTreeMap::new();
    for chunk in tokens.chunks(m.max_batch) {
        for (name, s) in m.profile(chunk)?.ok_or("no timestamp queries")? {
            *total.entry(name).or_default() += s;
        }
    }
    let sum: f64 = total.values().sum();
    let mut rows: Vec<_> = total.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("prefill of {n} tokens: {:.2} s wall (best of 3), {:.1} tok/s; GPU time per kernel:", wall, n as f64 / wall);
    for (name, s) in rows {
        println!("{name:<12} {:>9.1} ms {:>6.1}%", s * 1e3, 100.0 * s / sum);
    }
    println!("{:<12} {:>9.1} ms", "total", sum * 1e3);
    Ok(())
}
