//! `sift generate`: stream a completion, then report speeds.

use crate::common::{load_with, ModelArgs};
use sift_engine::attribution::{Attributor, Metric};
use anyhow::Result;
use sift_engine::generate::{generate, GenerateOptions};
use sift_engine::sampling::SamplingParams;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// The prompt (default: "Once upon a time").
    pub prompt: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 64)]
    pub tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Wrap the prompt in the model's chat format (instruct models).
    #[arg(long)]
    pub chat: bool,
    /// KV-cache size in tokens.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Sparse decoding: off (dense); prompt (attribution over the prompt once,
    /// then the same MLP neuron mask for every generated token); oracle (the
    /// paper's per-token protocol: a dense forward and backward before every
    /// token picks its mask; slower than dense, for accuracy studies).
    #[arg(long, value_enum, default_value_t = Sparsity::Off)]
    pub sparsity: Sparsity,
    /// Activation ratio: the fraction of MLP neurons kept in every layer, in (0, 1].
    #[arg(long, default_value_t = 0.3)]
    pub ar: f64,
    /// Attribution metric that ranks neurons: magnitude, gxo, snip, fisher, ig, corrected-gxo.
    #[arg(long, default_value = "corrected-gxo")]
    pub metric: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sparsity {
    Off,
    Prompt,
    Oracle,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.top_p > 0.0 && args.top_p <= 1.0) || args.temp < 0.0 {
        anyhow::bail!("--top-p must be in (0, 1] and --temp at least 0");
    }
    let metric = Metric::parse(&args.metric).ok_or_else(|| anyhow::anyhow!("unknown metric {:?}; use one of magnitude, gxo, snip, fisher, ig, corrected-gxo", args.metric))?;
    if !(args.ar > 0.0 && args.ar <= 1.0) {
        anyhow::bail!("--ar must be in (0, 1], not {}", args.ar);
    }
    let sparse = args.sparsity != Sparsity::Off;
    let mut m = load_with(&args.model, args.ctx, sparse)?;
    let prompt = args.prompt.clone().unwrap_or_else(|| "Once upon a time".into());
    let text = if args.chat { m.tokenizer.chat_prompt(&prompt)? } else { prompt.clone() };
    let ids = m.tokenizer.encode(&text)?;
    if sparse {
        let weights = m.weights.take().expect("kept for attribution");
        let mut attributor = Attributor::new(&m.model, &weights)?;
        m.model.enable_sparse_mlp(&weights)?;
        drop(weights);
        if args.sparsity == Sparsity::Oracle {
            return oracle(&mut m, &mut attributor, &ids, &args, metric, if args.chat { None } else { Some(&prompt) });
        }
        let t = std::time::Instant::now();
        sift_engine::model::sparse::set_prompt_mask(&mut m.model, &mut attributor, &ids, metric, args.ar)?;
        eprintln!(
            "sift: sparse decoding, {} of {} MLP neurons per layer ({metric}, attribution over the prompt: {:.0} ms)",
            m.model.active_neurons().unwrap_or(0),
            m.model.config.ffn_dim,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let opts = GenerateOptions {
        max_tokens: args.tokens,
        sampling: SamplingParams { temperature: args.temp, top_k: args.top_k, top_p: args.top_p, seed: args.seed },
        stop_at_eos: true,
    };
    if !args.chat {
        print!("{prompt}");
    }
    let mut stdout = std::io::stdout();
    let (_, stats) = generate(&mut m.model, &m.tokenizer, &ids, &opts, |_, piece| {
        print!("{piece}");
        let _ = stdout.flush();
        true
    })?;
    println!();
    eprintln!(
        "prefill: {} tokens, {:.1} tokens/s | decode: {} tokens, {:.1} tokens/s | finished: {}",
        stats.prompt_tokens,
        stats.prefill_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_tokens_per_second(),
        stats.finish_reason
    );
    Ok(())
}

/// The oracle loop: every token comes from [`sift_engine::model::sparse::oracle_step`].
fn oracle(m: &mut crate::common::Loaded, attributor: &mut Attributor, prompt_ids: &[u32], args: &Args, metric: Metric, echo: Option<&str>) -> Result<()> {
    use sift_engine::sampling::Sampler;
    use sift_engine::tokenizer::StreamDecoder;
    eprintln!(
        "sift: oracle mode, {} of {} MLP neurons per layer chosen by {metric} before every token",
        sift_engine::model::sparse::active_count(args.ar, m.model.config.ffn_dim)?,
        m.model.config.ffn_dim
    );
    if let Some(p) = echo {
        print!("{p}");
    }
    let mut sampler = Sampler::new(SamplingParams { temperature: args.temp, top_k: args.top_k, top_p: args.top_p, seed: args.seed });
    let mut stream = StreamDecoder::default();
    let mut tokens = prompt_ids.to_vec();
    let max = attributor.max_tokens(&m.model);
    let t = std::time::Instant::now();
    let mut generated = 0;
    let mut stdout = std::io::stdout();
    while generated < args.tokens && tokens.len() < max {
        let logits = sift_engine::model::sparse::oracle_step(&mut m.model, attributor, &tokens, metric, args.ar)?;
        let next = sampler.sample(&logits);
        if m.tokenizer.stop_ids.contains(&next) {
            break;
        }
        print!("{}", stream.push(&m.tokenizer, next)?);
        let _ = stdout.flush();
        tokens.push(next);
        generated += 1;
    }
    println!();
    eprintln!("oracle: {generated} tokens, {:.2} tokens/s (a dense forward and backward per token)", generated as f64 / t.elapsed().as_secs_f64());
    Ok(())
}
