//! Sift Studio's window: controls on the left, the generated text and the
//! per-layer mask view in the middle, live statistics on the right. All
//! engine work happens on the worker thread; this only draws and sends.

use crate::compare::{Comparison, DenseReference};
use crate::masks::{MaskView, View};
use crate::worker::{Command, Event, Mode, ModelInfo, Request, Stats, Worker};
use eframe::egui;
use sift_engine::attribution::Metric;
use sift_engine::model::sparse::PromptTarget;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

const METRICS: [Metric; 6] = [Metric::Magnitude, Metric::Gxo, Metric::Snip, Metric::Fisher, Metric::IntegratedGradients, Metric::CorrectedGxo];

pub struct StudioApp {
    worker: Worker,
    pub model_path: String,
    /// The controls; Generate sends a copy (with the thresholds path below).
    pub controls: Request,
    pub thresholds_path: String,
    pub view: View,
    pub info: Option<ModelInfo>,
    pub output: String,
    pub status: String,
    pub error: Option<String>,
    pub generating: bool,
    pub loading: bool,
    /// The request of the last Generate press.
    pub last_request: Option<Request>,
    pub stats: Stats,
    pub history: Vec<f64>,
    /// Decode tokens/s of the last finished dense generation, what sparse
    /// ones are compared with.
    pub dense_tokens_per_second: Option<f64>,
    /// Generate as soon as the model has loaded (`--generate`).
    pub autostart: bool,
    /// Sparse generations run beside a dense one of the same prompt (made
    /// first when there is none yet) and show where they part.
    pub compare: bool,
    /// The current generation's tokens (id, text).
    pub tokens: Vec<(u32, String)>,
    /// The last finished dense generation, what sparse ones are compared with.
    pub dense_reference: Option<DenseReference>,
    /// A sparse request waiting for the dense generation it is compared with.
    pending: Option<Request>,
    masks: MaskView,
}

impl StudioApp {
    /// `model`: what to load first (None: the default model).
    pub fn new(worker: Worker, model: Option<PathBuf>) -> StudioApp {
        let mut app = StudioApp {
            worker,
            model_path: model.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            controls: Request {
                prompt: "Once upon a time".into(),
                chat: false,
                max_tokens: 64,
                temperature: 0.0,
                mode: Mode::Prompt,
                metric: Metric::CorrectedGxo,
                ar: 0.3,
                heads: false,
                prompt_target: PromptTarget::Next,
                thresholds: None,
            },
            thresholds_path: String::new(),
            view: View::Mask,
            info: None,
            output: String::new(),
            status: String::new(),
            error: None,
            generating: false,
            loading: false,
            last_request: None,
            stats: Stats::default(),
            history: Vec::new(),
            dense_tokens_per_second: None,
            autostart: false,
            compare: true,
            tokens: Vec::new(),
            dense_reference: None,
            pending: None,
            masks: MaskView::default(),
        };
        app.load(model);
        app
    }

    fn load(&mut self, path: Option<PathBuf>) {
        self.loading = true;
        self.info = None;
        self.error = None;
        self.masks.clear();
        self.worker.send(Command::Load(path));
    }

    /// Sends a generation with the controls as they stand.
    pub fn generate(&mut self) {
        let path = self.thresholds_path.trim();
        let req = Request { thresholds: (!path.is_empty()).then(|| PathBuf::from(path)), ..self.controls.clone() };
        let has_reference = self.dense_reference.as_ref().is_some_and(|d| d.matches(&req));
        if self.compare && req.mode != Mode::Dense && !has_reference {
            // The dense generation of the same prompt first, then this one.
            self.pending = Some(req.clone());
            self.send_generation(Request { mode: Mode::Dense, ..req });
        } else {
            self.pending = None;
            self.send_generation(req);
        }
    }

    fn send_generation(&mut self, req: Request) {
        self.last_request = Some(req.clone());
        self.tokens.clear();
        // The prompt as the model continues it (a chat template is not shown).
        self.output = if self.controls.chat { String::new() } else { self.controls.prompt.clone() };
        self.history.clear();
        self.stats = Stats::default();
        self.error = None;
        self.generating = true;
        // Cleared here, not on the worker: a Stop pressed before the worker
        // picks the request up must still stop it.
        self.worker.stop.store(false, Ordering::SeqCst);
        self.worker.send(Command::Generate(req));
    }

    pub fn stop(&self) {
        self.worker.stop.store(true, Ordering::SeqCst);
    }

    /// Takes in what the worker sent since the last frame.
    pub fn poll(&mut self, ctx: &egui::Context) {
        while let Ok(event) = self.worker.events.try_recv() {
            match event {
                Event::Status(s) => self.status = s,
                Event::Loaded(info) => {
                    self.status = format!("{} loaded", info.name);
                    self.info = Some(info);
                    self.loading = false;
                    if std::mem::take(&mut self.autostart) {
                        self.generate();
                    }
                }
                Event::Started(req) => {
                    self.status = format!("generating ({}, AR {:.2})", req.mode.label(), req.ar);
                    if req.mode == Mode::Dense {
                        self.masks.clear();
                    }
                }
                Event::Token(id, t) => {
                    self.output.push_str(&t);
                    self.tokens.push((id, t));
                }
                Event::Masks(frame) => {
                    if let Some(info) = &self.info {
                        self.masks.set(ctx, frame, info, self.view);
                    }
                }
                Event::Stats(s) => {
                    self.stats = s;
                    self.history.push(s.tokens_per_second);
                }
                Event::Finished(reason) => {
                    self.generating = false;
                    let dense = self.last_request.clone().filter(|r| r.mode == Mode::Dense);
                    if dense.is_some() && self.stats.generated > 1 {
                        self.dense_tokens_per_second = Some(self.stats.tokens_per_second);
                    }
                    self.status = format!("finished: {reason}, {} tokens at {:.1} tokens/s", self.stats.generated, self.stats.tokens_per_second);
                    if let Some(d) = dense {
                        self.dense_reference = Some(DenseReference::new(&d, self.tokens.clone()));
                    }
                    // A stopped dense run does not start the sparse one waiting for it.
                    if let Some(next) = self.pending.take().filter(|_| reason != "stopped") {
                        self.send_generation(next);
                    }
                }
                Event::Error(e) => {
                    self.generating = false;
                    self.pending = None;
                    self.loading = false;
                    self.status = "error".into();
                    self.error = Some(e);
                }
            }
        }
    }

    /// The whole window (also what the UI tests drive).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        egui::Panel::top("top").show(ui, |ui| self.top_bar(ui));
        egui::Panel::left("controls").resizable(false).exact_size(260.0).show(ui, |ui| self.controls_panel(ui));
        egui::Panel::right("stats").resizable(false).exact_size(230.0).show(ui, |ui| self.statistics(ui));
        egui::CentralPanel::default().show(ui, |ui| self.center(ui));
        if self.generating || self.loading {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Sift Studio");
            ui.separator();
            let label = ui.label("model");
            ui.add(egui::TextEdit::singleline(&mut self.model_path).hint_text("default: SmolLM2-135M-Instruct (GGUF file or HF directory)").desired_width(340.0)).labelled_by(label.id);
            let idle = !self.generating && !self.loading;
            if ui.add_enabled(idle, egui::Button::new("Load")).clicked() {
                let p = self.model_path.trim();
                self.load((!p.is_empty()).then(|| PathBuf::from(p)));
            }
            if ui.add_enabled(idle, egui::Button::new("Default model")).clicked() {
                self.model_path.clear();
                self.load(None);
            }
            ui.separator();
            match &self.info {
                Some(i) => ui.label(format!("{} on {}", i.name, i.adapter)),
                None => ui.label(if self.loading { "loading…" } else { "no model" }),
            };
        });
    }

    fn controls_panel(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Prompt");
        ui.add(egui::TextEdit::multiline(&mut self.controls.prompt).desired_rows(4).desired_width(f32::INFINITY)).labelled_by(label.id);
        ui.checkbox(&mut self.controls.chat, "chat format (instruct models)");
        ui.horizontal(|ui| {
            let label = ui.label("tokens");
            ui.add(egui::DragValue::new(&mut self.controls.max_tokens).range(1..=1000)).labelled_by(label.id);
            let label = ui.label("temp");
            ui.add(egui::DragValue::new(&mut self.controls.temperature).range(0.0..=2.0).speed(0.05)).labelled_by(label.id);
        });
        ui.separator();
        ui.label("Sparse activation");
        egui::ComboBox::from_label("mode").selected_text(self.controls.mode.label()).show_ui(ui, |ui| {
            for m in Mode::ALL {
                ui.selectable_value(&mut self.controls.mode, m, m.label());
            }
        });
        egui::ComboBox::from_label("metric").selected_text(self.controls.metric.name()).show_ui(ui, |ui| {
            for m in METRICS {
                ui.selectable_value(&mut self.controls.metric, m, m.name());
            }
        });
        ui.add(egui::Slider::new(&mut self.controls.ar, 0.05..=1.0).text("activation ratio").fixed_decimals(2));
        ui.checkbox(&mut self.controls.heads, "mask attention heads too");
        ui.checkbox(&mut self.compare, "compare with dense").on_hover_text("sparse generations run beside a dense generation of the same prompt (made first when there is none) and mark the first token where they part");
        // Always shown (disabled outside prompt mode), so the layout does not jump.
        let target = &mut self.controls.prompt_target;
        ui.add_enabled_ui(self.controls.mode == Mode::Prompt, |ui| {
            egui::ComboBox::from_label("prompt target")
                .selected_text(prompt_target_label(*target))
                .show_ui(ui, |ui| {
                    for t in PromptTarget::ALL {
                        ui.selectable_value(target, t, prompt_target_label(t)).on_hover_text(prompt_target_help(t));
                    }
                })
                .response
                .on_hover_text(prompt_target_help(*target));
        });
        if self.controls.mode == Mode::Threshold {
            let label = ui.label("thresholds file");
            ui.add(egui::TextEdit::singleline(&mut self.thresholds_path).hint_text("from `sift calibrate`")).labelled_by(label.id);
        }
        ui.label(egui::RichText::new(mode_help(self.controls.mode)).small().weak());
        ui.separator();
        ui.horizontal(|ui| {
            let can_generate = self.info.is_some() && !self.generating && !self.loading;
            if ui.add_enabled(can_generate, egui::Button::new("Generate")).clicked() {
                self.generate();
            }
            if ui.add_enabled(self.generating, egui::Button::new("Stop")).clicked() {
                self.stop();
            }
        });
        ui.label(egui::RichText::new(&self.status).small());
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::from_rgb(255, 110, 100), format!("Error: {e}"));
        }
    }

    fn statistics(&mut self, ui: &mut egui::Ui) {
        ui.heading("Live");
        let s = self.stats;
        ui.label(format!("tokens/s: {:.1}", s.tokens_per_second));
        let sparse = self.last_request.as_ref().is_some_and(|r| r.mode != Mode::Dense);
        match self.dense_tokens_per_second {
            Some(dense) if sparse && s.generated > 0 => {
                ui.label(format!("vs dense: {:.2}x", s.tokens_per_second / dense))
                    .on_hover_text(format!("against the last dense generation's {dense:.1} tokens/s (its prompt and length may differ)"));
            }
            None if sparse => {
                ui.weak("vs dense: generate once in dense mode to compare");
            }
            _ => {}
        }
        ui.label(format!("generated: {}", s.generated));
        if let Some(c) = self.comparison() {
            ui.label(format!("agrees with dense: {}/{} tokens", c.agreeing(), c.compared()))
                .on_hover_text("tokens equal to the dense generation's at the same position");
            ui.label(match c.first_divergence() {
                Some(i) => format!("first divergence: token {}", i + 1),
                None => "first divergence: none so far".to_string(),
            });
        }
        // Until a token is decoded there is no mask to report (and nothing saved).
        let decoded = s.generated > 0;
        let shown = |v: String| if decoded { v } else { "–".to_string() };
        ui.label(format!("MLP neurons active: {}", shown(format!("{:.0}%", s.mlp_active * 100.0))));
        ui.label(format!("heads active: {}", shown(format!("{:.0}%", s.heads_active * 100.0))));
        if let Some(i) = &self.info {
            let (flops, bytes) = savings(i, s);
            ui.label(format!("saved per token: {}", shown(format!("{:.1} MFLOP", flops / 1e6))));
            ui.label(format!("weights not read: {}", shown(indicatif::HumanBytes(bytes as u64).to_string())))
                .on_hover_text("per token: the masked units' weights, in the bytes a dense step reads for them (packed 4 or 8 bits where the model is read that way, else f16)");
        }
        ui.separator();
        ui.label("tokens/s");
        sparkline(ui, &self.history);
    }

    fn center(&mut self, ui: &mut egui::Ui) {
        let Some(info) = self.info.clone() else {
            ui.centered_and_justified(|ui| ui.label(if self.loading { "loading the model…" } else { "load a model to begin" }));
            return;
        };
        let text_h = (ui.available_height() * 0.35).max(80.0);
        match self.comparison() {
            Some(c) => {
                let prefix = self.output_prefix();
                let sparse_title = self.last_request.as_ref().map(describe).unwrap_or_default();
                ui.columns(2, |cols| {
                    for (i, (col, (title, job))) in cols.iter_mut().zip([("dense".to_string(), c.dense_text(&prefix)), (sparse_title, c.sparse_text(&prefix))]).enumerate() {
                        col.label(egui::RichText::new(title).strong());
                        egui::ScrollArea::vertical().id_salt(("compared text", i)).max_height(text_h).stick_to_bottom(true).show(col, |ui| {
                            ui.add(egui::Label::new(job).wrap());
                        });
                    }
                });
            }
            None => {
                egui::ScrollArea::vertical().max_height(text_h).stick_to_bottom(true).show(ui, |ui| {
                    ui.add(egui::Label::new(egui::RichText::new(if self.output.is_empty() { "…" } else { &self.output }).monospace()).wrap());
                });
            }
        }
        ui.separator();
        ui.horizontal(|ui| {
            ui.label(format!("activation masks: {} layers × {} neurons | {} heads", info.n_layers, info.ffn_dim, info.n_heads));
            let before = self.view;
            ui.selectable_value(&mut self.view, View::Mask, "mask");
            ui.add_enabled_ui(self.masks.has_scores(), |ui| ui.selectable_value(&mut self.view, View::Scores, "scores"));
            if before != self.view {
                self.masks.refresh(ui.ctx(), &info, self.view);
            }
        });
        self.masks.ui(ui, &info);
    }
}

impl StudioApp {
    /// The current sparse generation against its dense reference, when there is one.
    pub fn comparison(&self) -> Option<Comparison<'_>> {
        let req = self.last_request.as_ref().filter(|r| r.mode != Mode::Dense)?;
        let dense = self.dense_reference.as_ref().filter(|d| d.matches(req))?;
        Some(Comparison { dense: &dense.tokens, sparse: &self.tokens })
    }

    /// The prompt as shown before generated text (none for chat prompts).
    fn output_prefix(&self) -> String {
        match &self.last_request {
            Some(r) if !r.chat => r.prompt.clone(),
            _ => String::new(),
        }
    }
}

/// "prompt, corrected-gxo, AR 0.30 (+heads)" for a column title.
fn describe(r: &Request) -> String {
    let heads = if r.heads { " +heads" } else { "" };
    match r.mode {
        Mode::Dense => "dense".into(),
        Mode::Threshold => "sparse: threshold rule".into(),
        m => format!("sparse: {}, {}, AR {:.2}{heads}", m.label(), r.metric.name(), r.ar),
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        StudioApp::ui(self, ui);
    }
}

fn mode_help(mode: Mode) -> &'static str {
    match mode {
        Mode::Dense => "every neuron and head runs",
        Mode::Prompt => "attribution over the prompt once; the mask stays fixed while decoding (fast)",
        Mode::Oracle => "a dense forward and backward before every token picks its mask (slower than dense; the paper's protocol)",
        Mode::Threshold => "per-token rule from a calibration file: neurons below the layer's threshold are skipped",
    }
}

fn prompt_target_label(t: PromptTarget) -> &'static str {
    match t {
        PromptTarget::Next => "next token",
        PromptTarget::Tokens => "prompt tokens",
    }
}

fn prompt_target_help(t: PromptTarget) -> &'static str {
    match t {
        PromptTarget::Next => "keep the units that the model's first reply token uses (scored at the last prompt token)",
        PromptTarget::Tokens => "keep the units that predicting the prompt's own tokens uses (scores summed over the prompt)",
    }
}

/// FLOPs (2 per weight) and bytes of weights one decode step skips, the
/// bytes as the dense step reads them (packed or f16).
fn savings(i: &ModelInfo, s: Stats) -> (f64, f64) {
    let (neurons, heads) = (i.ffn_dim as f64 * (1.0 - s.mlp_active), i.n_heads as f64 * (1.0 - s.heads_active));
    let weights = neurons * (3 * i.dim) as f64 + heads * (2 * i.dim * i.head_dim) as f64;
    let bytes = neurons * i.unit_bytes.neuron + heads * i.unit_bytes.head;
    let layers = i.n_layers as f64;
    (2.0 * weights * layers, bytes * layers)
}

/// A small line chart of the tokens/s history.
fn sparkline(ui: &mut egui::Ui, values: &[f64]) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(ui.available_width(), 70.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    if values.len() < 2 {
        return;
    }
    let max = values.iter().cloned().fold(1e-9, f64::max);
    let points: Vec<egui::Pos2> = values
        .iter()
        .enumerate()
        .map(|(k, v)| egui::pos2(rect.left() + rect.width() * k as f32 / (values.len() - 1) as f32, rect.bottom() - rect.height() * (v / max) as f32 * 0.9))
        .collect();
    painter.add(egui::Shape::line(points, egui::Stroke::new(1.5, egui::Color32::from_rgb(255, 176, 46))));
    painter.text(rect.left_top() + egui::vec2(4.0, 2.0), egui::Align2::LEFT_TOP, format!("max {max:.1}"), egui::FontId::proportional(10.0), ui.visuals().weak_text_color());
}
