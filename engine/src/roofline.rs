//! What bounds a decode step on an adapter: reading every weight once, at
//! the adapter's streaming speed, plus a fixed cost per dispatch. The bench
//! measures both here and sets the floor they give beside the measured step,
//! so a slow figure says whether the kernels or the adapter are at fault.

use crate::error::Result;
use crate::gpu::{read_buffer_u32, storage_buffer, zeroed_buffer, GpuContext};
use crate::kernels::peak_flops;
use crate::kernels::stream_read::{self, Shape};
use crate::kernels::{run_calls, Call};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// What one forward reads of the weights, and in how many dispatches. The
/// bytes are those of the linear layers' matrices (packed or f16, compacted
/// or dense); the gather kernels of a mask not yet compacted, the embedding
/// row and the KV cache are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    pub weight_bytes: u64,
    pub dispatches: usize,
}

/// The adapter's streaming read speed and cost per dispatch.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Roofline {
    /// Bytes a second of a kernel that only reads (the weight matvec's
    /// access pattern, a buffer larger than the caches).
    pub read_bytes_per_second: f64,
    /// Bytes of the buffer it read.
    pub read_bytes: u64,
    /// Seconds per dispatch of a kernel that does almost nothing, recorded
    /// and run in one pass as a forward's are.
    pub dispatch_seconds: f64,
    /// Seconds of one submission waited for and a readback of the logits:
    /// what every decode step pays once.
    pub round_trip_seconds: f64,
    /// Floating-point operations a second of a kernel that only multiplies
    /// and adds in registers (`kernels::peak_flops`): the bound of batched
    /// work, which reuses each weight it reads across many tokens.
    pub peak_flops_per_second: f64,
}

impl Roofline {
    /// The least time a forward of this footprint can take here.
    pub fn floor_seconds(&self, f: &Footprint) -> f64 {
        f.weight_bytes as f64 / self.read_bytes_per_second + f.dispatches as f64 * self.dispatch_seconds + self.round_trip_seconds
    }
}

/// Largest buffer the read is timed on: larger than any cache of a GPU or CPU.
const READ_BYTES: u64 = 256 << 20;
/// Dispatches timed for their fixed cost.
pub const DISPATCHES: u32 = 256;
/// Timed runs of each measurement; the fastest counts (shared machines are noisy).
const RUNS: usize = 5;

/// Times the three measurements on `ctx` (`cpu_style`: the adapter runs the
/// CPU-style kernels; `readback_bytes`: a step's logits). Takes a second or
/// two and up to 256 MiB of memory.
pub fn measure(ctx: &GpuContext, cpu_style: bool, readback_bytes: u64) -> Result<Roofline> {
    let shape = Shape::for_adapter(cpu_style);
    let groups = (READ_BYTES.min(ctx.max_binding_bytes()) / shape.chunk_bytes()) as u32;
    let read_bytes = groups as u64 * shape.chunk_bytes();
    // Random words, not zeros, which some GPUs compress.
    let mut words = vec![0u32; (read_bytes / 4) as usize];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut words[..]);
    let data = storage_buffer(ctx, "roofline data", &words);
    drop(words);
    let out = zeroed_buffer(ctx, "roofline out", groups as u64 * shape.lanes as u64 * 4);
    let read = stream_read::call(ctx, shape, &data, &out, groups);
    // Enough reads per run to take about 50 ms, so timer and submission costs vanish.
    let once = fastest(1, || dispatch(ctx, &read, 1))?;
    let reps = ((0.05 / once).ceil() as u32).clamp(1, 1000);
    let read_seconds = fastest(RUNS, || dispatch(ctx, &read, reps))? / reps as f64;
    let tiny = stream_read::call(ctx, Shape::tiny(), &data, &out, 1);
    let dispatch_seconds = fastest(RUNS, || dispatch(ctx, &tiny, DISPATCHES))? / DISPATCHES as f64;
    let readback = (readback_bytes / 4).clamp(1, read_bytes / 4) as usize;
    let round_trip_seconds = fastest(RUNS, || {
        ctx.queue.submit([ctx.device.create_command_encoder(&Default::default()).finish()]);
        read_buffer_u32(ctx, &data, 0, readback).map(drop)
    })?;
    let peak_flops_per_second = peak_flops(ctx)?;
    Ok(Roofline { read_bytes_per_second: read_bytes as f64 / read_seconds, read_bytes, dispatch_seconds, round_trip_seconds, peak_flops_per_second })
}

/// Workgroups of the arithmetic probe: enough to keep every core of a CPU
/// adapter, and a small GPU, busy.
const PEAK_GROUPS: u32 = 1024;

fn peak_flops(ctx: &GpuContext) -> Result<f64> {
    let coeffs = storage_buffer(ctx, "peak coeffs", &[1.0f32, 1.0]);
    let out = zeroed_buffer(ctx, "peak out", (PEAK_GROUPS * peak_flops::WORKGROUP * 4) as u64);
    // Steps per invocation for about 50 ms a run (the count stays exact in f32).
    let probe = peak_flops::call(ctx, &coeffs, &out, PEAK_GROUPS, 256);
    let once = fastest(1, || dispatch(ctx, &probe, 1))?;
    let iters = ((256.0 * 0.05 / once) as u32).clamp(256, 1 << 20);
    let run = peak_flops::call(ctx, &coeffs, &out, PEAK_GROUPS, iters);
    let seconds = fastest(RUNS, || dispatch(ctx, &run, 1))?;
    Ok(peak_flops::flops(PEAK_GROUPS, iters) as f64 / seconds)
}

/// `reps` dispatches of `call` recorded in one pass, submitted and waited for.
fn dispatch(ctx: &GpuContext, call: &Call, reps: u32) -> Result<()> {
    run_calls(ctx, &vec![call; reps as usize], 1);
    ctx.wait()
}

/// The fastest wall-clock time of `runs` runs of `work`, after one warm-up.
fn fastest(runs: usize, mut work: impl FnMut() -> Result<()>) -> Result<f64> {
    work()?;
    (0..runs).try_fold(f64::INFINITY, |best, _| {
        let t = Instant::now();
        work()?;
        Ok(best.min(t.elapsed().as_secs_f64()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_adds_reading_and_dispatching() {
        let r = Roofline { read_bytes_per_second: 1e9, read_bytes: 1 << 20, dispatch_seconds: 20e-6, round_trip_seconds: 3e-4, peak_flops_per_second: 1e10 };
        let f = Footprint { weight_bytes: 50_000_000, dispatches: 100 };
        assert!((r.floor_seconds(&f) - (0.05 + 0.002 + 0.0003)).abs() < 1e-12);
    }

    /// On the test adapter the measurements are finite and positive, and the
    /// read covered whole chunks of the matvec's pattern.
    #[test]
    fn measures_a_positive_speed_and_dispatch_cost() {
        let ctx = crate::testing::gpu();
        let cpu = ctx.is_software();
        let r = measure(&ctx, cpu, 200_000).unwrap();
        assert!(r.read_bytes_per_second.is_finite() && r.read_bytes_per_second > 1e6, "{r:?}");
        assert!(r.dispatch_seconds.is_finite() && r.dispatch_seconds > 0.0 && r.dispatch_seconds < 0.1, "{r:?}");
        assert!(r.round_trip_seconds.is_finite() && r.round_trip_seconds > 0.0 && r.round_trip_seconds < 1.0, "{r:?}");
        // At least a core's scalar rate, at most a large GPU's.
        assert!(r.peak_flops_per_second > 1e9 && r.peak_flops_per_second < 1e15, "{r:?}");
        assert_eq!(r.read_bytes % Shape::for_adapter(cpu).chunk_bytes(), 0);
        assert!(r.read_bytes >= 64 << 20, "the read must outgrow the caches: {r:?}");
    }
}
