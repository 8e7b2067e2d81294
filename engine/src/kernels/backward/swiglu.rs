//! SwiGLU backward (`shaders/swiglu_backward.wgsl`): neuron-output gradients
//! to the fused [gate | up] projection's output gradients.

use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};
use crate::kernels::Call;

/// `factors[factor_offset ..]` are the per-neuron factors the forward scaled
/// rows t >= scaling.t0 by (1 for an unscaled layer). `dim` and
/// `factor_offset` are multiples of 4 (the kernel reads vec4s).
#[allow(clippy::too_many_arguments)]
pub fn call(
    ctx: &GpuContext,
    dim: usize,
    factor_offset: usize,
    step: &wgpu::Buffer,
    scaling: &wgpu::Buffer,
    gate_up: &wgpu::Buffer,
    dh: &wgpu::Buffer,
    factors: &wgpu::Buffer,
    dgate_up: &wgpu::Buffer,
) -> Call {
    assert!(dim.is_multiple_of(4) && factor_offset.is_multiple_of(4), "swiglu_backward reads vec4s: {dim} neurons at factor offset {factor_offset}");
    let kernel = Kernel::get(
        ctx,
        "swiglu_backward",
        include_str!("../../../../shaders/swiglu_backward.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "swiglu_backward params", &[dim as u32, factor_offset as u32, 0, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, step, scaling, gate_up, dh, factors, dgate_up]),
        kernel,
        grid: Box::new(move |n| [(dim as u32 / 4).div_ceil(64), n, 1]),
    }
}

/// (dgate, dup) for h = silu(gate) * up.
pub fn reference(gate: &[f32], up: &[f32], dh: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let sig = |g: f32| 1.0 / (1.0 + (-g).exp());
    let dgate = gate.iter().zip(up).zip(dh).map(|((&g, &u), &d)| d * u * sig(g) * (1.0 + g * (1.0 - sig(g)))).collect();
    let dup = gate.iter().zip(dh).map(|(&g, &d)| d * g * sig(g)).collect();
    (dgate, dup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::backward::finite_diff;
    use crate::kernels::{run_calls, swiglu, test_util::*, Step};

    #[test]
    fn swiglu_backward_matches_reference_and_finite_differences() {
        let ctx = crate::testing::gpu();
        let (t, dim, t0) = (5usize, 300usize, 2usize);
        let g: Vec<f32> = random(t * dim, 51).iter().map(|v| v * 8.0).collect();
        let (u, dh, f) = (random(t * dim, 52), random(t * dim, 53), random(dim + 8, 54));
        let gate_up: Vec<f32> = (0..t).flat_map(|r| g[r * dim..(r + 1) * dim].iter().chain(&u[r * dim..(r + 1) * dim]).copied()).collect();
        let step = uniform_buffer(&ctx, "step", &Step::new(t, 0));
        let scaling = uniform_buffer(&ctx, "scaling", &[t0 as u32, 0, 0, 0]);
        let bufs = [&gate_up, &dh, &f].map(|v| storage_buffer(&ctx, "in", v));
        let out = zeroed_buffer(&ctx, "dgate_up", (2 * t * dim * 4) as u64);
        run_calls(&ctx, &[&call(&ctx, dim, 8, &step, &scaling, &bufs[0], &bufs[1], &bufs[2], &out)], t as u32);
        let got = read_buffer_f32(&ctx, &out, 0, 2 * t * dim).unwrap();
        // Rows from t0 on carry the factor (offset 8 into the factor buffer).
        let scaled: Vec<f32> = dh.iter().enumerate().map(|(i, &d)| if i / dim >= t0 { d * f[8 + i % dim] } else { d }).collect();
        let (dg, du) = reference(&g, &u, &scaled);
        let want: Vec<f32> = (0..t).flat_map(|r| dg[r * dim..(r + 1) * dim].iter().chain(&du[r * dim..(r + 1) * dim]).copied()).collect();
        // exp and a few products: 1e-5.
        assert!(max_err(&got, &want) < 1e-5);
        let (g, u, dh) = (&g[..40], &u[..40], &dh[..40]);
        let (dg, du) = reference(g, u, dh);
        assert!(finite_diff::check(|x| swiglu::reference(x, u), g, dh, &dg, 1e-3) < 1e-3, "d gate");
        assert!(finite_diff::check(|x| swiglu::reference(g, x), u, dh, &du, 1e-3) < 1e-3, "d up");
    }
}
