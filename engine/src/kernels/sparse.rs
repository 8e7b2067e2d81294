//! Sparse MLP kernels for decoding with an activation mask: `select_top.wgsl`
//! turns per-layer scores into compact active-neuron lists on the GPU, then
//! `sparse_gate_up.wgsl` and `sparse_down.wgsl` read only the active neurons'
//! weights, stored per neuron: [gate row | up row] and the down projection's
//! column (its transpose's row), each contiguous.

use super::{spread, Call};
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// Active lists of `k` units per layer from `scores[score_offset ..]` ([layers, n_units]):
/// `index` [layers, n_units] (first k of each layer used, best first) and `active` bitmap.
#[allow(clippy::too_many_arguments)]
pub fn select_top(ctx: &GpuContext, n_units: usize, n_layers: usize, k: usize, score_offset: usize, scores: &wgpu::Buffer, index: &wgpu::Buffer, active: &wgpu::Buffer) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let kernel = Kernel::get(ctx, "select_top", include_str!("../../../shaders/select_top.wgsl"), &[U, R, W, W]);
    let params = uniform_buffer(ctx, "select_top params", &[n_units as u32, k as u32, score_offset as u32, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, scores, index, active]),
        kernel,
        grid: Box::new(move |_| [(n_units as u32).div_ceil(64), n_layers as u32, 1]),
    }
}

/// h[a] = silu(gate_i . x) * (up_i . x) for the `count` active neurons i of
/// one layer (`index[index_offset ..]`); `w` is [ffn, gate | up] f16.
#[allow(clippy::too_many_arguments)]
pub fn gate_up(ctx: &GpuContext, dim: usize, index_offset: usize, count: usize, x: &wgpu::Buffer, w: &wgpu::Buffer, index: &wgpu::Buffer, h: &wgpu::Buffer) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    assert!(dim.is_multiple_of(8));
    let kernel = Kernel::get(ctx, "sparse_gate_up", include_str!("../../../shaders/sparse_gate_up.wgsl"), &[U, R, R, R, W]);
    let params = uniform_buffer(ctx, "sparse_gate_up params", &[dim as u32, index_offset as u32, count as u32, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, x, w, index, h]),
        kernel,
        grid: Box::new(move |_| {
            let [x, y] = spread((count as u32).div_ceil(64));
            [x, y, 1]
        }),
    }
}

/// Slices of the active list the down projection is split into, so that
/// even a few hundred output dimensions keep every core (or SM) busy.
pub const MAX_DOWN_SLICES: usize = 16;

/// Scratch the sparse down projection needs: [MAX_DOWN_SLICES, dim] f32.
pub fn down_scratch_bytes(dim: usize) -> u64 {
    (MAX_DOWN_SLICES * dim * 4) as u64
}

/// y += sum_a h[a] * down_t[index[a]] over the `count` active neurons, in
/// two passes (slices, then their sum); `w` is the transposed down projection
/// [ffn, dim] f16 and `partial` has [`down_scratch_bytes`].
#[allow(clippy::too_many_arguments)]
pub fn down(ctx: &GpuContext, dim: usize, index_offset: usize, count: usize, h: &wgpu::Buffer, w: &wgpu::Buffer, index: &wgpu::Buffer, partial: &wgpu::Buffer, y: &wgpu::Buffer) -> [Call; 2] {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    assert!(dim.is_multiple_of(8));
    let slices = count.div_ceil(64).clamp(1, MAX_DOWN_SLICES) as u32;
    let kernel = Kernel::get(ctx, "sparse_down", include_str!("../../../shaders/sparse_down.wgsl"), &[U, R, R, R, W]);
    let reduce = Kernel::get(ctx, "sparse_down_reduce", include_str!("../../../shaders/sparse_down_reduce.wgsl"), &[U, R, W]);
    let params = uniform_buffer(ctx, "sparse_down params", &[dim as u32, index_offset as u32, count as u32, slices]);
    [
        Call {
            group: kernel.bind(ctx, &[&params, h, w, index, partial]),
            kernel,
            grid: Box::new(move |_| [(dim as u32 / 8).div_ceil(64), slices, 1]),
        },
        Call {
            group: reduce.bind(ctx, &[&params, partial, y]),
            kernel: reduce,
            grid: Box::new(move |_| [(dim as u32 / 4).div_ceil(64), 1, 1]),
        },
    ]
}

/// Per layer, the ids of the `k` highest scores, best first (ties: lower id).
pub fn select_top_reference(scores: &[f32], n_units: usize, k: usize) -> Vec<Vec<u32>> {
    scores
        .chunks(n_units)
        .map(|s| {
            let key = |i: usize| if s[i].is_nan() { -3.0e38 } else { s[i] };
            let mut ids: Vec<usize> = (0..n_units).collect();
            ids.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            ids.into_iter().take(k).map(|i| i as u32).collect()
        })
        .collect()
}

/// The MLP output of one token with only the `active` neurons: sum_i h_i W_down[:, i].
pub fn mlp_reference(x: &[f32], gate: &[f32], up: &[f32], down: &[f32], ffn: usize, active: &[u32]) -> Vec<f32> {
    let dim = x.len();
    let mut y = vec![0.0f32; dim];
    for &i in active {
        let i = i as usize;
        let dot = |w: &[f32]| w[i * dim..(i + 1) * dim].iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
        let h = super::swiglu::silu(dot(gate)) * dot(up);
        for (d, yd) in y.iter_mut().enumerate() {
            *yd += h * down[d * ffn + i];
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, read_buffer_u32, storage_buffer, zeroed_buffer};
    use crate::kernels::{run_calls, test_util::*};

    #[test]
    fn select_top_matches_reference_with_ties_and_nan() {
        let ctx = crate::testing::gpu();
        let (layers, n, k) = (3usize, 200usize, 37usize);
        let mut s = random(layers * n + 5, 91);
        s[5 + 10] = f32::NAN;
        s[5 + 20] = s[5 + 21]; // a tie
        let sb = storage_buffer(&ctx, "scores", &s);
        let (index, active) = (zeroed_buffer(&ctx, "index", (layers * n * 4) as u64), zeroed_buffer(&ctx, "active", (layers * n * 4) as u64));
        run_calls(&ctx, &[&select_top(&ctx, n, layers, k, 5, &sb, &index, &active)], 1);
        let got = read_buffer_u32(&ctx, &index, 0, layers * n).unwrap();
        let bits = read_buffer_u32(&ctx, &active, 0, layers * n).unwrap();
        let want = select_top_reference(&s[5..], n, k);
        for l in 0..layers {
            assert_eq!(got[l * n..l * n + k], want[l][..], "layer {l}");
            assert_eq!(bits[l * n..(l + 1) * n].iter().sum::<u32>(), k as u32);
            assert!(want[l].iter().all(|&i| bits[l * n + i as usize] == 1));
        }
    }

    #[test]
    fn sparse_mlp_matches_reference() {
        let ctx = crate::testing::gpu();
        let (dim, ffn) = (72usize, 130usize);
        let half = |v: Vec<f32>| crate::testing::round_f16(&v);
        let (x, gate, up, down) = (random(dim, 92), half(random(ffn * dim, 93)), half(random(ffn * dim, 94)), half(random(dim * ffn, 95)));
        // 87 active neurons: two slices of the down projection.
        let active: Vec<u32> = (0..ffn as u32).filter(|i| i % 3 != 1).collect();
        let packed: Vec<half::f16> = (0..ffn).flat_map(|i| gate[i * dim..(i + 1) * dim].iter().chain(&up[i * dim..(i + 1) * dim]).map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>()).collect();
        let down_t: Vec<half::f16> = (0..ffn).flat_map(|i| (0..dim).map(move |d| (i, d))).map(|(i, d)| half::f16::from_f32(down[d * ffn + i])).collect();
        // The index list sits after 7 entries of another layer.
        let mut index = vec![0u32; 7];
        index.extend(&active);
        let (xb, wb, db, ib) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "w", &packed), storage_buffer(&ctx, "down_t", &down_t), storage_buffer(&ctx, "index", &index));
        let h = zeroed_buffer(&ctx, "h", (ffn * 4) as u64);
        let residual = random(dim, 96);
        let y = storage_buffer(&ctx, "y", &residual);
        let up_call = gate_up(&ctx, dim, 7, active.len(), &xb, &wb, &ib, &h);
        let partial = zeroed_buffer(&ctx, "partial", down_scratch_bytes(dim));
        let [down_call, reduce] = super::down(&ctx, dim, 7, active.len(), &h, &db, &ib, &partial, &y);
        run_calls(&ctx, &[&up_call, &down_call, &reduce], 1);
        let got = read_buffer_f32(&ctx, &y, 0, dim).unwrap();
        let mut want = mlp_reference(&x, &gate, &up, &down, ffn, &active);
        want.iter_mut().zip(&residual).for_each(|(a, b)| *a += b);
        // Dot products of 72 and sums of ~87 terms of size ~5 in another
        // order: a few 1e-6; a skipped or wrong neuron is O(1).
        assert!(max_err(&got, &want) < 5e-5, "{}", max_err(&got, &want));
    }
}
