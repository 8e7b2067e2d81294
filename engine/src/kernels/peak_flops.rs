//! A kernel that only multiplies and adds in registers
//! (`shaders/peak_flops.wgsl`): the roofline (`crate::roofline`) times it to
//! learn the adapter's arithmetic peak, the bound of batched work (prefill,
//! scoring, the attribution pass) once its weights are reused enough.

use super::{spread, Call};
use crate::gpu::{Binding, GpuContext, Kernel};

/// Invocations per workgroup (the shader's workgroup size).
pub const WORKGROUP: u32 = 64;
/// Floating-point operations one step of one invocation does: 3 vec4 FMAs.
pub const FLOPS_PER_STEP: u64 = 3 * 4 * 2;

/// `groups` workgroups of `iters` steps each; invocation i writes `out[i]`,
/// which is `iters` when every step ran. `coeffs` holds [1.0, 1.0].
pub fn call(ctx: &GpuContext, coeffs: &wgpu::Buffer, out: &wgpu::Buffer, groups: u32, iters: u32) -> Call {
    assert!(groups as u64 * WORKGROUP as u64 * 4 <= out.size(), "peak_flops: the output is too small");
    let kernel = Kernel::specialized(ctx, "peak_flops", include_str!("../../../shaders/peak_flops.wgsl"), &[Binding::ReadOnly, Binding::ReadWrite], &[("ITERS", iters as f64)]);
    Call {
        group: kernel.bind(ctx, &[coeffs, out]),
        kernel,
        grid: Box::new(move |_| {
            let [x, y] = spread(groups);
            [x, y, 1]
        }),
    }
}

/// Floating-point operations of one dispatch of [`call`].
pub fn flops(groups: u32, iters: u32) -> u64 {
    groups as u64 * WORKGROUP as u64 * iters as u64 * FLOPS_PER_STEP
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::run_calls;

    /// Every invocation ran every step: with m = c = 1 each chain counts its
    /// steps exactly (f32 holds these integers), so a skipped or folded loop
    /// shows.
    #[test]
    fn every_invocation_runs_every_step() {
        let ctx = crate::testing::gpu();
        let (groups, iters) = (3u32, 777u32);
        let coeffs = storage_buffer(&ctx, "coeffs", &[1.0f32, 1.0]);
        let out = zeroed_buffer(&ctx, "out", (groups * WORKGROUP * 4) as u64);
        run_calls(&ctx, &[&call(&ctx, &coeffs, &out, groups, iters)], 1);
        let got = read_buffer_f32(&ctx, &out, 0, (groups * WORKGROUP) as usize).unwrap();
        assert!(got.iter().all(|&v| v == iters as f32), "{:?}", &got[..8]);
        assert_eq!(flops(groups, iters), 3 * 64 * 777 * 24);
    }
}
