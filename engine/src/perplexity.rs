//! Perplexity under the protocol of DESIGN.md: the whole text tokenized without
//! BOS, cut into non-overlapping windows of `ctx` tokens, every position after
//! the first of each window scored, PPL = exp(mean NLL). A model that requires
//! BOS (Gemma) gets `[BOS] + ctx - 1` text tokens per window instead.

use crate::error::{Result, SiftError};
use crate::model::{GpuModel, Logits};

#[derive(Clone, Debug, serde::Serialize)]
pub struct PerplexityResult {
    pub perplexity: f64,
    pub mean_nll: f64,
    pub scored_tokens: usize,
    pub windows: usize,
    pub ctx: usize,
    /// Whether each window started with BOS.
    pub bos: bool,
}

/// -log softmax(logits)[target], computed in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

/// Scores `tokens` window by window; `progress(done, total)` after each window.
pub fn perplexity(model: &mut GpuModel, tokens: &[u32], ctx: usize, max_windows: Option<usize>, progress: impl FnMut(usize, usize)) -> Result<PerplexityResult> {
    perplexity_with_bos(model, tokens, ctx, max_windows, None, progress)
}

/// Like [`perplexity`]; with `bos`, each window is BOS and `ctx - 1` text
/// tokens (as many scored positions as without).
pub fn perplexity_with_bos(
    model: &mut GpuModel,
    tokens: &[u32],
    ctx: usize,
    max_windows: Option<usize>,
    bos: Option<u32>,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityResult> {
    if ctx < 2 {
        return Err(SiftError::InvalidInput("--ctx must be at least 2".into()));
    }
    if max_windows == Some(0) {
        return Err(SiftError::InvalidInput("--max-windows must be at least 1".into()));
    }
    let text_per_window = ctx - bos.is_some() as usize;
    let mut windows = tokens.len() / text_per_window;
    if let Some(m) = max_windows {
        windows = windows.min(m);
    }
    if windows == 0 {
        return Err(SiftError::InvalidInput(format!(
            "the text has {} tokens, fewer than one window of {ctx}",
            tokens.len()
        )));
    }
    let vocab = model.config.vocab_size;
    let (mut total, mut scored) = (0.0f64, 0usize);
    for w in 0..windows {
        let text = &tokens[w * text_per_window..(w + 1) * text_per_window];
        let window: Vec<u32> = bos.into_iter().chain(text.iter().copied()).collect();
        model.reset();
        let logits = model.forward(&window, Logits::All)?;
        for i in 0..ctx - 1 {
            total += nll(&logits[i * vocab..(i + 1) * vocab], window[i + 1]);
            scored += 1;
        }
        progress(w + 1, windows);
    }
    let mean_nll = total / scored as f64;
    Ok(PerplexityResult { perplexity: mean_nll.exp(), mean_nll, scored_tokens: scored, windows, ctx, bos: bos.is_some() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nll_of_uniform_is_log_vocab() {
        let v = super::nll(&[2.0; 8], 3);
        assert!((v - 8f64.ln()).abs() < 1e-12);
        // A dominant correct logit gives a near-zero loss.
        assert!(super::nll(&[0.0, 50.0, 0.0], 1) < 1e-12);
    }
}
