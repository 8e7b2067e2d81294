//! `sift generate`: stream a completion, then report speeds.

use crate::common::{load_with, ModelArgs};
use crate::sparsity::{self, Sparsity, SparsityArgs};
use sift_engine::attribution::Attributor;
use sift_engine::model::sparse::active_count;
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
    #[command(flatten)]
    pub sparse: SparsityArgs,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.top_p > 0.0 && args.top_p <= 1.0) || args.temp < 0.0 {
        anyhow::bail!("--top-p must be in (0, 1] and --temp at least 0");
    }
    if args.ctx == 0 {
        anyhow::bail!("--ctx must be at least 1");
    }
    args.sparse.check_before_load(&args.model)?;
    let mut m = load_with(&args.model, args.ctx, args.sparse.needs_weights())?;
    let args = Args { sparse: crate::auto::resolve(&m.model, &args.sparse)?, ..args };
    let prompt = args.prompt.clone().unwrap_or_else(|| "Once upon a time".into());
    let text = if args.chat { m.tokenizer.chat_prompt(&prompt)? } else { prompt.clone() };
    let ids = m.tokenizer.encode(&text)?;
    m.model.check_fits(ids.len())?;
    let mut attributor = sparsity::prepare(&mut m, &args.sparse)?;
    if args.sparse.sparsity == Sparsity::Oracle {
        let attributor = attributor.as_mut().expect("oracle mode has an attributor");
        return oracle(&mut m, attributor, &ids, &args, if args.chat { None } else { Some(&prompt) });
    }
    if args.sparse.sparsity != Sparsity::Off {
        let what = sparsity::set_mask(&mut m, attributor.as_mut(), &ids, &args.sparse)?;
        eprintln!("sift: sparse decoding, {} ({what})", sparsity::describe_masks(&m)?);
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
    if args.sparse.sparsity == Sparsity::Threshold && m.model.has_input_rule() {
        eprintln!("threshold mode (TEAL): the tokens since the prompt read {:.1}% of the blocks' projection weights", m.model.active_fractions()?.0 * 100.0);
    } else if args.sparse.sparsity == Sparsity::Threshold {
        eprintln!("threshold mode: the last token kept {:.1}% of MLP neurons", m.model.active_fractions()?.0 * 100.0);
    }
    Ok(())
}

/// The oracle loop: every token comes from [`sift_engine::model::sparse::oracle_step`].
fn oracle(m: &mut crate::common::Loaded, attributor: &mut Attributor, prompt_ids: &[u32], args: &Args, echo: Option<&str>) -> Result<()> {
    use sift_engine::sampling::Sampler;
    use sift_engine::tokenizer::StreamDecoder;
    let (metric, ratios) = (args.sparse.metric()?, args.sparse.ratios()?);
    let c = &m.model.config;
    let mut units = format!("{} of {} MLP neurons", active_count(ratios.mlp, c.ffn_dim)?, c.ffn_dim);
    if ratios.heads < 1.0 {
        units += &format!(" and {} of {} heads", active_count(ratios.heads, c.n_heads)?, c.n_heads);
    }
    eprintln!("sift: oracle mode, {units} per layer chosen by {metric} before every token");
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
        let logits = sift_engine::model::sparse::oracle_step(&mut m.model, attributor, &tokens, metric, ratios)?.0;
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
