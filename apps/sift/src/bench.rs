//! `sift bench`: prefill and decode tokens/s of a model on the chosen adapter,
//! and llama.cpp's on the same GGUF and the same token ids when
//! `llama-cpp-python` is importable, as ratios measured in one run.

use crate::common::{load_with, Loaded, ModelArgs};
use sift_engine::attribution::{AttributeOptions, Attributor, Target};
use anyhow::{Context, Result};
use serde_json::json;
use sift_engine::model::Logits;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Decode steps to time.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Tokens already in the context when decoding starts: attention's cost
    /// grows with it (the sparse sweep decodes after the same context).
    #[arg(long, default_value_t = 16)]
    pub decode_context: usize,
    /// Threads for llama.cpp (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the llama.cpp comparison.
    #[arg(long)]
    pub no_llama_cpp: bool,
    /// Prompt length for the attribution measurement (forward + backward
    /// against the plain forward over the same tokens).
    #[arg(long, default_value_t = 64)]
    pub attribution_tokens: usize,
    /// Skip the attribution measurement (it uploads transposed weights).
    #[arg(long)]
    pub no_attribution: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Another model to measure in the same run (repeatable): its prefill and
    /// decode speed, and llama.cpp's, in a table beside the first model's
    /// (e.g. the same model as Q4_K_M and as Q4_1).
    #[arg(long, value_name = "MODEL")]
    pub also: Vec<std::path::PathBuf>,
    /// Rounds of decoding over all models of `--also` (medians).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Prefill and decode speed of one model, and llama.cpp's on it.
struct Speeds {
    path: std::path::PathBuf,
    prefill_tps: f64,
    decode_tps: f64,
    packed: (usize, usize),
    llama: Option<serde_json::Value>,
}

impl Speeds {
    fn json(&self) -> serde_json::Value {
        json!({"model": self.path.display().to_string(), "prefill_tokens_per_second": self.prefill_tps,
               "decode_tokens_per_second": self.decode_tps, "packed_matrices": [self.packed.0, self.packed.1],
               "llama_cpp": self.llama})
    }
}

const BENCH_TEXT: &str = include_str!("../../../assets/bench_prompt.txt");

pub fn run(args: Args) -> Result<()> {
    if args.decode_context < 3 {
        anyhow::bail!("--decode-context must be at least 3 tokens (the sparse sweep attributes over them)");
    }
    let ctx = args.prefill_tokens.max(args.decode_context + args.decode_tokens) + 1;
    let mut m = load_with(&args.model, ctx, !args.no_attribution)?;
    let mut tokens = m.tokenizer.encode(BENCH_TEXT)?;
    while tokens.len() < args.prefill_tokens.max(args.decode_context) {
        tokens.extend_from_within(..);
    }
    let decode_prompt = tokens[..args.decode_context].to_vec();
    tokens.truncate(args.prefill_tokens);

    // (Pipelines were compiled by the warm-up in `load`.)
    let t = Instant::now();
    m.model.forward(&tokens, Logits::Last)?;
    let prefill_s = t.elapsed().as_secs_f64();

    // Decode speed, and the per-kernel GPU time of one decode step and one prefill batch.
    m.model.reset();
    if decode_prompt.len() > 1 {
        m.model.forward(&decode_prompt[..decode_prompt.len() - 1], Logits::Last)?;
    }
    let (decode_tps, decode_profile) = sift_engine::bench::timed_decode(&mut m.model, &decode_prompt, args.decode_tokens)?;
    let dense_footprint = m.model.decode_footprint();
    m.model.reset();
    let batch = tokens.len().min(m.model.max_batch);
    let prefill_profile = m.model.profile(&tokens[..batch])?;

    let (attribution, sparse) = match m.weights.take() {
        Some(w) => {
            // One set of transposed weights serves both measurements.
            let mut attributor = Attributor::new(&m.model, &w)?;
            m.model.enable_sparse(&w)?;
            drop(w);
            let a = attribution_ratio(&mut m.model, &mut attributor, &tokens, args.attribution_tokens)?;
            let s = sift_engine::bench::sparse_sweep(&mut m.model, &mut attributor, &decode_prompt, args.decode_tokens, &sift_engine::bench::SWEEP_RATIOS, |_| ())?;
            (Some(a), Some(s))
        }
        None => (None, None),
    };

    let cpu_style = m.model.kernel_family() == sift_engine::kernels::KernelFamily::RowPerInvocation;
    let roofline = sift_engine::roofline::measure(&m.model.ctx, cpu_style, 4 * m.model.config.vocab_size as u64)?;
    let floors = sift_engine::bench::floor_rows(&roofline, dense_footprint, decode_tps, sparse.as_deref().unwrap_or_default());

    let ours = json!({
        "prefill_tokens_per_second": tokens.len() as f64 / prefill_s,
        "decode_tokens_per_second": decode_tps,
    });
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let is_gguf = m.path.extension().is_some_and(|e| e == "gguf");
    let llama = if args.no_llama_cpp || !is_gguf {
        None
    } else {
        match llama_cpp(&m.path, threads, &tokens, &decode_prompt, args.decode_tokens) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("sift: llama.cpp comparison skipped: {e:#}");
                None
            }
        }
    };
    let ratio = |key: &str| llama.as_ref().map(|l| ours[key].as_f64().unwrap() / l[key].as_f64().unwrap());
    let compared = if args.also.is_empty() { vec![] } else { compare(&mut m, &tokens, &decode_prompt, llama.clone(), &args, threads)? };
    let report = json!({
        "model": m.path.display().to_string(),
        "adapter": m.model.ctx.describe(),
        "software_adapter": m.model.ctx.is_software(),
        "prefill_tokens": tokens.len(),
        "decode_tokens": args.decode_tokens,
        "decode_context": args.decode_context,
        "sift": ours,
        "llama_cpp": llama,
        "prefill_ratio": ratio("prefill_tokens_per_second"),
        "decode_ratio": ratio("decode_tokens_per_second"),
        "decode_kernel_seconds": decode_profile.as_ref().map(|p| profile_json(p)),
        "prefill_kernel_seconds": prefill_profile.as_ref().map(|p| profile_json(p)),
        "prefill_profile_tokens": batch,
        "attribution": attribution,
        "sparse_decode": sparse,
        "roofline": roofline,
        "decode_floors": floors,
        "models": compared.iter().map(Speeds::json).collect::<Vec<_>>(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let adapter = report["adapter"].as_str().unwrap().to_string();
    println!("adapter: {adapter}");
    println!("{:<30} {:>16} {:>16} {:>10}", "", "sift tok/s", "llama.cpp tok/s", "ratio");
    for (name, key) in [("prefill", "prefill_tokens_per_second"), ("decode", "decode_tokens_per_second")] {
        let l = llama.as_ref().map(|l| format!("{:.1}", l[key].as_f64().unwrap())).unwrap_or("-".into());
        let r = ratio(key).map(|r| format!("{r:.2}x")).unwrap_or("-".into());
        let label = if name == "prefill" { format!("prefill ({} tokens)", tokens.len()) } else { format!("decode ({} steps after {})", args.decode_tokens, args.decode_context) };
        println!("{:<30} {:>16.1} {:>16} {:>10}", label, ours[key].as_f64().unwrap(), l, r);
    }
    if let Some(l) = &llama {
        println!("llama.cpp: {} CPU threads", l["threads"]);
    }
    if let Some(a) = &attribution {
        println!(
            "attribution over {} tokens: {:.0} ms vs plain forward {:.0} ms: {:.2}x (median of {} runs each)",
            a["tokens"],
            a["attribution_seconds"].as_f64().unwrap() * 1e3,
            a["forward_seconds"].as_f64().unwrap() * 1e3,
            a["ratio"].as_f64().unwrap(),
            a["runs"]
        );
    }
    if let Some(rows) = &sparse {
        sift_engine::bench::print_sweep(rows);
        // The breakdown at AR 0.2, the ratio the speed targets name.
        if let (Some(d), Some(row)) = (&decode_profile, rows.iter().find(|r| (r.ar - 0.2).abs() < 1e-9)) {
            sift_engine::bench::print_sparse_profile(d, row);
        }
    }
    match (&decode_profile, &prefill_profile) {
        (Some(d), Some(p)) => sift_engine::bench::print_profile(d, Some((p, batch))),
        _ => println!("(no per-kernel times: this adapter has no timestamp queries)"),
    }
    sift_engine::bench::print_roofline(&roofline, &floors);
    if let Some(l) = &llama {
        println!("llama.cpp decodes a step in {:.2} ms on the CPU", 1e3 / l["decode_tokens_per_second"].as_f64().unwrap());
    }
    if compared.len() > 1 {
        print_models(&compared, &adapter);
    }
    Ok(())
}

/// The first model and every `--also` model, all loaded at once: prefill
/// once each, then `--rounds` rounds of decoding that visit every model in
/// turn (medians), so that the machine's drift falls on all of them alike;
/// llama.cpp on each GGUF.
fn compare(first: &mut Loaded, tokens: &[u32], decode_prompt: &[u32], first_llama: Option<serde_json::Value>, args: &Args, threads: usize) -> Result<Vec<Speeds>> {
    let ctx = args.prefill_tokens.max(args.decode_context + args.decode_tokens) + 1;
    let mut others = vec![];
    for path in &args.also {
        let model = crate::common::ModelArgs { model: Some(path.clone()), ..args.model.clone() };
        let m = load_with(&model, ctx, false).with_context(|| format!("loading {}", path.display()))?;
        let mut t = m.tokenizer.encode(BENCH_TEXT)?;
        while t.len() < args.prefill_tokens.max(args.decode_context) {
            t.extend_from_within(..);
        }
        let p = t[..args.decode_context].to_vec();
        t.truncate(args.prefill_tokens);
        others.push((m, t, p));
    }
    let mut all: Vec<(&mut Loaded, &[u32], &[u32])> = vec![(first, tokens, decode_prompt)];
    all.extend(others.iter_mut().map(|(m, t, p)| (m, t.as_slice(), p.as_slice())));
    let mut prefill = vec![];
    for (m, t, _) in all.iter_mut() {
        m.model.reset();
        let start = Instant::now();
        m.model.forward(t, Logits::Last)?;
        prefill.push(t.len() as f64 / start.elapsed().as_secs_f64());
    }
    let mut decode = vec![vec![]; all.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, (m, _, p)) in all.iter_mut().enumerate() {
            decode[i].push(sift_engine::bench::decode_tokens_per_second(&mut m.model, p, args.decode_tokens)?);
        }
    }
    let mut out = vec![];
    for (i, (m, t, p)) in all.into_iter().enumerate() {
        let is_gguf = m.path.extension().is_some_and(|e| e == "gguf");
        let llama = if i == 0 {
            first_llama.clone()
        } else {
            (!args.no_llama_cpp && is_gguf)
                .then(|| llama_cpp(&m.path, threads, t, p, args.decode_tokens))
                .and_then(|r| r.map_err(|e| eprintln!("sift: llama.cpp comparison skipped: {e:#}")).ok())
        };
        let decode_tps = sift_engine::bench::median(decode[i].clone());
        out.push(Speeds { path: m.path.clone(), prefill_tps: prefill[i], decode_tps, packed: m.model.packed_matrices(), llama });
    }
    Ok(out)
}

/// The models of one run side by side, each against the first.
fn print_models(models: &[Speeds], adapter: &str) {
    println!("\nmodels measured in this run ({adapter}):");
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>14} {:>9} {:>10}",
        "model", "packed", "prefill t/s", "decode t/s", "llama.cpp t/s", "vs llama", "vs first"
    );
    for s in models {
        let name = s.path.file_name().unwrap_or_default().to_string_lossy();
        let llama = s.llama.as_ref().and_then(|l| l["decode_tokens_per_second"].as_f64());
        println!(
            "{:<40} {:>9} {:>12.1} {:>12.1} {:>14} {:>9} {:>9.2}x",
            name,
            format!("{}/{}", s.packed.0, s.packed.1),
            s.prefill_tps,
            s.decode_tps,
            llama.map(|l| format!("{l:.1}")).unwrap_or("-".into()),
            llama.map(|l| format!("{:.2}x", s.decode_tps / l)).unwrap_or("-".into()),
            s.decode_tps / models[0].decode_tps
        );
    }
}

/// One attribution pass (forward keeping activations + backward + scores,
/// F = log p of the greedy next token) against the plain forward over the
/// same prompt, both from an empty cache, alternated and timed by median.
fn attribution_ratio(model: &mut sift_engine::model::GpuModel, attributor: &mut Attributor, tokens: &[u32], n: usize) -> Result<serde_json::Value> {
    let n = n.min(attributor.max_tokens(model)).min(tokens.len());
    let prompt = &tokens[..n];
    let opts = AttributeOptions::default();
    let runs = 5;
    let (mut fwd, mut attr) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        model.reset();
        let t = Instant::now();
        model.forward(prompt, Logits::Last)?;
        let f = t.elapsed().as_secs_f64();
        // A full pass: without this, the same prompt would reuse the last one.
        attributor.forget_cached_tokens();
        let t = Instant::now();
        attributor.attribute(model, prompt, &Target::Next, &opts)?;
        let a = t.elapsed().as_secs_f64();
        // The first round compiles the attribution kernels.
        if i > 0 {
            fwd.push(f);
            attr.push(a);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, a) = (median(&mut fwd), median(&mut attr));
    model.reset();
    Ok(json!({"tokens": n, "forward_seconds": f, "attribution_seconds": a, "ratio": a / f, "runs": runs}))
}

fn profile_json(p: &[(&str, f64)]) -> serde_json::Value {
    p.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>().into()
}

fn llama_cpp(model: &std::path::Path, threads: usize, prefill: &[u32], decode_prompt: &[u32], steps: usize) -> Result<serde_json::Value> {
    let input = json!({
        "model": model, "threads": threads, "prefill_tokens": prefill,
        "decode_prompt": decode_prompt, "decode_steps": steps,
    });
    let mut child = Command::new("python3")
        .args(["-c", include_str!("llama_cpp_bench.py")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // A crash (a wheel built for another CPU) leaves no message: name the exit status.
        let last = err.lines().last().map(str::to_string).unwrap_or_else(|| format!("python3 exited with {}", out.status));
        anyhow::bail!("llama-cpp-python not usable ({last})");
    }
    serde_json::from_slice(&out.stdout).context("llama.cpp bench output")
}
