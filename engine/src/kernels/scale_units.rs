//! Unit scaling (`shaders/scale_units.wgsl`): multiplies MLP neurons or
//! attention heads by per-unit factors in place. Zero deactivates a unit (the
//! dense reference for sparse execution, and ranking checks); Integrated
//! Gradients scales a whole layer by alpha.

use super::{spread, Call};
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// Scales rows t >= scaling.t0 of `x` [T, width] by `factors[factor_offset + j / unit_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn call(ctx: &GpuContext, width: usize, unit_dim: usize, factor_offset: usize, step: &wgpu::Buffer, scaling: &wgpu::Buffer, factors: &wgpu::Buffer, x: &wgpu::Buffer) -> Call {
    let kernel = Kernel::get(
        ctx,
        "scale_units",
        include_str!("../../../shaders/scale_units.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "scale_units params", &[width as u32, unit_dim as u32, factor_offset as u32, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, step, scaling, factors, x]),
        kernel,
        grid: Box::new(move |n| {
            let [x, y] = spread((n * width as u32).div_ceil(256));
            [x, y, 1]
        }),
    }
}

pub fn reference(x: &mut [f32], width: usize, unit_dim: usize, factors: &[f32], t0: usize) {
    for (t, row) in x.chunks_mut(width).enumerate().skip(t0) {
        let _ = t;
        row.iter_mut().enumerate().for_each(|(j, v)| *v *= factors[j / unit_dim]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer};
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn scale_units_matches_reference() {
        let ctx = crate::testing::gpu();
        let (t, heads, hd, t0) = (6usize, 5usize, 12usize, 2usize);
        let x = random(t * heads * hd, 71);
        let f = random(3 + heads, 72);
        let step = uniform_buffer(&ctx, "step", &Step::new(t, 0));
        let scaling = uniform_buffer(&ctx, "scaling", &[t0 as u32, 0, 0, 0]);
        let (xb, fb) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "f", &f));
        run_calls(&ctx, &[&call(&ctx, heads * hd, hd, 3, &step, &scaling, &fb, &xb)], t as u32);
        let got = read_buffer_f32(&ctx, &xb, 0, x.len()).unwrap();
        let mut want = x.clone();
        reference(&mut want, heads * hd, hd, &f[3..], t0);
        // One multiplication: exact.
        assert_eq!(got, want);
        assert_eq!(got[..t0 * heads * hd], x[..t0 * heads * hd], "rows before t0 are untouched");
    }
}
