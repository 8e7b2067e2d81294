//! `sift-studio --bench`: headless, no window or display. Prefill and decode
//! tokens/s dense, and sparse (prompt mode) at AR 1.0 … 0.1 each beside a
//! dense run, per-kernel GPU time where the adapter has timestamp queries,
//! and the GPU memory Sift allocated. Respects the adapter's limits, so it
//! runs on integrated GPUs and lavapipe.

use anyhow::Result;
use serde_json::json;
use sift_engine::attribution::Attributor;
use sift_engine::bench::{print_profile, print_sweep, sparse_sweep, timed_decode, SWEEP_RATIOS};
use sift_engine::gpu::{AdapterRequest, GpuContext};
use sift_engine::model::{self, GpuModel, Logits};
use std::path::PathBuf;
use std::time::Instant;

pub struct Options {
    pub model: Option<PathBuf>,
    pub adapter: AdapterRequest,
    pub json: bool,
    pub decode_tokens: usize,
}

const PROMPT: &str = "The history of the city begins with a small settlement on the river, where traders from the north and the south met to exchange grain, salt and cloth.";

pub fn run(o: &Options) -> Result<()> {
    let path = match &o.model {
        Some(p) => p.clone(),
        None => sift_engine::default_model::path()?,
    };
    let ctx = GpuContext::new(&o.adapter)?;
    eprintln!("sift-studio bench: {} on {}", path.display(), ctx.describe());
    let loaded = model::load(&path)?;
    let c = loaded.config.clone();
    let mut m = GpuModel::new(ctx.clone(), &c, &loaded.weights, 256.min(c.context_length))?;
    m.enable_sparse(&loaded.weights)?;
    let mut attributor = Attributor::new(&m, &loaded.weights)?;
    drop(loaded.weights);
    m.warm_up()?;
    let mut prompt = loaded.tokenizer.encode(PROMPT)?;
    prompt.truncate(32);
    if prompt.len() < 3 {
        anyhow::bail!("the bench prompt encodes to fewer than 3 tokens with this tokenizer");
    }

    m.reset();
    let t = Instant::now();
    m.forward(&prompt, Logits::Last)?;
    let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
    m.reset();
    m.forward(&prompt[..prompt.len() - 1], Logits::Last)?;
    let (decode, decode_profile) = timed_decode(&mut m, &prompt, o.decode_tokens)?;
    let rows = sparse_sweep(&mut m, &mut attributor, &prompt, o.decode_tokens, &SWEEP_RATIOS, |i| eprintln!("  AR {} done", SWEEP_RATIOS[i - 1]))?;
    let memory = ctx.allocated_bytes();
    let info = &ctx.info;
    let report = json!({
        "adapter": {
            "name": info.name, "backend": format!("{:?}", info.backend), "device_type": format!("{:?}", info.device_type),
            "driver": info.driver, "software": ctx.is_software(),
            "timestamp_queries": ctx.features.contains(sift_engine::wgpu::Features::TIMESTAMP_QUERY),
            "max_storage_binding_mib": ctx.max_binding_bytes() >> 20,
        },
        "model": path.display().to_string(),
        "prompt_tokens": prompt.len(),
        "decode_tokens": o.decode_tokens,
        "dense": { "prefill_tokens_per_second": prefill, "decode_tokens_per_second": decode, "decode_kernel_seconds": decode_profile },
        "sparse": rows,
        "peak_gpu_memory_bytes": memory,
    });
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("adapter: {}", ctx.describe());
    println!("dense: prefill {prefill:.1} tokens/s ({} tokens), decode {decode:.1} tokens/s ({} steps)", prompt.len(), o.decode_tokens);
    print_sweep(&rows);
    match &decode_profile {
        Some(p) => print_profile(p, None),
        None => println!("(no per-kernel times: this adapter has no timestamp queries)"),
    }
    println!("\nGPU memory allocated by Sift: {:.0} MiB", memory as f64 / (1u64 << 20) as f64);
    Ok(())
}
