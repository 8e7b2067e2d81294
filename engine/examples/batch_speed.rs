//! Wall time of a forward over n = 1..8 new tokens after 16 of context (best
//! of 15 rounds each): where the matmul (a tile of 8 tokens) overtakes the
//! matvec, which sets `kernels::linear::MATVEC_MAX_TOKENS`.
//!
//!     cargo run --release -p sift-engine --example batch_speed -- MODEL.gguf

use sift_engine::gpu::{AdapterRequest, GpuContext};
use sift_engine::model::{self, GpuModel, Logits, ModelOptions};
use std::path::Path;
use std::time::Instant;
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: batch_speed MODEL.gguf")?;
    let loaded = model::load(Path::new(path))?;
    let gpu = GpuContext::new(&AdapterRequest { name: None, backend: None, no_subgroups: false })?;
    let mut m = GpuModel::with_options(gpu, &loaded.config, &loaded.weights, 64, ModelOptions { packed: true, ..Default::default() })?;
    m.warm_up()?;
    let tokens: Vec<u32> = (0..40u32).map(|i| 100 + (i * 37) % 5000).collect();
    let mut best = [f64::INFINITY; 9];
    for _ in 0..15 {
        for n in 1..=8usize {
            m.reset();
            m.forward(&tokens[..16], Logits::Last)?;
            let t = Instant::now();
            m.forward(&tokens[16..16 + n], Logits::Last)?;
            best[n] = best[n].min(t.elapsed().as_secs_f64());
        }
    }
    for (n, s) in best.iter().enumerate().skip(1) {
        println!("n={n} {:.1} ms, {:.1} ms/token", s * 1e3, s * 1e3 / n as f64);
    }
    Ok(())
}
