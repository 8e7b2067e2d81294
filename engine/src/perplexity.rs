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

/// The protocol's windows of `ctx` tokens over `tokens`: each is `bos` (when
/// the model requires it) and the next `ctx - 1` text tokens, else `ctx` text
/// tokens; at most `max` of them, from the start. Perplexity, calibration and
/// rule calibration all cut their windows here.
pub fn windows(tokens: &[u32], ctx: usize, bos: Option<u32>, max: Option<usize>) -> Vec<Vec<u32>> {
    let text_per_window = ctx.saturating_sub(bos.is_some() as usize).max(1);
    tokens
        .chunks_exact(text_per_window)
        .take(max.unwrap_or(usize::MAX))
        .map(|text| bos.into_iter().chain(text.iter().copied()).collect())
        .collect()
}

/// How many text tokens `n` windows of `ctx` take (see [`windows`]).
pub fn text_tokens(n: usize, ctx: usize, bos: Option<u32>) -> usize {
    n * ctx.saturating_sub(bos.is_some() as usize)
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
    let windows = windows(tokens, ctx, bos, max_windows);
    if windows.is_empty() {
        return Err(SiftError::InvalidInput(format!(
            "the text has {} tokens, fewer than one window of {ctx}",
            tokens.len()
        )));
    }
    let vocab = model.config.vocab_size;
    let (mut total, mut scored) = (0.0f64, 0usize);
    for (w, window) in windows.iter().enumerate() {
        model.reset();
        let logits = model.forward(window, Logits::All)?;
        for i in 0..ctx - 1 {
            total += nll(&logits[i * vocab..(i + 1) * vocab], window[i + 1]);
            scored += 1;
        }
        progress(w + 1, windows.len());
    }
    let mean_nll = total / scored as f64;
    Ok(PerplexityResult { perplexity: mean_nll.exp(), mean_nll, scored_tokens: scored, windows: windows.len(), ctx, bos: bos.is_some() })
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

    #[test]
    fn windows_start_with_bos_and_keep_ctx_tokens() {
        let tokens: Vec<u32> = (10..21).collect();
        assert_eq!(super::windows(&tokens, 4, None, None), vec![vec![10, 11, 12, 13], vec![14, 15, 16, 17]]);
        assert_eq!(super::windows(&tokens, 4, Some(1), None), vec![vec![1, 10, 11, 12], vec![1, 13, 14, 15], vec![1, 16, 17, 18]]);
        assert_eq!(super::windows(&tokens, 4, Some(1), Some(2)).len(), 2);
        assert_eq!((super::text_tokens(3, 4, Some(1)), super::text_tokens(3, 4, None)), (9, 12));
    }
}
