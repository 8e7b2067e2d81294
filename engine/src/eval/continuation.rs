//! Continuation quality of a sparse setting (DESIGN.md's protocol): the text
//! is cut into windows of P + C tokens; per window the first P are the
//! prompt (prefilled dense; prompt mode attributes over them) and the next C
//! are scored teacher-forced under the sparse rule, one token a step, exactly
//! as sparse decoding computes them (`eval::decode`). Reported: the
//! perplexity of those C tokens dense and sparse and their ratio, how often
//! the sparse model's top token is the dense model's, where they first part,
//! and the share of MLP neurons the setting kept.

use super::{decode, Next, RuleScope, Scored, Sparsity};
use crate::attribution::Attributor;
use crate::error::{Result, SiftError};
use crate::model::GpuModel;

/// The protocol's shape: prompt and scored tokens per window, and windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    pub prompt_tokens: usize,
    pub score_tokens: usize,
    pub windows: usize,
}

impl Shape {
    /// DESIGN.md's defaults: P 256, C 128, over 50 windows.
    pub const DEFAULT: Shape = Shape { prompt_tokens: 256, score_tokens: 128, windows: 50 };

    /// Checks the shape against a context length before anything runs.
    pub fn check(&self, max_ctx: usize) -> Result<()> {
        let Shape { prompt_tokens: p, score_tokens: c, windows } = *self;
        if p == 0 || c == 0 || windows == 0 {
            return Err(SiftError::InvalidInput(format!("--prompt-tokens, --score-tokens and --windows must each be at least 1 (got {p}, {c}, {windows})")));
        }
        if p + c > max_ctx {
            return Err(SiftError::InvalidInput(format!("--prompt-tokens {p} + --score-tokens {c} = {} tokens exceed the context of {max_ctx} (raise --ctx or shorten the windows)", p + c)));
        }
        Ok(())
    }

    /// The first `windows` non-overlapping windows of P + C tokens of
    /// `tokens` (the text, without BOS). With `bos` (a model that requires
    /// it), each window is BOS and P - 1 + C text tokens.
    pub fn cut(&self, tokens: &[u32], bos: Option<u32>) -> Result<Vec<Vec<u32>>> {
        let windows = crate::perplexity::windows(tokens, self.prompt_tokens + self.score_tokens, bos, Some(self.windows));
        let have = windows.len();
        if have < self.windows {
            return Err(SiftError::InvalidInput(format!(
                "the text has {} tokens: {have} windows of {} + {} tokens, fewer than the {} asked for",
                tokens.len(),
                self.prompt_tokens,
                self.score_tokens,
                self.windows
            )));
        }
        Ok(windows)
    }
}

/// Every scored token of every window under one setting.
#[derive(Clone, Debug)]
pub struct WindowScores(pub Vec<Vec<Scored>>);

/// Scores each window's last C tokens under `sparsity`; `progress(done)` after each window.
pub fn score_windows(model: &mut GpuModel, attributor: &mut Attributor, shape: &Shape, windows: &[Vec<u32>], sparsity: &Sparsity, mut progress: impl FnMut(usize)) -> Result<WindowScores> {
    shape.check(model.max_ctx)?;
    let mut out = Vec::with_capacity(windows.len());
    for (i, w) in windows.iter().enumerate() {
        let (prompt, scored) = w.split_at(shape.prompt_tokens);
        out.push(decode(model, attributor, prompt, Next::Forced(scored), sparsity, RuleScope::Decoding)?);
        progress(i + 1);
    }
    Ok(WindowScores(out))
}

/// A setting's continuation quality against dense, on the same windows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Quality {
    pub ppl_dense: f64,
    pub ppl_sparse: f64,
    /// ppl_sparse / ppl_dense.
    pub ratio: f64,
    /// Fraction of scored positions where the sparse top token is the dense one.
    pub top1_agreement: f64,
    /// Mean over windows of the first scored position whose top tokens differ
    /// (the window's C where none does).
    pub first_divergence: f64,
    /// Mean fraction of MLP neurons kept over the scored tokens.
    pub mlp_kept: f64,
    pub scored_tokens: usize,
}

fn perplexity(w: &WindowScores) -> f64 {
    let (sum, n) = w.0.iter().flatten().fold((0.0, 0usize), |(s, n), t| (s - t.log_prob, n + 1));
    (sum / n.max(1) as f64).exp()
}

/// Compares a setting's scores with dense ones over the same windows.
pub fn compare(dense: &WindowScores, sparse: &WindowScores) -> Result<Quality> {
    let same = dense.0.len() == sparse.0.len() && dense.0.iter().zip(&sparse.0).all(|(d, s)| d.len() == s.len() && d.iter().zip(s).all(|(a, b)| a.token == b.token));
    if !same || dense.0.is_empty() {
        return Err(SiftError::InvalidInput("dense and sparse scores must cover the same tokens".into()));
    }
    let pairs = || dense.0.iter().zip(&sparse.0);
    let n: usize = dense.0.iter().map(Vec::len).sum();
    let agree = pairs().flat_map(|(d, s)| d.iter().zip(s)).filter(|(a, b)| a.top == b.top).count();
    let first = pairs().map(|(d, s)| d.iter().zip(s).position(|(a, b)| a.top != b.top).unwrap_or(d.len()) as f64).sum::<f64>() / dense.0.len() as f64;
    let kept = sparse.0.iter().flatten().map(|t| t.mlp_kept).sum::<f64>() / n as f64;
    let (ppl_dense, ppl_sparse) = (perplexity(dense), perplexity(sparse));
    Ok(Quality { ppl_dense, ppl_sparse, ratio: ppl_sparse / ppl_dense, top1_agreement: agree as f64 / n as f64, first_divergence: first, mlp_kept: kept, scored_tokens: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(tokens: &[(u32, f64, u32)]) -> Vec<Scored> {
        tokens.iter().map(|&(token, log_prob, top)| Scored { token, log_prob, top, mlp_kept: 0.5 }).collect()
    }

    #[test]
    fn windows_are_cut_and_checked() {
        let shape = Shape { prompt_tokens: 3, score_tokens: 2, windows: 2 };
        let tokens: Vec<u32> = (0..11).collect();
        assert_eq!(shape.cut(&tokens, None).unwrap(), vec![tokens[0..5].to_vec(), tokens[5..10].to_vec()]);
        // A model that requires BOS: BOS, then P - 1 + C text tokens.
        assert_eq!(shape.cut(&tokens, Some(99)).unwrap(), vec![vec![99, 0, 1, 2, 3], vec![99, 4, 5, 6, 7]]);
        let err = Shape { windows: 3, ..shape }.cut(&tokens, None).unwrap_err().to_string();
        assert!(err.contains("11 tokens") && err.contains("2 windows") && err.contains("3 asked"), "{err}");
        let err = shape.check(4).unwrap_err().to_string();
        assert!(err.contains("exceed the context of 4"), "{err}");
        assert!(Shape { windows: 0, ..shape }.check(64).is_err());
        assert!(shape.check(5).is_ok());
    }

    #[test]
    fn quality_by_hand() {
        let dense = WindowScores(vec![scored(&[(1, -1.0, 1), (2, -1.0, 2)]), scored(&[(3, -1.0, 3), (4, -1.0, 4)])]);
        let sparse = WindowScores(vec![scored(&[(1, -1.0, 1), (2, -3.0, 9)]), scored(&[(3, -2.0, 8), (4, -2.0, 4)])]);
        let q = compare(&dense, &sparse).unwrap();
        assert!((q.ppl_dense - 1f64.exp()).abs() < 1e-12);
        assert!((q.ppl_sparse - 2f64.exp()).abs() < 1e-12);
        assert!((q.ratio - 1f64.exp()).abs() < 1e-12);
        assert_eq!(q.top1_agreement, 0.5);
        // Window 0 parts at position 1, window 1 at 0.
        assert_eq!(q.first_divergence, 0.5);
        assert_eq!(q.mlp_kept, 0.5);
        assert_eq!(q.scored_tokens, 4);
        let other = WindowScores(vec![scored(&[(1, -1.0, 1)])]);
        assert!(compare(&dense, &other).is_err());
    }
}
