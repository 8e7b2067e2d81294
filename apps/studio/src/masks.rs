//! The per-layer mask view: one row per layer, one cell per MLP neuron, and a
//! band of cells for the attention heads; drawn as two textures (a window is
//! narrower than 1536 neurons) and updated with every mask the engine sends.
//! Hovering a cell names its layer, unit and score.

use crate::worker::{MaskFrame, ModelInfo};
use eframe::egui::{self, Color32, ColorImage, TextureHandle, TextureOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Mask,
    Scores,
}

#[derive(Default)]
pub struct MaskView {
    neurons: Option<TextureHandle>,
    heads: Option<TextureHandle>,
    frame: Option<MaskFrame>,
}

const ACTIVE: Color32 = Color32::from_rgb(255, 176, 46);
const INACTIVE: Color32 = Color32::from_rgb(28, 30, 38);

/// Dark blue → amber → white over [0, 1].
fn heat(t: f32) -> Color32 {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: u8, b: u8, u: f32| (a as f32 + (b as f32 - a as f32) * u) as u8;
    if t < 0.5 {
        let u = t * 2.0;
        Color32::from_rgb(lerp(20, 200, u), lerp(24, 90, u), lerp(60, 40, u))
    } else {
        let u = (t - 0.5) * 2.0;
        Color32::from_rgb(lerp(200, 255, u), lerp(90, 240, u), lerp(40, 200, u))
    }
}

/// Cells of a [rows, width] grid: the mask, or scores scaled per row by their
/// largest magnitude (square root, so small scores stay visible).
fn image(bits: &[u8], scores: Option<&[f32]>, width: usize, view: View) -> ColorImage {
    let rows = bits.len() / width.max(1);
    let mut pixels = Vec::with_capacity(bits.len());
    for r in 0..rows {
        let row = r * width..(r + 1) * width;
        match (view, scores) {
            (View::Scores, Some(s)) => {
                let s = &s[row];
                let max = s.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
                pixels.extend(s.iter().map(|v| heat((v.abs() / max).sqrt())));
            }
            _ => pixels.extend(bits[row].iter().map(|&b| if b == 1 { ACTIVE } else { INACTIVE })),
        }
    }
    ColorImage::new([width, rows], pixels)
}

impl MaskView {
    pub fn set(&mut self, ctx: &egui::Context, frame: MaskFrame, info: &ModelInfo, view: View) {
        self.frame = Some(frame);
        self.refresh(ctx, info, view);
    }

    pub fn clear(&mut self) {
        *self = MaskView::default();
    }

    pub fn has_scores(&self) -> bool {
        self.frame.as_ref().is_some_and(|f| f.neuron_scores.is_some())
    }

    /// Redraws the textures (after a new mask, or a view toggle).
    pub fn refresh(&mut self, ctx: &egui::Context, info: &ModelInfo, view: View) {
        let Some(f) = &self.frame else { return };
        let nearest = TextureOptions::NEAREST;
        self.neurons = Some(ctx.load_texture("neurons", image(&f.neurons, f.neuron_scores.as_deref(), info.ffn_dim, view), nearest));
        self.heads = Some(ctx.load_texture("heads", image(&f.heads, f.head_scores.as_deref(), info.n_heads, view), nearest));
    }

    /// The grid: rows are layers (layer 0 at the top), neurons left, heads right.
    pub fn ui(&self, ui: &mut egui::Ui, info: &ModelInfo) {
        let avail = ui.available_size();
        let row_h = (avail.y / info.n_layers as f32).clamp(3.0, 18.0);
        let heads_w = (avail.x * 0.12).max(40.0);
        let neurons_w = (avail.x - heads_w - 12.0).max(100.0);
        let (rect, _) = ui.allocate_exact_size(egui::vec2(avail.x, row_h * info.n_layers as f32), egui::Sense::hover());
        let neurons_rect = egui::Rect::from_min_size(rect.min, egui::vec2(neurons_w, rect.height()));
        let heads_rect = egui::Rect::from_min_size(rect.min + egui::vec2(neurons_w + 12.0, 0.0), egui::vec2(heads_w, rect.height()));
        let painter = ui.painter_at(rect);
        let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
        for (tex, r) in [(&self.neurons, neurons_rect), (&self.heads, heads_rect)] {
            match tex {
                Some(t) => {
                    painter.image(t.id(), r, uv, Color32::WHITE);
                }
                None => {
                    painter.rect_filled(r, 0.0, INACTIVE);
                }
            }
        }
        // One hover target per layer row: tooltips, and a row a test (or a
        // screen reader) can find.
        for l in 0..info.n_layers {
            let row = egui::Rect::from_min_size(rect.min + egui::vec2(0.0, l as f32 * row_h), egui::vec2(rect.width(), row_h));
            let resp = ui.interact(row, ui.scope_id().with(("layer row", l)), egui::Sense::hover());
            resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Row, true, format!("layer {l}")));
            if let Some(pos) = resp.hover_pos() {
                let text = self.describe(info, l, pos, neurons_rect, heads_rect);
                resp.on_hover_text_at_pointer(text);
            }
        }
    }

    fn describe(&self, info: &ModelInfo, layer: usize, pos: egui::Pos2, neurons: egui::Rect, heads: egui::Rect) -> String {
        let Some(f) = &self.frame else { return format!("layer {layer}: no mask yet") };
        let cell = |r: egui::Rect, n: usize| (((pos.x - r.min.x) / r.width() * n as f32) as usize).min(n - 1);
        let (kind, i, n, bits, scores) = if heads.contains(pos) {
            ("head", cell(heads, info.n_heads), info.n_heads, &f.heads, &f.head_scores)
        } else if neurons.contains(pos) {
            ("neuron", cell(neurons, info.ffn_dim), info.ffn_dim, &f.neurons, &f.neuron_scores)
        } else {
            return format!("layer {layer}");
        };
        let at = layer * n + i;
        let state = if bits[at] == 1 { "active" } else { "inactive" };
        match scores {
            Some(s) => format!("layer {layer}, {kind} {i}: {state}, score {:.4e}", s[at]),
            None => format!("layer {layer}, {kind} {i}: {state}"),
        }
    }
}
