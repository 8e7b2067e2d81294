//! Compaction of a fixed MLP mask (`compact_mlp.wgsl`): the active neurons'
//! gate, up and down weights copied, on the GPU, into dense matrices of the
//! layout the linear kernels read. A mask kept for many tokens (prompt mode, a
//! mask file) then decodes with the dense matvec over k/ffn of the weights,
//! which on CPU adapters is faster per weight than gathering scattered rows.

use super::linear::{Matrix, MatrixChunk, INTERLEAVE_ROWS};
use super::sparse::ActiveList;
use super::{run_calls, spread, Call};
use crate::gpu::{uniform_buffer, zeroed_buffer, Binding, GpuContext, Kernel};

/// One layer's active neurons as dense matrices.
pub struct CompactMlp {
    /// [2 * width, dim]: the gate rows of the active neurons, then their up rows.
    pub gate_up: Matrix,
    /// [dim, width]: the active neurons' columns of W_down.
    pub down: Matrix,
    /// Active neurons rounded up to a multiple of 8 (the rest are zero).
    pub width: usize,
}

/// Slots for `count` active neurons: a multiple of 8, as the linear kernels need.
pub fn width_for(count: usize) -> usize {
    count.div_ceil(8).max(1) * 8
}

fn empty_matrix(ctx: &GpuContext, name: &str, rows: usize, cols: usize, interleaved: bool) -> Matrix {
    let stored_rows = if interleaved { rows.div_ceil(INTERLEAVE_ROWS) * INTERLEAVE_ROWS } else { rows };
    let buffer = zeroed_buffer(ctx, name, (stored_rows * cols * 2) as u64);
    Matrix { rows, cols, interleaved, chunks: vec![MatrixChunk { buffer, rows: 0..rows }] }
}

/// Compacts `active` (at most `count` neurons; the list's count buffer says
/// how many) from the per-neuron layouts of sparse decoding: `gate_up`
/// [ffn, gate row | up row] and `down_t` (W_down^T, [ffn, dim]), both f16.
/// Runs at once; the matrices are ready for the next submission.
pub fn compact_mlp(ctx: &GpuContext, dim: usize, active: ActiveList, count: usize, interleaved: bool, gate_up: &wgpu::Buffer, down_t: &wgpu::Buffer) -> CompactMlp {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    assert!(dim.is_multiple_of(8));
    let width = width_for(count);
    let out = CompactMlp {
        gate_up: empty_matrix(ctx, "compact gate_up", 2 * width, dim, interleaved),
        down: empty_matrix(ctx, "compact down", dim, width, interleaved),
        width,
    };
    let params = uniform_buffer(ctx, "compact_mlp params", &[dim as u32, width as u32, active.index_offset as u32, active.layer as u32, interleaved as u32, 0, 0, 0]);
    let call = |mode: u32, src: &wgpu::Buffer, dst: &Matrix, slots: usize| {
        let kernel = Kernel::specialized(ctx, "compact_mlp", include_str!("../../../shaders/compact_mlp.wgsl"), &[U, R, R, R, W], &[("MODE", mode as f64)]);
        Call {
            group: kernel.bind(ctx, &[&params, active.index, active.counts, src, &dst.chunks[0].buffer]),
            kernel,
            grid: Box::new(move |_| {
                let [x, y] = spread((slots as u32).div_ceil(64));
                [x, y, 1]
            }),
        }
    };
    let gu = call(0, gate_up, &out.gate_up, 2 * width * dim / 8);
    let dn = call(1, down_t, &out.down, dim * width / 8);
    run_calls(ctx, &[&gu, &dn], 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer};
    use crate::kernels::linear::{LinearCall, LinearOptions};
    use crate::kernels::sparse::mlp_reference;
    use crate::kernels::sparse::tests::{pack_gate_up, to_f16, transpose};
    use crate::kernels::{swiglu, test_util::*, KernelFamily, Step};

    /// The compacted matrices through the dense linear kernels and SwiGLU
    /// give the MLP of only the active neurons, in both layouts, for a count
    /// that is not a multiple of 8 (padding) and for every neuron.
    #[test]
    fn compacted_mlp_through_dense_kernels_matches_reference() {
        let ctx = crate::testing::gpu();
        let (dim, ffn) = (72usize, 130usize);
        let half = |v: Vec<f32>| crate::testing::round_f16(&v);
        let (x, gate, up, down) = (random(dim, 110), half(random(ffn * dim, 111)), half(random(ffn * dim, 112)), half(random(dim * ffn, 113)));
        let (gub, dtb, xb) = (storage_buffer(&ctx, "gate_up", &pack_gate_up(&gate, &up, ffn, dim)), storage_buffer(&ctx, "down_t", &to_f16(&transpose(&down, dim, ffn))), storage_buffer(&ctx, "x", &x));
        let step = uniform_buffer(&ctx, "step", &Step::new(1, 0));
        for (family, active) in [
            (KernelFamily::RowPerInvocation, (0..ffn as u32).filter(|i| i % 3 != 1).collect::<Vec<u32>>()),
            (KernelFamily::Cooperative, vec![129, 5, 64, 0, 77]),
            (KernelFamily::RowPerInvocation, (0..ffn as u32).collect()),
        ] {
            // Layer 1's list sits after layer 0's (5 entries wide here).
            let mut index = vec![0u32; 5];
            index.extend(&active);
            let (ib, counts) = (storage_buffer(&ctx, "index", &index), storage_buffer(&ctx, "counts", &[3u32, active.len() as u32]));
            let list = ActiveList { index: &ib, counts: &counts, index_offset: 5, layer: 1, max_count: active.len() };
            let interleaved = family == KernelFamily::RowPerInvocation;
            let c = compact_mlp(&ctx, dim, list, active.len(), interleaved, &gub, &dtb);
            assert_eq!(c.width % 8, 0);
            let (gu_out, h) = (zeroed_buffer(&ctx, "gu", (2 * c.width * 4) as u64), zeroed_buffer(&ctx, "h", (c.width * 4) as u64));
            let residual = random(dim, 114);
            let y = storage_buffer(&ctx, "y", &residual);
            let plain = LinearOptions::default();
            let gu_call = LinearCall::with_family(&ctx, &c.gate_up, &step, &xb, &gu_out, plain, family);
            let act = swiglu::call(&ctx, c.width, &step, &gu_out, &h);
            let down_call = LinearCall::with_family(&ctx, &c.down, &step, &h, &y, LinearOptions { accumulate: true, ..plain }, family);
            let mut plan = Vec::new();
            gu_call.plan("gate_up", 1, &mut plan);
            act.plan("swiglu", 1, &mut plan);
            down_call.plan("down", 1, &mut plan);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                plan.iter().for_each(|d| d.record(&mut pass));
            }
            ctx.queue.submit([enc.finish()]);
            let got = read_buffer_f32(&ctx, &y, 0, dim).unwrap();
            let mut want = mlp_reference(&x, &gate, &up, &down, ffn, &active);
            want.iter_mut().zip(&residual).for_each(|(a, b)| *a += b);
            // Dot products of 72 and sums of up to 130 terms of size ~5 in
            // another order: a few 1e-6; a wrong or missing neuron is O(1).
            assert!(max_err(&got, &want) < 5e-5, "{family:?} {} active: {}", active.len(), max_err(&got, &want));
        }
    }
}
