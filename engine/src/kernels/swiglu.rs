//! SwiGLU activation (`shaders/swiglu.wgsl`): h = silu(gate) * up, reading
//! gate and up from one fused projection output ([tokens, gate | up]).

use super::{spread, Call};
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

pub fn call(ctx: &GpuContext, dim: usize, step: &wgpu::Buffer, gate_up: &wgpu::Buffer, h: &wgpu::Buffer) -> Call {
    let kernel = Kernel::get(
        ctx,
        "swiglu",
        include_str!("../../../shaders/swiglu.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "swiglu params", &[dim as u32, 0, 0, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, step, gate_up, h]),
        kernel,
        grid: Box::new(move |n| {
            let [x, y] = spread((n * dim as u32).div_ceil(256));
            [x, y, 1]
        }),
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn reference(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn swiglu_matches_reference() {
        let ctx = crate::testing::gpu();
        let (t, dim) = (5usize, 1536usize);
        let g: Vec<f32> = random(t * dim, 5).iter().map(|v| v * 8.0).collect();
        let u = random(t * dim, 6);
        let step = uniform_buffer(&ctx, "step", &Step::new(t, 0));
        let gate_up: Vec<f32> = (0..t).flat_map(|r| g[r * dim..(r + 1) * dim].iter().chain(&u[r * dim..(r + 1) * dim]).copied()).collect();
        let gub = storage_buffer(&ctx, "gate_up", &gate_up);
        let out = zeroed_buffer(&ctx, "h", (t * dim * 4) as u64);
        run_calls(&ctx, &[&call(&ctx, dim, &step, &gub, &out)], t as u32);
        let got = read_buffer_f32(&ctx, &out, 0, t * dim).unwrap();
        // One exp and a division: a few ulp.
        assert!(max_err(&got, &reference(&g, &u)) < 1e-5);
    }
}
