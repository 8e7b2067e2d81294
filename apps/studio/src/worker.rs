//! The engine runs on its own thread so the window never waits on the GPU:
//! the UI sends commands, the worker answers with events (tokens, masks,
//! statistics, errors) and asks the UI to repaint after each.

use anyhow::{Context, Result};
use sift_engine::attribution::{Attributor, Metric, Scores};
use sift_engine::gpu::{read_buffer_u32, AdapterRequest, GpuContext};
use sift_engine::model::sparse::{self, Ratios, Thresholds};
use sift_engine::model::{self, GpuModel, Logits, UnitBytes};
use sift_engine::sampling::{Sampler, SamplingParams};
use sift_engine::tokenizer::{StreamDecoder, Tokenizer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

/// How generation picks its masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dense,
    Prompt,
    Oracle,
    Threshold,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Dense, Mode::Prompt, Mode::Oracle, Mode::Threshold];

    pub fn label(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Prompt => "prompt",
            Mode::Oracle => "oracle",
            Mode::Threshold => "threshold",
        }
    }
}

/// One generation, as the UI's controls stood when Generate was pressed.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub prompt: String,
    pub chat: bool,
    pub max_tokens: usize,
    pub temperature: f32,
    pub mode: Mode,
    pub metric: Metric,
    pub ar: f64,
    /// Heads masked at the same AR too.
    pub heads: bool,
    /// What prompt mode attributes.
    pub prompt_target: sparse::PromptTarget,
    pub thresholds: Option<PathBuf>,
}

pub enum Command {
    /// None: the default model.
    Load(Option<PathBuf>),
    Generate(Request),
}

#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub adapter: String,
    pub n_layers: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub dim: usize,
    pub head_dim: usize,
    /// Bytes of weights a dense step reads per neuron and per head (packed
    /// 4 or 8 bits where the model is read that way, else f16).
    pub unit_bytes: UnitBytes,
}

/// Active units (1 = active) and, where attribution ran, their scores.
#[derive(Clone, Debug)]
pub struct MaskFrame {
    /// [layers, ffn]
    pub neurons: Vec<u8>,
    /// [layers, heads]
    pub heads: Vec<u8>,
    pub neuron_scores: Option<Vec<f32>>,
    pub head_scores: Option<Vec<f32>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub generated: usize,
    pub tokens_per_second: f64,
    pub mlp_active: f64,
    pub heads_active: f64,
}

pub enum Event {
    Status(String),
    Loaded(ModelInfo),
    Started(Request),
    /// A generated token's id and its text (empty while a UTF-8 character is incomplete).
    Token(u32, String),
    Masks(MaskFrame),
    Stats(Stats),
    Finished(String),
    Error(String),
}

/// The UI's end of the worker.
pub struct Worker {
    commands: Sender<Command>,
    pub events: Receiver<Event>,
    pub stop: Arc<AtomicBool>,
}

impl Worker {
    /// `shared`: the renderer's device, when the engine may use it.
    /// `repaint` is called after every event.
    pub fn spawn(shared: Option<Arc<GpuContext>>, adapter: AdapterRequest, repaint: impl Fn() + Send + 'static) -> Worker {
        let (commands, rx) = channel::<Command>();
        let (tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("sift-engine".into())
            .spawn(move || {
                let send = |e: Event| {
                    let _ = tx.send(e);
                    repaint();
                };
                let mut engine = Engine { shared, adapter, session: None };
                for cmd in rx {
                    let result = match cmd {
                        Command::Load(path) => engine.load(path, &send),
                        Command::Generate(req) => engine.generate(req, &stop2, &send),
                    };
                    if let Err(e) = result {
                        send(Event::Error(format!("{e:#}")));
                    }
                }
            })
            .expect("spawn the engine thread");
        Worker { commands, events, stop }
    }

    pub fn send(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }
}

struct Session {
    model: GpuModel,
    tokenizer: Tokenizer,
    attributor: Attributor,
}

struct Engine {
    shared: Option<Arc<GpuContext>>,
    adapter: AdapterRequest,
    session: Option<Session>,
}

impl Engine {
    fn load(&mut self, path: Option<PathBuf>, send: &dyn Fn(Event)) -> Result<()> {
        self.session = None;
        let path = match path {
            Some(p) => p,
            None => {
                send(Event::Status("fetching the default model (once)".into()));
                sift_engine::default_model::path()?
            }
        };
        send(Event::Status(format!("loading {}", path.display())));
        let loaded = model::load(&path)?;
        let ctx = match &self.shared {
            Some(c) => c.clone(),
            None => GpuContext::new(&self.adapter)?,
        };
        let c = loaded.config.clone();
        let mut model = GpuModel::new(ctx, &c, &loaded.weights, c.context_length.min(1024))?;
        model.enable_sparse(&loaded.weights)?;
        let attributor = Attributor::new(&model, &loaded.weights)?;
        drop(loaded.weights);
        send(Event::Status("compiling kernels".into()));
        model.warm_up()?;
        let info = ModelInfo {
            name: path.file_name().unwrap_or_default().to_string_lossy().into(),
            adapter: model.ctx.describe(),
            n_layers: c.n_layers,
            ffn_dim: c.ffn_dim,
            n_heads: c.n_heads,
            dim: c.dim,
            head_dim: c.head_dim,
            unit_bytes: model.unit_read_bytes(),
        };
        self.session = Some(Session { model, tokenizer: loaded.tokenizer, attributor });
        send(Event::Loaded(info));
        Ok(())
    }

    fn generate(&mut self, req: Request, stop: &AtomicBool, send: &dyn Fn(Event)) -> Result<()> {
        let s = self.session.as_mut().context("no model is loaded")?;
        let ratios = if req.heads { Ratios::both(req.ar) } else { Ratios::mlp(req.ar) };
        ratios.check()?;
        let text = if req.chat { s.tokenizer.chat_prompt(&req.prompt)? } else { req.prompt.clone() };
        let mut tokens = s.tokenizer.encode(&text)?;
        if tokens.is_empty() {
            anyhow::bail!("the prompt is empty");
        }
        let max = s.attributor.max_tokens(&s.model).min(s.model.max_ctx);
        if tokens.len() + 1 > max {
            anyhow::bail!("the prompt has {} tokens; at most {} fit", tokens.len(), max - 1);
        }
        send(Event::Started(req.clone()));
        s.model.disable_sparsity();
        s.model.reset();
        let mut scores: Option<Scores> = None;
        match req.mode {
            Mode::Prompt => scores = Some(sparse::set_prompt_mask(&mut s.model, &mut s.attributor, &tokens, req.metric, ratios, req.prompt_target)?),
            Mode::Threshold => {
                let path = req.thresholds.as_ref().context("threshold mode needs a thresholds file (from `sift calibrate`)")?;
                s.model.set_threshold_mask(&Thresholds::load(path)?)?;
            }
            Mode::Dense | Mode::Oracle => {}
        }
        s.model.reset();
        let mut logits = s.model.forward(&tokens, Logits::Last)?;
        if req.mode == Mode::Prompt {
            send(Event::Masks(read_masks(&s.model, scores.as_ref(), req.metric)?));
        }
        let mut sampler = Sampler::new(SamplingParams { temperature: req.temperature, top_k: 40, top_p: 0.95, seed: 0 });
        let mut stream = StreamDecoder::default();
        let t = Instant::now();
        let mut generated = 0;
        let reason = loop {
            if stop.load(Ordering::SeqCst) {
                break "stopped";
            }
            if generated >= req.max_tokens {
                break "length";
            }
            if tokens.len() >= max {
                break "context full";
            }
            let next = sampler.sample(&logits);
            if s.tokenizer.stop_ids.contains(&next) {
                break "end of text";
            }
            send(Event::Token(next, stream.push(&s.tokenizer, next)?));
            tokens.push(next);
            generated += 1;
            logits = match req.mode {
                Mode::Oracle => {
                    let (l, sc) = sparse::oracle_step(&mut s.model, &mut s.attributor, &tokens, req.metric, ratios)?;
                    send(Event::Masks(read_masks(&s.model, Some(&sc), req.metric)?));
                    l
                }
                _ => s.model.forward(&[next], Logits::Last)?,
            };
            if req.mode == Mode::Threshold {
                send(Event::Masks(read_masks(&s.model, None, req.metric)?));
            }
            let (mlp_active, heads_active) = s.model.active_fractions()?;
            send(Event::Stats(Stats { generated, tokens_per_second: generated as f64 / t.elapsed().as_secs_f64(), mlp_active, heads_active }));
        };
        send(Event::Finished(reason.into()));
        Ok(())
    }
}

/// The model's current masks (all active where dense) and the scores they came from.
fn read_masks(model: &GpuModel, scores: Option<&Scores>, metric: Metric) -> Result<MaskFrame> {
    let c = &model.config;
    let bits = |buf: Option<&eframe::wgpu::Buffer>, n: usize| -> Result<Vec<u8>> {
        Ok(match buf {
            Some(b) => read_buffer_u32(&model.ctx, b, 0, n)?.into_iter().map(|v| v as u8).collect(),
            None => vec![1; n],
        })
    };
    Ok(MaskFrame {
        neurons: bits(model.mlp_mask_bitmap(), c.n_layers * c.ffn_dim)?,
        heads: bits(model.head_mask_bitmap(), c.n_layers * c.n_heads)?,
        neuron_scores: scores.map(|s| s.read_neurons(&model.ctx, metric)).transpose()?.map(|v| v.concat()),
        head_scores: scores.map(|s| s.read_heads(&model.ctx, metric)).transpose()?.map(|v| v.concat()),
    })
}
