//! A sparse generation beside the dense one of the same prompt: where they
//! agree, and the first token where they part, drawn in both texts.

use crate::worker::Request;
use eframe::egui::text::{LayoutJob, TextFormat};
use eframe::egui::{Color32, FontId};

/// A finished dense generation and what it was asked for.
#[derive(Clone, Debug)]
pub struct DenseReference {
    prompt: String,
    chat: bool,
    max_tokens: usize,
    temperature: f32,
    /// (id, text) of each generated token.
    pub tokens: Vec<(u32, String)>,
}

impl DenseReference {
    pub fn new(req: &Request, tokens: Vec<(u32, String)>) -> DenseReference {
        DenseReference { prompt: req.prompt.clone(), chat: req.chat, max_tokens: req.max_tokens, temperature: req.temperature, tokens }
    }

    /// Whether a generation asked for `req` continues the same prompt the same way.
    pub fn matches(&self, req: &Request) -> bool {
        self.prompt == req.prompt && self.chat == req.chat && self.max_tokens == req.max_tokens && self.temperature == req.temperature
    }
}

/// The sparse generation so far against the dense one.
pub struct Comparison<'a> {
    pub dense: &'a [(u32, String)],
    pub sparse: &'a [(u32, String)],
}

const PARTED: Color32 = Color32::from_rgb(120, 40, 40);
const FIRST: Color32 = Color32::from_rgb(200, 60, 50);

impl Comparison<'_> {
    /// Positions both have generated.
    pub fn compared(&self) -> usize {
        self.dense.len().min(self.sparse.len())
    }

    /// Positions with the same token in both.
    pub fn agreeing(&self) -> usize {
        self.dense.iter().zip(self.sparse).filter(|(d, s)| d.0 == s.0).count()
    }

    /// The first position whose tokens differ (None while they agree; a text
    /// that ended before the other parts where it ended).
    pub fn first_divergence(&self) -> Option<usize> {
        let n = self.compared();
        (0..n).find(|&i| self.dense[i].0 != self.sparse[i].0).or_else(|| {
            // The sparse text stopped early, or ran past a dense text that ended.
            let ended = self.sparse.len() > self.dense.len();
            ended.then_some(n)
        })
    }

    /// The dense text, its first divergent token marked.
    pub fn dense_text(&self, prefix: &str) -> LayoutJob {
        text(prefix, self.dense, self.first_divergence(), false)
    }

    /// The sparse text: its first divergent token marked, the rest (which
    /// follows a different history) shaded.
    pub fn sparse_text(&self, prefix: &str) -> LayoutJob {
        text(prefix, self.sparse, self.first_divergence(), true)
    }
}

fn text(prefix: &str, tokens: &[(u32, String)], parted: Option<usize>, shade_rest: bool) -> LayoutJob {
    let font = FontId::monospace(13.0);
    let plain = TextFormat { font_id: font.clone(), color: Color32::LIGHT_GRAY, ..Default::default() };
    let mut job = LayoutJob::default();
    job.append(prefix, 0.0, TextFormat { color: Color32::GRAY, ..plain.clone() });
    for (i, (_, t)) in tokens.iter().enumerate() {
        let format = match parted {
            Some(p) if i == p => TextFormat { background: FIRST, color: Color32::WHITE, ..plain.clone() },
            Some(p) if i > p && shade_rest => TextFormat { background: PARTED, ..plain.clone() },
            _ => plain.clone(),
        };
        job.append(t, 0.0, format);
    }
    if tokens.is_empty() {
        job.append("…", 0.0, plain);
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[u32]) -> Vec<(u32, String)> {
        ids.iter().map(|&i| (i, format!("t{i} "))).collect()
    }

    #[test]
    fn agreement_and_first_divergence() {
        let (d, s) = (toks(&[1, 2, 3, 4]), toks(&[1, 2, 9, 4]));
        let c = Comparison { dense: &d, sparse: &s };
        assert_eq!((c.compared(), c.agreeing(), c.first_divergence()), (4, 3, Some(2)));
        let s = toks(&[1, 2]);
        let c = Comparison { dense: &d, sparse: &s };
        assert_eq!(c.first_divergence(), None, "a sparse text still being generated has not parted");
        let s = toks(&[1, 2, 3, 4, 5]);
        let c = Comparison { dense: &d, sparse: &s };
        assert_eq!(c.first_divergence(), Some(4), "running past the dense text's end parts there");
    }

    #[test]
    fn the_first_divergent_token_is_marked() {
        let (d, s) = (toks(&[1, 2, 3]), toks(&[1, 7, 8]));
        let c = Comparison { dense: &d, sparse: &s };
        let job = c.sparse_text("p ");
        // Sections: prefix, then one per token.
        assert_eq!(job.sections.len(), 4);
        assert_eq!(job.sections[1].format.background, Color32::TRANSPARENT);
        assert_eq!(job.sections[2].format.background, FIRST);
        assert_eq!(job.sections[3].format.background, PARTED);
        let dense = c.dense_text("p ");
        assert_eq!(dense.sections[2].format.background, FIRST);
        assert_eq!(dense.sections[3].format.background, Color32::TRANSPARENT);
        assert_eq!(job.text, "p t1 t7 t8 ");
    }
}
