//! RMSNorm backward (`shaders/rmsnorm_backward.wgsl`), one workgroup per row.

use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};
use crate::kernels::Call;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    dim: u32,
    eps: f32,
    accumulate: u32,
    _pad: u32,
}

/// dx (+)= the gradient through RMSNorm at input `x` for output gradient `dy`;
/// `accumulate` adds it to dx (the residual stream's gradient). `dim` is a
/// multiple of 4 (the kernel reads vec4s).
#[allow(clippy::too_many_arguments)]
pub fn call(ctx: &GpuContext, dim: usize, eps: f32, accumulate: bool, step: &wgpu::Buffer, x: &wgpu::Buffer, weight: &wgpu::Buffer, dy: &wgpu::Buffer, dx: &wgpu::Buffer) -> Call {
    assert!(dim.is_multiple_of(4), "rmsnorm_backward: width {dim} is not a multiple of 4");
    let kernel = Kernel::get(
        ctx,
        "rmsnorm_backward",
        include_str!("../../../../shaders/rmsnorm_backward.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "rmsnorm_backward params", &Params { dim: dim as u32, eps, accumulate: accumulate as u32, _pad: 0 });
    Call {
        group: kernel.bind(ctx, &[&params, step, x, weight, dy, dx]),
        kernel,
        grid: Box::new(|n| [n, 1, 1]),
    }
}

pub fn reference(x: &[f32], weight: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
    let dim = weight.len();
    let mut dx = Vec::with_capacity(x.len());
    for (row, drow) in x.chunks(dim).zip(dy.chunks(dim)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let r = 1.0 / (ms + eps).sqrt();
        let dot: f32 = row.iter().zip(drow).zip(weight).map(|((x, d), w)| x * d * w).sum();
        let c = r * r * r * dot / dim as f32;
        dx.extend(row.iter().zip(drow).zip(weight).map(|((x, d), w)| r * w * d - x * c));
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer};
    use crate::kernels::backward::finite_diff;
    use crate::kernels::{rmsnorm, run_calls, test_util::*, Step};

    #[test]
    fn rmsnorm_backward_matches_reference_and_finite_differences() {
        let ctx = crate::testing::gpu();
        for &(t, dim) in &[(1usize, 576usize), (7, 100)] {
            let (x, w, dy, prior) = (random(t * dim, 41), random(dim, 42), random(t * dim, 43), random(t * dim, 44));
            let step = uniform_buffer(&ctx, "step", &Step::new(t, 0));
            let bufs = [&x, &w, &dy].map(|v| storage_buffer(&ctx, "in", v));
            for accumulate in [false, true] {
                let dx = storage_buffer(&ctx, "dx", &prior);
                run_calls(&ctx, &[&call(&ctx, dim, 1e-5, accumulate, &step, &bufs[0], &bufs[1], &bufs[2], &dx)], t as u32);
                let got = read_buffer_f32(&ctx, &dx, 0, t * dim).unwrap();
                let mut want = reference(&x, &w, &dy, 1e-5);
                if accumulate {
                    want.iter_mut().zip(&prior).for_each(|(a, b)| *a += b);
                }
                // Two reductions in another order: 1e-5.
                assert!(max_err(&got, &want) < 1e-5, "t={t} dim={dim} accumulate={accumulate}");
            }
        }
        let (x, w, dy) = (random(2 * 24, 45), random(24, 46), random(2 * 24, 47));
        let err = finite_diff::check(|x| rmsnorm::reference(x, &w, 1e-5), &x, &dy, &reference(&x, &w, &dy, 1e-5), 1e-3);
        assert!(err < 1e-3, "finite differences: {err}");
    }
}
