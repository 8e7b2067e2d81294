//! A magnitude rule on a linear layer's input (`shaders/input_zero.wgsl`),
//! TEAL's rule: an input element below its threshold in magnitude is zeroed,
//! so the projection after it could skip that element's column. Kept
//! elements are counted per (site, layer) in `kept`.

use super::{spread, Call};
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// Zeroes elements of `v` [T, width] with |v| < thresholds[index], counting the others in kept[index].
pub fn call(ctx: &GpuContext, width: usize, index: usize, step: &wgpu::Buffer, v: &wgpu::Buffer, thresholds: &wgpu::Buffer, kept: &wgpu::Buffer) -> Call {
    let kernel = Kernel::get(
        ctx,
        "input_zero",
        include_str!("../../../shaders/input_zero.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadWrite, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "input_zero params", &[width as u32, index as u32, 0, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, step, v, thresholds, kept]),
        kernel,
        grid: Box::new(move |n| {
            let [x, y] = spread((n * width as u32).div_ceil(64));
            [x, y, 1]
        }),
    }
}

/// The rule on the CPU: zeroes |v| < threshold, returns how many it kept.
pub fn reference(v: &mut [f32], threshold: f32) -> usize {
    let mut kept = 0;
    for x in v.iter_mut() {
        if x.abs() < threshold {
            *x = 0.0;
        } else {
            kept += 1;
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, read_buffer_u32, storage_buffer};
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn input_zero_matches_reference() {
        let ctx = crate::testing::gpu();
        // A ragged width (not a multiple of the workgroup), several tokens,
        // and a threshold slot that is not the first.
        let (t, width, index) = (5usize, 83usize, 2usize);
        let mut x = random(t * width, 91);
        // Exact ties stay kept (|v| < t zeroes; |v| = t does not).
        x[7] = 0.25;
        x[8] = -0.25;
        let thresholds = [9.0f32, 9.0, 0.25, 9.0];
        let step = uniform_buffer(&ctx, "step", &Step::new(t, 0));
        let (xb, tb) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "t", &thresholds));
        let kept = storage_buffer(&ctx, "kept", &[0u32; 4]);
        let c = call(&ctx, width, index, &step, &xb, &tb, &kept);
        run_calls(&ctx, &[&c], t as u32);
        let got = read_buffer_f32(&ctx, &xb, 0, x.len()).unwrap();
        let mut want = x.clone();
        let n = reference(&mut want, 0.25);
        // A comparison and a store: exact.
        assert_eq!(got, want);
        assert!(n > 0 && n < x.len(), "the threshold should split the values: {n} of {}", x.len());
        assert_eq!(got[7], 0.25);
        assert_eq!(got[8], -0.25);
        assert_eq!(read_buffer_u32(&ctx, &kept, 0, 4).unwrap(), vec![0, 0, n as u32, 0]);
    }
}
