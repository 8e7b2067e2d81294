//! RMSNorm (`shaders/rmsnorm.wgsl`): one workgroup per token.

use super::Call;
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    dim: u32,
    eps: f32,
    _pad: [u32; 2],
}

/// `dim`: the row width, a multiple of 4 (the kernel reads vec4s).
pub fn call(ctx: &GpuContext, dim: usize, eps: f32, step: &wgpu::Buffer, x: &wgpu::Buffer, weight: &wgpu::Buffer, out: &wgpu::Buffer) -> Call {
    assert!(dim.is_multiple_of(4), "rmsnorm: width {dim} is not a multiple of 4");
    let kernel = Kernel::get(
        ctx,
        "rmsnorm",
        include_str!("../../../shaders/rmsnorm.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "rmsnorm params", &Params { dim: dim as u32, eps, _pad: [0; 2] });
    Call {
        group: kernel.bind(ctx, &[&params, step, x, weight, out]),
        kernel,
        grid: Box::new(|n| [n, 1, 1]),
    }
}

pub fn reference(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let dim = weight.len();
    x.chunks(dim)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            row.iter().zip(weight).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn rmsnorm_matches_reference() {
        let ctx = crate::testing::gpu();
        for &(t, dim) in &[(1usize, 576usize), (7, 100), (3, 2048)] {
            let x = random(t * dim, 3);
            let w = random(dim, 4);
            let step = uniform_buffer(&ctx, "step", &Step::new(t, 0));
            let (xb, wb) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "w", &w));
            let out = zeroed_buffer(&ctx, "out", (t * dim * 4) as u64);
            run_calls(&ctx, &[&call(&ctx, dim, 1e-5, &step, &xb, &wb, &out)], t as u32);
            let got = read_buffer_f32(&ctx, &out, 0, t * dim).unwrap();
            // Sum of squares in a different order, then one rsqrt: 1e-5 relative.
            assert!(max_err(&got, &reference(&x, &w, 1e-5)) < 1e-5);
        }
    }
}
