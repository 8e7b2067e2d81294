//! Text generation: prefill the prompt, then decode one token per step,
//! streaming each piece of text to a callback.

use crate::error::Result;
use crate::model::{GpuModel, Logits};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop at the tokenizer's end-of-text / end-of-turn tokens.
    pub stop_at_eos: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Why generation ended: "length", "eos", "context" or "stopped".
    pub finish_reason: String,
}

impl GenerationStats {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }
    /// Decode rate over the steps after the first token (which prefill produced).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// Generates after `prompt`. `on_piece(token, text)` returns false to stop early.
pub fn generate(
    model: &mut GpuModel,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_piece: impl FnMut(u32, &str) -> bool,
) -> Result<(Vec<u32>, GenerationStats)> {
    let mut stats = GenerationStats { prompt_tokens: prompt.len(), ..Default::default() };
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut stream = StreamDecoder::default();
    let mut out = Vec::new();
    model.reset();
    let t0 = Instant::now();
    let mut logits = model.forward(prompt, Logits::Last)?;
    stats.prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    stats.finish_reason = "length".into();
    while out.len() < opts.max_tokens {
        let next = sampler.sample(&logits);
        if opts.stop_at_eos && tokenizer.stop_ids.contains(&next) {
            stats.finish_reason = "eos".into();
            break;
        }
        out.push(next);
        let piece = stream.push(tokenizer, next)?;
        if !on_piece(next, &piece) {
            stats.finish_reason = "stopped".into();
            break;
        }
        if out.len() == opts.max_tokens {
            break;
        }
        if model.position() >= model.max_ctx {
            stats.finish_reason = "context".into();
            break;
        }
        logits = model.forward(&[next], Logits::Last)?;
    }
    stats.decode_seconds = t1.elapsed().as_secs_f64();
    stats.generated_tokens = out.len();
    Ok((out, stats))
}
