//! SwiGLU activation (`shaders/swiglu.wgsl`): h = silu(gate) * up, reading
//! gate and up from one fused projection output ([tokens, gate | up]).

use super::Call;
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// `dim` neurons a token, a multiple of 4 (the kernel reads vec4s).
pub fn call(ctx: &GpuContext, dim: usize, step: &wgpu::Buffer, gate_up: &wgpu::Buffer, h: &wgpu::Buffer) -> Call {
    assert!(dim.is_multiple_of(4), "swiglu: {dim} neurons is not a multiple of 4");
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
        // Tokens along y: at most 65535 a dispatch, far above any batch.
        grid: Box::new(move |n| [(dim as u32 / 4).div_ceil(64), n, 1]),
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
        // Whole workgroups of 256 neurons, and a ragged last one.
        for dim in [1536usize, 100] {
            swiglu_matches_reference_at(dim);
        }
    }

    fn swiglu_matches_reference_at(dim: usize) {
        let ctx = crate::testing::gpu();
        let t = 5usize;
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
