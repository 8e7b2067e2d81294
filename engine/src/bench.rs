//! Measurements the apps' benchmarks share: decode speed dense and with
//! prompt-mode masks at several activation ratios, each beside a dense decode
//! of the same steps measured just before it (ratios in one run, because
//! machines are shared and noisy), and per-kernel GPU time where the adapter
//! has timestamp queries.

use crate::attribution::{Attributor, Metric};
use crate::error::{Result, SiftError};
use crate::model::sparse::{set_prompt_mask, PromptTarget, Ratios};
use crate::model::{GpuModel, Logits};
use crate::roofline::{Footprint, Roofline};
use crate::sampling::argmax;
use serde::Serialize;
use std::time::Instant;

/// GPU seconds per kernel role of one forward.
pub type Profile = Vec<(&'static str, f64)>;

/// Kernel roles of the MLP, dense and sparse (a compacted mask's two
/// projections apart or fused, the gathering modes' kernels together).
pub const MLP_KERNELS: [&str; 8] = ["gate_up", "swiglu", "down", "sparse_gate_up", "sparse_down", "sparse_mlp", "fused_mlp", "cats_mlp"];

/// One activation ratio of a sweep: tokens/s and seconds are medians over
/// the rounds, speedups the median of each round's ratio to its dense decode.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub ar: f64,
    pub dense_tokens_per_second: f64,
    /// MLP neurons masked, every head kept.
    pub sparse_tokens_per_second: f64,
    pub speedup: f64,
    /// Heads masked at the same AR too (the paper's single AR).
    pub sparse_with_heads_tokens_per_second: f64,
    pub speedup_with_heads: f64,
    /// Setting each prompt-mode mask, once per generation and outside the
    /// decode timing: the attribution pass over the prompt, the selection and
    /// the compaction of the active units' weights.
    pub mask_seconds: f64,
    pub mask_with_heads_seconds: f64,
    /// MLP GPU time of one decode step (NaN without timestamp queries),
    /// medians over the rounds, and the median of each round's sparse share
    /// of its dense MLP time.
    pub dense_mlp_ms: f64,
    pub sparse_mlp_ms: f64,
    pub sparse_mlp_share: f64,
    /// Weights read and dispatches of one sparse decode step (MLP-only
    /// masks, then heads too), for the roofline.
    pub sparse_footprint: Footprint,
    pub sparse_with_heads_footprint: Footprint,
    /// Per-kernel GPU seconds of one sparse decode step (MLP-only masks).
    pub sparse_kernel_seconds: Option<Profile>,
    /// Same, with heads masked too.
    pub sparse_with_heads_kernel_seconds: Option<Profile>,
}

/// Floating-point operations of a prefill of `n` tokens from an empty cache:
/// every layer's projections (2 per weight per token), attention's scores
/// and weighted values (2 * 2 * head_dim per head per visible key), and the
/// output head for the last token only (prefill keeps one row of logits).
/// Norms, RoPE and the activation are left out: a few per element.
pub fn prefill_flops(c: &crate::model::Config, n: usize) -> f64 {
    let per_layer_weights = (c.q_dim() + 2 * c.kv_dim()) * c.dim + c.dim * c.q_dim() + 3 * c.ffn_dim * c.dim;
    let projections = 2.0 * (c.n_layers * per_layer_weights * n) as f64;
    // Token t sees t + 1 keys: n (n + 1) / 2 query-key pairs a head.
    let pairs = (n * (n + 1) / 2) as f64;
    let attention = 4.0 * (c.n_layers * c.n_heads * c.head_dim) as f64 * pairs;
    projections + attention + 2.0 * (c.vocab_size * c.dim) as f64
}

/// A role's seconds in a profile (None where it does not run).
fn seconds_of(p: &[(&str, f64)], role: &str) -> Option<f64> {
    p.iter().find(|(n, _)| *n == role).map(|(_, s)| *s)
}

/// A profile's seconds over all its roles.
fn total_seconds(p: &[(&str, f64)]) -> f64 {
    p.iter().map(|(_, s)| s).sum()
}

/// Milliseconds of the MLP kernels in a profile.
pub fn mlp_ms(p: &Option<Profile>) -> f64 {
    p.as_ref().map_or(f64::NAN, |p| p.iter().filter(|(k, _)| MLP_KERNELS.contains(k)).map(|(_, s)| s * 1e3).sum())
}

/// Decodes `steps` greedy tokens after `prompt`'s last token (the rest is in
/// the cache already); returns tokens/s and the profile of one more step.
pub fn timed_decode(model: &mut GpuModel, prompt: &[u32], steps: usize) -> Result<(f64, Option<Profile>)> {
    let (tps, last) = decode_speed(model, prompt, steps)?;
    Ok((tps, median_profile(model, last, PROFILE_RUNS)?))
}

/// Tokens/s of `steps` greedy decode steps after `prompt` (from an empty
/// cache: `prompt` but its last token is prefilled first, untimed).
pub fn decode_tokens_per_second(model: &mut GpuModel, prompt: &[u32], steps: usize) -> Result<f64> {
    model.reset();
    if prompt.len() > 1 {
        model.forward(&prompt[..prompt.len() - 1], Logits::Last)?;
    }
    Ok(decode_speed(model, prompt, steps)?.0)
}

/// Tokens/s of `steps` greedy decode steps after `prompt`'s last token, and
/// the token they end on.
fn decode_speed(model: &mut GpuModel, prompt: &[u32], steps: usize) -> Result<(f64, u32)> {
    let logits = model.forward(&prompt[prompt.len() - 1..], Logits::Last)?;
    timed_steps(model, &logits, steps)
}

/// Tokens/s of `steps` greedy decode steps from `logits` (the last token's),
/// and the token they end on.
fn timed_steps(model: &mut GpuModel, logits: &[f32], steps: usize) -> Result<(f64, u32)> {
    let mut next = argmax(logits);
    let t = Instant::now();
    for _ in 0..steps {
        next = argmax(&model.forward(&[next], Logits::Last)?);
    }
    Ok((steps as f64 / t.elapsed().as_secs_f64(), next))
}

/// The median of a few values (the upper one of an even count's middle two).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Profiled runs of a step: one step's timestamps are noisy on a shared machine.
const PROFILE_RUNS: usize = 5;

/// The per-kernel median over `runs` profiles of the same decode step
/// (`token` at the current position, rewound after each).
pub fn median_profile(model: &mut GpuModel, token: u32, runs: usize) -> Result<Option<Profile>> {
    let pos = model.position();
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        let Some(p) = model.profile(&[token])? else { return Ok(None) };
        model.rewind(pos)?;
        all.push(p);
    }
    let median = all[0]
        .iter()
        .map(|&(name, _)| (name, median(all.iter().map(|p| seconds_of(p, name).unwrap_or(0.0)).collect())))
        .collect();
    Ok(Some(median))
}

/// Rounds of a sweep's AR: dense, MLP-masked and heads-and-MLP-masked
/// decoding alternate this many times, and the medians count, so that a
/// shared machine's drift during the run falls on all three alike.
pub const SWEEP_ROUNDS: usize = 3;

/// Prompt-mode sparse decoding (corrected GxO over the prompt) at each of
/// `ratios`, each beside a dense decode ([`SWEEP_ROUNDS`] alternating
/// rounds, each profiled; the per-kernel profiles kept are the first
/// round's). `model` must have sparse decoding enabled. Leaves the model
/// dense with an empty cache.
pub fn sparse_sweep(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], steps: usize, ratios: &[f64], mut progress: impl FnMut(usize)) -> Result<Vec<SweepRow>> {
    if prompt.len() < 3 || steps == 0 {
        return Err(SiftError::InvalidInput("a sweep needs a prompt of 3 or more tokens and at least one step".into()));
    }
    let context = &prompt[..prompt.len() - 1];
    let mut set_mask = |model: &mut GpuModel, ratios| -> Result<f64> {
        let t = Instant::now();
        set_prompt_mask(model, attributor, context, Metric::CorrectedGxo, ratios, PromptTarget::Next)?;
        model.ctx.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut rows = Vec::new();
    for (i, &ar) in ratios.iter().enumerate() {
        // Per round: tokens/s dense, MLP-masked, heads and MLP masked;
        // seconds setting each mask; dense and MLP-masked MLP ms.
        let mut runs: Vec<[f64; 7]> = Vec::new();
        let mut first = None;
        for round in 0..SWEEP_ROUNDS {
            model.disable_sparsity();
            model.reset();
            model.forward(context, Logits::Last)?;
            // Tokens/s, and the profile of one more step.
            let timed = |model: &mut GpuModel| -> Result<(f64, Option<Profile>)> {
                let (tps, end) = decode_speed(model, prompt, steps)?;
                Ok((tps, median_profile(model, end, PROFILE_RUNS)?))
            };
            let (dense, dense_prof) = timed(model)?;
            let mask = set_mask(model, Ratios::mlp(ar))?;
            let sparse_footprint = model.decode_footprint();
            let (sparse, sparse_prof) = timed(model)?;
            let mask_with_heads = set_mask(model, Ratios::both(ar))?;
            let both_footprint = model.decode_footprint();
            let (both, both_prof) = timed(model)?;
            runs.push([dense, sparse, both, mask, mask_with_heads, mlp_ms(&dense_prof), mlp_ms(&sparse_prof)]);
            if round == 0 {
                first = Some((sparse_prof, both_prof, sparse_footprint, both_footprint));
            }
        }
        let (sparse_prof, both_prof, sparse_footprint, sparse_with_heads_footprint) = first.expect("at least one round");
        let column = |c: usize| median(runs.iter().map(|r| r[c]).collect());
        let ratio = |c: usize| median(runs.iter().map(|r| r[c] / r[0]).collect());
        rows.push(SweepRow {
            ar,
            dense_tokens_per_second: column(0),
            sparse_tokens_per_second: column(1),
            speedup: ratio(1),
            sparse_with_heads_tokens_per_second: column(2),
            speedup_with_heads: ratio(2),
            mask_seconds: column(3),
            mask_with_heads_seconds: column(4),
            dense_mlp_ms: column(5),
            sparse_mlp_ms: column(6),
            sparse_mlp_share: median(runs.iter().map(|r| r[6] / r[5]).collect()),
            sparse_footprint,
            sparse_with_heads_footprint,
            sparse_kernel_seconds: sparse_prof,
            sparse_with_heads_kernel_seconds: both_prof,
        });
        progress(i + 1);
    }
    model.disable_sparsity();
    model.reset();
    Ok(rows)
}

/// The sweep as a table.
pub fn print_sweep(rows: &[SweepRow]) {
    println!("\nsparse decoding, prompt mode (corrected GxO over the prompt); MLP = neurons only, +heads = heads at the same AR");
    println!("mask ms: setting the mask once per prompt (attribution, selection, compaction), not part of decode");
    println!("tok/s and speedups: medians of {SWEEP_ROUNDS} rounds alternating dense and sparse decoding, MLP ms and sparse/dense too (of each round's profiles)");
    println!("{:>5} {:>12} {:>12} {:>9} {:>14} {:>14} {:>10} {:>14} {:>8}", "AR", "dense tok/s", "MLP tok/s", "speedup", "dense MLP ms", "sparse MLP ms", "sparse/dense", "+heads speedup", "mask ms");
    for r in rows {
        println!(
            "{:>5.2} {:>12.1} {:>12.1} {:>8.2}x {:>14.2} {:>14.2} {:>9.0}% {:>13.2}x {:>8.0}",
            r.ar,
            r.dense_tokens_per_second,
            r.sparse_tokens_per_second,
            r.speedup,
            r.dense_mlp_ms,
            r.sparse_mlp_ms,
            100.0 * r.sparse_mlp_share,
            r.speedup_with_heads,
            r.mask_with_heads_seconds * 1e3
        );
    }
}

/// One decode step beside its roofline floor.
#[derive(Clone, Debug, Serialize)]
pub struct FloorRow {
    pub step: String,
    pub footprint: Footprint,
    pub floor_seconds: f64,
    /// Wall-clock seconds a step took (1 / tokens per second).
    pub measured_seconds: f64,
}

impl FloorRow {
    pub fn new(roofline: &Roofline, step: impl Into<String>, footprint: Footprint, tokens_per_second: f64) -> FloorRow {
        FloorRow { step: step.into(), footprint, floor_seconds: roofline.floor_seconds(&footprint), measured_seconds: 1.0 / tokens_per_second }
    }
}

/// The dense step, and each swept AR with heads and MLP masked, beside their floors.
pub fn floor_rows(roofline: &Roofline, dense: Footprint, dense_tokens_per_second: f64, sweep: &[SweepRow]) -> Vec<FloorRow> {
    let mut rows = vec![FloorRow::new(roofline, "dense", dense, dense_tokens_per_second)];
    rows.extend(sweep.iter().map(|r| FloorRow::new(roofline, format!("AR {:.2}, heads + MLP", r.ar), r.sparse_with_heads_footprint, r.sparse_with_heads_tokens_per_second)));
    rows
}

/// The roofline as a table: what the adapter can do, and how close each step comes.
pub fn print_roofline(roofline: &Roofline, rows: &[FloorRow]) {
    println!(
        "\nroofline: this adapter streams reads at {:.1} GB/s (a kernel that only reads {} MiB), a dispatch costs {:.1} us (a run of {} empty ones),",
        roofline.read_bytes_per_second / 1e9,
        roofline.read_bytes >> 20,
        roofline.dispatch_seconds * 1e6,
        crate::roofline::DISPATCHES
    );
    println!("and a submission with the logits' readback {:.2} ms. A decode step can take no less than the three together", roofline.round_trip_seconds * 1e3);
    println!("(its weights at that speed, its dispatches, one round trip; the KV cache and activations are not counted)");
    println!("{:<22} {:>10} {:>11} {:>10} {:>12} {:>15}", "decode step", "weights MB", "dispatches", "floor ms", "measured ms", "measured/floor");
    for r in rows {
        println!(
            "{:<22} {:>10.1} {:>11} {:>10.2} {:>12.2} {:>14.2}x",
            r.step,
            r.footprint.weight_bytes as f64 / 1e6,
            r.footprint.dispatches,
            r.floor_seconds * 1e3,
            r.measured_seconds * 1e3,
            r.measured_seconds / r.floor_seconds
        );
    }
}

/// The rows of [`print_profile`]: every kernel role of either profile,
/// largest decode time first, with its decode and prefill seconds (None where
/// it does not run: RoPE is fused into decode's q/k/v on some adapters).
pub fn profile_rows<'a>(decode: &[(&'a str, f64)], prefill: &[(&'a str, f64)]) -> Vec<(&'a str, Option<f64>, Option<f64>)> {
    let mut names: Vec<&str> = decode.iter().map(|(n, _)| *n).collect();
    names.extend(prefill.iter().map(|(n, _)| *n).filter(|n| seconds_of(decode, n).is_none()));
    let mut rows: Vec<_> = names.into_iter().map(|n| (n, seconds_of(decode, n), seconds_of(prefill, n))).collect();
    rows.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)));
    rows
}

/// A table of GPU time per kernel role, largest decode share first, with
/// the prefill's times (and its token count) beside when given.
pub fn print_profile(decode: &[(&str, f64)], prefill: Option<(&[(&str, f64)], usize)>) {
    let dt = total_seconds(decode);
    let cell = |secs: Option<f64>, total: f64| match secs {
        Some(s) => format!("{:>14.2} {:>6.1}%", s * 1e3, 100.0 * s / total),
        None => format!("{:>14} {:>7}", "-", ""),
    };
    println!("\nGPU time per kernel (timestamp queries)");
    match prefill {
        Some((_, batch)) => println!("{:<12} {:>14} {:>7} {:>22} {:>7}", "kernel", "decode step ms", "share", format!("prefill {batch} tok ms"), "share"),
        None => println!("{:<12} {:>14} {:>7}", "kernel", "decode step ms", "share"),
    }
    for (name, d, p) in profile_rows(decode, prefill.map_or(&[], |(p, _)| p)) {
        print!("{:<12} {}", name, cell(d, dt));
        if let Some((all, _)) = prefill {
            print!(" {:>8}{}", "", cell(p, total_seconds(all)));
        }
        println!();
    }
    print!("{:<12} {:>14.2}", "total", dt * 1e3);
    if let Some((p, _)) = prefill {
        print!(" {:>7} {:>22.1}", "", total_seconds(p) * 1e3);
    }
    println!();
}

/// Every kernel role of a dense decode step and of the sparse steps of one
/// AR (MLP-only masks, then heads too), dense roles first, then the roles
/// only a sparse step runs, each with its seconds in the three profiles.
pub fn sparse_profile_rows<'a>(dense: &[(&'a str, f64)], mlp: &[(&'a str, f64)], both: &[(&'a str, f64)]) -> Vec<(&'a str, [Option<f64>; 3])> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in dense.iter().chain(mlp).chain(both) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names.into_iter().map(|n| (n, [seconds_of(dense, n), seconds_of(mlp, n), seconds_of(both, n)])).collect()
}

/// A dense and a sparse decode step, kernel by kernel (ms).
pub fn print_step_profiles(title: &str, dense: &[(&str, f64)], sparse: &[(&str, f64)]) {
    println!("\nGPU time per kernel of a decode step (ms): dense and {title}");
    println!("{:<16} {:>10} {:>10}", "kernel", "dense", "sparse");
    let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.2}", s * 1e3));
    for (name, [d, s, _]) in sparse_profile_rows(dense, sparse, &[]) {
        println!("{:<16} {:>10} {:>10}", name, ms(d), ms(s));
    }
    println!("{:<16} {:>10} {:>10}", "total", ms(Some(total_seconds(dense))), ms(Some(total_seconds(sparse))));
}

/// The sparse decode steps of one sweep row beside the dense step, kernel
/// by kernel (ms): where the time goes at the ratio a target names.
pub fn print_sparse_profile(dense: &[(&str, f64)], row: &SweepRow) {
    let (Some(mlp), Some(both)) = (&row.sparse_kernel_seconds, &row.sparse_with_heads_kernel_seconds) else { return };
    println!("\nGPU time per kernel of a decode step at AR {:.2} (ms; sparse: the sweep's first round)", row.ar);
    println!("{:<16} {:>10} {:>10} {:>12}", "kernel", "dense", "MLP only", "heads + MLP");
    let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.2}", s * 1e3));
    for (name, [d, m, b]) in sparse_profile_rows(dense, mlp, both) {
        println!("{:<16} {:>10} {:>10} {:>12}", name, ms(d), ms(m), ms(b));
    }
    let total = |p| Some(total_seconds(p));
    println!("{:<16} {:>10} {:>10} {:>12}", "total", ms(total(dense)), ms(total(mlp)), ms(total(both)));
}

/// The activation ratios the benchmarks sweep.
pub const SWEEP_RATIOS: [f64; 5] = [1.0, 0.5, 0.3, 0.2, 0.1];

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's shapes, counted by hand: 3,538,944 weights a layer
    /// (q/k/v 576 x 960, o 576 x 576, gate/up/down 3 x 1536 x 576), 30
    /// layers; 9 heads of 64; a vocabulary of 49,152.
    #[test]
    fn prefill_flops_count_projections_attention_and_the_head() {
        let c = crate::model::Config { n_layers: 30, dim: 576, ffn_dim: 1536, n_heads: 9, n_kv_heads: 3, head_dim: 64, vocab_size: 49152, ..crate::testing::tiny_config(crate::kernels::rope::RopeStyle::Interleaved) };
        let want = 2.0 * 30.0 * 3_538_944.0 * 512.0 + 4.0 * 30.0 * 9.0 * 64.0 * (512.0 * 513.0 / 2.0) + 2.0 * 49152.0 * 576.0;
        assert_eq!(prefill_flops(&c, 512), want);
        // About 0.23 GFLOP a token at 512.
        assert!((prefill_flops(&c, 512) / 512.0 / 1e9 - 0.23).abs() < 0.01);
    }

    /// Dense roles keep their order; roles only sparse steps run follow, once.
    #[test]
    fn sparse_profile_rows_cover_all_three_steps() {
        let dense = [("qkv", 3.0), ("gate_up", 7.0), ("down", 4.0)];
        let mlp = [("qkv", 3.0), ("sparse_gate_up", 2.0), ("sparse_down", 3.0)];
        let both = [("sparse_qkv", 2.0), ("sparse_gate_up", 2.5), ("sparse_down", 2.5)];
        let rows = sparse_profile_rows(&dense, &mlp, &both);
        let names: Vec<&str> = rows.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["qkv", "gate_up", "down", "sparse_gate_up", "sparse_down", "sparse_qkv"]);
        assert_eq!(rows[0].1, [Some(3.0), Some(3.0), None]);
        assert_eq!(rows[3].1, [None, Some(2.0), Some(2.5)]);
        assert_eq!(rows[5].1, [None, None, Some(2.0)]);
    }

    #[test]
    fn mlp_time_sums_the_mlp_roles_only() {
        let profile = vec![("qkv", 2e-3), ("sparse_gate_up", 1e-3), ("sparse_down", 2e-3), ("lm_head", 4e-3), ("sparse_mlp", 0.5e-3)];
        assert!((mlp_ms(&Some(profile)) - 3.5).abs() < 1e-9);
        assert!(mlp_ms(&None).is_nan());
    }

    /// A role that runs in prefill only (RoPE, fused into decode's q/k/v)
    /// still gets its row; rows go by decode time, largest first.
    #[test]
    fn profile_rows_cover_both_profiles() {
        let decode = [("qkv", 2.0), ("gate_up", 7.0)];
        let prefill = [("qkv", 20.0), ("rope", 1.0), ("gate_up", 70.0)];
        let rows = profile_rows(&decode, &prefill);
        assert_eq!(rows, vec![("gate_up", Some(7.0), Some(70.0)), ("qkv", Some(2.0), Some(20.0)), ("rope", None, Some(1.0))]);
        assert_eq!(profile_rows(&decode, &[]), vec![("gate_up", Some(7.0), None), ("qkv", Some(2.0), None)]);
    }
}

/// A sparsity setting's decode speed against dense, measured in one run.
#[derive(Clone, Debug, Serialize)]
pub struct SettingSpeed {
    pub dense_tokens_per_second: f64,
    pub sparse_tokens_per_second: f64,
    /// The median of the rounds' sparse / dense ratios.
    pub speedup: f64,
    /// GPU time per kernel of one dense and one sparse decode step (medians
    /// of a few profiled runs; None without timestamp queries).
    pub dense_kernel_seconds: Option<Profile>,
    pub sparse_kernel_seconds: Option<Profile>,
}

/// Decode speed of a sparsity setting against dense, in one run: after
/// `prompt` (set up as `eval::decode` does: prompt mode attributes over it, a
/// threshold rule runs from its last token), `steps` greedy tokens under the
/// setting and, alternating with them, dense; `rounds` each, medians. The
/// mask's set-up (attribution) is not counted. Leaves the model dense with an
/// empty cache.
pub fn setting_speed(model: &mut GpuModel, attributor: &mut Attributor, prompt: &[u32], steps: usize, rounds: usize, sparsity: &crate::eval::Sparsity) -> Result<SettingSpeed> {
    if prompt.len() < 2 || steps == 0 || rounds == 0 {
        return Err(SiftError::InvalidInput("a speed measurement needs a prompt of 2 or more tokens, a step and a round".into()));
    }
    // Tokens/s, and with `profile` the per-kernel times of one more step.
    let mut timed = |model: &mut GpuModel, s: &crate::eval::Sparsity, profile: bool| -> Result<(f64, Option<Profile>)> {
        let logits = crate::eval::start(model, attributor, prompt, s, crate::eval::RuleScope::Decoding)?;
        let (tps, next) = timed_steps(model, &logits, steps)?;
        let kernels = if profile { median_profile(model, next, PROFILE_RUNS)? } else { None };
        model.disable_sparsity();
        model.reset();
        Ok((tps, kernels))
    };
    // Warm both paths (pipelines compile on first use).
    timed(model, sparsity, false)?;
    let mut runs = Vec::with_capacity(rounds);
    let mut profiles = (None, None);
    for round in 0..rounds {
        let (dense, dense_kernels) = timed(model, &crate::eval::Sparsity::Off, round == 0)?;
        let (sparse, sparse_kernels) = timed(model, sparsity, round == 0)?;
        runs.push([dense, sparse]);
        if round == 0 {
            profiles = (dense_kernels, sparse_kernels);
        }
    }
    Ok(SettingSpeed {
        dense_tokens_per_second: median(runs.iter().map(|r| r[0]).collect()),
        sparse_tokens_per_second: median(runs.iter().map(|r| r[1]).collect()),
        speedup: median(runs.iter().map(|r| r[1] / r[0]).collect()),
        dense_kernel_seconds: profiles.0,
        sparse_kernel_seconds: profiles.1,
    })
}
