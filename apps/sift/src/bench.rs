//! `sift bench`: prefill and decode tokens/s of a model on the chosen adapter,
//! and llama.cpp's on the same GGUF and the same token ids when
//! `llama-cpp-python` is importable, as ratios measured in one run: each
//! round times sift and llama.cpp back to back, and the medians count.

use crate::common::{load_with, Loaded, ModelArgs};
use crate::llama_cpp::LlamaCpp;
use sift_engine::attribution::{AttributeOptions, Attributor, Target};
use anyhow::{Context, Result};
use serde_json::json;
use sift_engine::bench::median;
use sift_engine::model::Logits;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths for the prefill measurement (comma-separated); the
    /// longest is the one `--also` models are measured at.
    #[arg(long, value_delimiter = ',', default_values_t = [128, 512])]
    pub prefill_tokens: Vec<usize>,
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
    /// Rounds of every timed measurement, sift and llama.cpp back to back
    /// in each (medians count; shared machines drift).
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
    let mut lengths = args.prefill_tokens.clone();
    lengths.sort_unstable();
    lengths.dedup();
    if lengths.is_empty() || lengths[0] == 0 {
        anyhow::bail!("--prefill-tokens needs lengths of at least 1 token");
    }
    let longest = *lengths.last().unwrap();
    let ctx = longest.max(args.decode_context + args.decode_tokens).max(args.attribution_tokens) + 1;
    let mut m = load_with(&args.model, ctx, !args.no_attribution)?;
    let mut tokens = m.tokenizer.encode(BENCH_TEXT)?;
    while tokens.len() < longest.max(args.decode_context).max(args.attribution_tokens) {
        tokens.extend_from_within(..);
    }
    let decode_prompt = tokens[..args.decode_context].to_vec();
    let attribution_prompt = tokens[..args.attribution_tokens.min(tokens.len())].to_vec();
    tokens.truncate(longest);

    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let is_gguf = m.path.extension().is_some_and(|e| e == "gguf");
    let mut llama = if args.no_llama_cpp || !is_gguf {
        None
    } else {
        LlamaCpp::start(&m.path, threads, ctx + 8).map_err(|e| eprintln!("sift: llama.cpp comparison skipped: {e:#}")).ok()
    };

    // (Sift's pipelines were compiled by the warm-up in `load`.)
    let rounds = args.rounds.max(1);
    let prefill = prefill_rounds(&mut m, &tokens, &lengths, rounds, &mut llama)?;
    let decode = decode_rounds(&mut m, &decode_prompt, args.decode_tokens, rounds, &mut llama)?;

    // The per-kernel GPU time of one decode step and one prefill batch.
    m.model.reset();
    if decode_prompt.len() > 1 {
        m.model.forward(&decode_prompt[..decode_prompt.len() - 1], Logits::Last)?;
    }
    let (_, decode_profile) = sift_engine::bench::timed_decode(&mut m.model, &decode_prompt, args.decode_tokens)?;
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
            let a = attribution_ratio(&mut m.model, &mut attributor, &attribution_prompt, rounds.max(5), &mut llama)?;
            let s = sift_engine::bench::sparse_sweep(&mut m.model, &mut attributor, &decode_prompt, args.decode_tokens, &sift_engine::bench::SWEEP_RATIOS, |_| ())?;
            (Some(a), Some(s))
        }
        None => (None, None),
    };

    let cpu_style = m.model.kernel_family() == sift_engine::kernels::KernelFamily::RowPerInvocation;
    let roofline = sift_engine::roofline::measure(&m.model.ctx, cpu_style, 4 * m.model.config.vocab_size as u64)?;
    let floors = sift_engine::bench::floor_rows(&roofline, dense_footprint, decode["sift_tokens_per_second"].as_f64().unwrap(), sparse.as_deref().unwrap_or_default());
    let main_prefill = prefill.last().unwrap();
    let llama_json = llama.as_ref().map(|l| {
        json!({"prefill_tokens_per_second": main_prefill["llama_cpp_tokens_per_second"], "decode_tokens_per_second": decode["llama_cpp_tokens_per_second"], "threads": l.threads})
    });
    let compared = if args.also.is_empty() { vec![] } else { compare(&mut m, &tokens, &decode_prompt, llama_json.clone(), &args, threads)? };
    drop(llama);
    let report = json!({
        "model": m.path.display().to_string(),
        "adapter": m.model.ctx.describe(),
        "software_adapter": m.model.ctx.is_software(),
        "rounds": rounds,
        "prefill_tokens": tokens.len(),
        "decode_tokens": args.decode_tokens,
        "decode_context": args.decode_context,
        "sift": {"prefill_tokens_per_second": main_prefill["sift_tokens_per_second"], "decode_tokens_per_second": decode["sift_tokens_per_second"]},
        "llama_cpp": llama_json,
        "prefill_ratio": main_prefill["ratio"],
        "decode_ratio": decode["ratio"],
        "prefill": prefill,
        "decode": decode,
        "peak_gflops": roofline.peak_flops_per_second / 1e9,
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
    let fmt = |v: &serde_json::Value, digits: usize| v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or("-".into());
    println!("{:<30} {:>12} {:>16} {:>8} {:>10}", "", "sift tok/s", "llama.cpp tok/s", "ratio", "sift GFLOP/s");
    for p in &prefill {
        let label = format!("prefill ({} tokens)", p["tokens"]);
        let ratio = p["ratio"].as_f64().map(|r| format!("{r:.2}x")).unwrap_or("-".into());
        println!("{:<30} {:>12} {:>16} {:>8} {:>10}", label, fmt(&p["sift_tokens_per_second"], 1), fmt(&p["llama_cpp_tokens_per_second"], 1), ratio, fmt(&p["sift_gflops"], 1));
    }
    let label = format!("decode ({} steps after {})", args.decode_tokens, args.decode_context);
    let ratio = decode["ratio"].as_f64().map(|r| format!("{r:.2}x")).unwrap_or("-".into());
    println!("{:<30} {:>12} {:>16} {:>8}", label, fmt(&decode["sift_tokens_per_second"], 1), fmt(&decode["llama_cpp_tokens_per_second"], 1), ratio);
    println!(
        "medians of {rounds} rounds, sift and llama.cpp back to back in each{}; this adapter's arithmetic peak: {:.1} GFLOP/s (multiply-adds in registers)",
        llama_json.as_ref().map(|l| format!(" (llama.cpp: {} CPU threads)", l["threads"])).unwrap_or_default(),
        roofline.peak_flops_per_second / 1e9
    );
    if let Some(a) = &attribution {
        println!(
            "attribution over {} tokens: {:.0} ms vs plain forward {:.0} ms: {:.2}x (median of {} runs each){}",
            a["tokens"],
            a["attribution_seconds"].as_f64().unwrap() * 1e3,
            a["forward_seconds"].as_f64().unwrap() * 1e3,
            a["ratio"].as_f64().unwrap(),
            a["runs"],
            a["llama_cpp_prefill_seconds"]
                .as_f64()
                .map(|l| format!("; llama.cpp prefills them in {:.0} ms: the pass runs at {:.2}x its speed", l * 1e3, a["vs_llama_cpp_prefill"].as_f64().unwrap()))
                .unwrap_or_default()
        );
    }
    if let Some(k) = attribution.as_ref().and_then(|a| a["kernel_seconds"].as_object()) {
        print_attribution_profile(k);
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
    if let Some(l) = decode["llama_cpp_tokens_per_second"].as_f64() {
        println!("llama.cpp decodes a step in {:.2} ms on the CPU", 1e3 / l);
    }
    if compared.len() > 1 {
        print_models(&compared, &adapter);
    }
    Ok(())
}

/// Medians over rounds that time sift then llama.cpp back to back, in
/// seconds, and the median of the rounds' ratios llama.cpp / sift (above 1:
/// sift is faster). Without llama.cpp, sift's alone.
struct Paired {
    sift: f64,
    llama: Option<f64>,
    ratio: Option<f64>,
}

fn paired_rounds(rounds: usize, llama: &mut Option<LlamaCpp>, mut sift: impl FnMut() -> Result<f64>, mut peer: impl FnMut(&mut LlamaCpp) -> Result<f64>) -> Result<Paired> {
    let (mut ours, mut theirs, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let s = sift()?;
        ours.push(s);
        if let Some(l) = llama.as_mut() {
            let t = peer(l)?;
            ratios.push(t / s);
            theirs.push(t);
        }
    }
    Ok(Paired { sift: median(ours), llama: (!theirs.is_empty()).then(|| median(theirs)), ratio: (!ratios.is_empty()).then(|| median(ratios)) })
}

/// Prefill of each length from an empty cache, `rounds` times, sift then
/// llama.cpp in each round (after one untimed run of each): per
/// length the median tokens/s of each, the median of the rounds' ratios, and
/// sift's achieved GFLOP/s (`sift_engine::bench::prefill_flops`).
fn prefill_rounds(m: &mut Loaded, tokens: &[u32], lengths: &[usize], rounds: usize, llama: &mut Option<LlamaCpp>) -> Result<Vec<serde_json::Value>> {
    let mut out = vec![];
    for &n in lengths {
        let prompt = &tokens[..n];
        // One untimed run of each first (first-touch costs of this length).
        m.model.reset();
        m.model.forward(prompt, Logits::Last)?;
        if let Some(l) = llama.as_mut() {
            l.prefill_seconds(prompt)?;
        }
        let timed = || -> Result<f64> {
            m.model.reset();
            let t = Instant::now();
            m.model.forward(prompt, Logits::Last)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let p = paired_rounds(rounds, llama, timed, |l| l.prefill_seconds(prompt))?;
        let flops = sift_engine::bench::prefill_flops(&m.model.config, n);
        out.push(json!({
            "tokens": n,
            "sift_tokens_per_second": n as f64 / p.sift,
            "sift_gflops": flops / p.sift / 1e9,
            "llama_cpp_tokens_per_second": p.llama.map(|s| n as f64 / s),
            "ratio": p.ratio,
        }));
    }
    m.model.reset();
    Ok(out)
}

/// Greedy decode speed, `rounds` times, sift then llama.cpp in each round:
/// medians, and the median of the rounds' ratios.
fn decode_rounds(m: &mut Loaded, prompt: &[u32], steps: usize, rounds: usize, llama: &mut Option<LlamaCpp>) -> Result<serde_json::Value> {
    let timed = || Ok(steps as f64 / sift_engine::bench::decode_tokens_per_second(&mut m.model, prompt, steps)?);
    let p = paired_rounds(rounds, llama, timed, |l| l.decode_seconds(prompt, steps))?;
    Ok(json!({
        "sift_tokens_per_second": steps as f64 / p.sift,
        "llama_cpp_tokens_per_second": p.llama.map(|s| steps as f64 / s),
        "ratio": p.ratio,
    }))
}

/// The first model and every `--also` model, all loaded at once: prefill
/// once each, then `--rounds` rounds of decoding that visit every model in
/// turn (medians), so that the machine's drift falls on all of them alike;
/// llama.cpp on each GGUF.
fn compare(first: &mut Loaded, tokens: &[u32], decode_prompt: &[u32], first_llama: Option<serde_json::Value>, args: &Args, threads: usize) -> Result<Vec<Speeds>> {
    let longest = tokens.len();
    let ctx = longest.max(args.decode_context + args.decode_tokens).max(args.attribution_tokens) + 1;
    let mut others = vec![];
    for path in &args.also {
        let model = crate::common::ModelArgs { model: Some(path.clone()), ..args.model.clone() };
        let m = load_with(&model, ctx, false).with_context(|| format!("loading {}", path.display()))?;
        let mut t = m.tokenizer.encode(BENCH_TEXT)?;
        while t.len() < longest.max(args.decode_context) {
            t.extend_from_within(..);
        }
        let p = t[..args.decode_context].to_vec();
        t.truncate(longest);
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
                .then(|| llama_speeds(&m.path, threads, t, p, args.decode_tokens))
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
/// same prompt, both from an empty cache, and llama.cpp's prefill of it,
/// alternated and timed by median.
fn attribution_ratio(model: &mut sift_engine::model::GpuModel, attributor: &mut Attributor, prompt: &[u32], runs: usize, llama: &mut Option<LlamaCpp>) -> Result<serde_json::Value> {
    let prompt = &prompt[..prompt.len().min(attributor.max_tokens(model))];
    let opts = AttributeOptions::default();
    let (mut fwd, mut attr, mut peer) = (Vec::new(), Vec::new(), Vec::new());
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
        let l = llama.as_mut().map(|l| l.prefill_seconds(prompt)).transpose()?;
        // The first round compiles the attribution kernels (and warms llama.cpp).
        if i > 0 {
            fwd.push(f);
            attr.push(a);
            peer.extend(l);
        }
    }
    let (f, a) = (median(fwd), median(attr));
    let l = (!peer.is_empty()).then(|| median(peer));
    // One more pass, each dispatch timed: where its time goes.
    attributor.set_profiling(true);
    attributor.forget_cached_tokens();
    attributor.attribute(model, prompt, &Target::Next, &opts)?;
    attributor.set_profiling(false);
    let kernels = attributor.last_profile().map(profile_json);
    model.reset();
    Ok(json!({"tokens": prompt.len(), "forward_seconds": f, "attribution_seconds": a, "ratio": a / f, "runs": runs,
              "llama_cpp_prefill_seconds": l, "vs_llama_cpp_prefill": l.map(|l| l / a), "kernel_seconds": kernels}))
}

/// The attribution pass's GPU time per kernel role, largest first.
fn print_attribution_profile(k: &serde_json::Map<String, serde_json::Value>) {
    let mut rows: Vec<(&str, f64)> = k.iter().map(|(r, s)| (r.as_str(), s.as_f64().unwrap_or(0.0))).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|(_, s)| s).sum();
    println!("\nGPU time per kernel of one attribution pass (forward and backward, timed dispatch by dispatch)");
    for (role, s) in rows {
        println!("{role:<22} {:>9.1} ms {:>6.1}%", s * 1e3, 100.0 * s / total);
    }
    println!("{:<22} {:>9.1} ms", "total", total * 1e3);
}

fn profile_json(p: &[(&str, f64)]) -> serde_json::Value {
    p.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>().into()
}

/// llama.cpp's prefill and decode speed on another model of `--also`:
/// one warm-up, then one timed run of each.
fn llama_speeds(model: &std::path::Path, threads: usize, prefill: &[u32], decode_prompt: &[u32], steps: usize) -> Result<serde_json::Value> {
    let mut l = LlamaCpp::start(model, threads, prefill.len().max(decode_prompt.len() + steps) + 8)?;
    l.prefill_seconds(prefill)?;
    let prefill_s = l.prefill_seconds(prefill)?;
    let decode_s = l.decode_seconds(decode_prompt, steps)?;
    Ok(json!({"prefill_tokens_per_second": prefill.len() as f64 / prefill_s, "decode_tokens_per_second": steps as f64 / decode_s, "threads": threads}))
}
