//! Sparse kernels for decoding with an activation mask. `select_top.wgsl`
//! turns per-layer scores into compact active lists on the GPU and
//! `threshold_select.wgsl` does so from a per-token threshold rule; then
//! `sparse_rows.wgsl` and `sparse_down.wgsl` read only the active neurons'
//! weights, stored per neuron: [gate row | up row], and the down projection's
//! column as a contiguous row of its transpose. (Fixed masks, and every head
//! mask, run compacted instead: `kernels::compact`.)

use super::{spread, Call};
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// Active lists of the `k` top-scored units per layer from
/// `scores[score_offset ..]` ([layers, n_units]): `index` [layers, n_units]
/// (the first k of each layer used, in ascending id order) and `active` bitmap.
#[allow(clippy::too_many_arguments)]
pub fn select_top(ctx: &GpuContext, n_units: usize, n_layers: usize, k: usize, score_offset: usize, scores: &wgpu::Buffer, index: &wgpu::Buffer, active: &wgpu::Buffer) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let kernel = Kernel::get(ctx, "select_top", include_str!("../../../shaders/select_top.wgsl"), &[U, R, W, W]);
    let params = uniform_buffer(ctx, "select_top params", &[n_units as u32, k as u32, score_offset as u32, n_layers as u32]);
    Call {
        group: kernel.bind(ctx, &[&params, scores, index, active]),
        kernel,
        grid: Box::new(move |_| [(n_layers as u32).div_ceil(8), 1, 1]),
    }
}

/// What [`rows`] computes; see `sparse_rows.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowsMode {
    /// h[a] = silu(gate . x) * (up . x) for the active neurons; w = [ffn, gate | up].
    GateUp = 0,
    /// h[i] = silu(gate_i . x) for every neuron (CATS thresholds these).
    Gate = 1,
    /// h[a] *= up . x for the active neurons.
    Up = 2,
}

/// Where a layer's active units are: `index[index_offset ..]` and `counts[layer]`.
#[derive(Clone, Copy)]
pub struct ActiveList<'a> {
    pub index: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    pub index_offset: usize,
    pub layer: usize,
    /// The most units that can be active (sizes the dispatch).
    pub max_count: usize,
}

/// Products of `x` with the active units' rows of `w` (f16), by `mode`.
pub fn rows(ctx: &GpuContext, dim: usize, mode: RowsMode, active: ActiveList, x: &wgpu::Buffer, w: &wgpu::Buffer, out: &wgpu::Buffer) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    assert!(dim.is_multiple_of(8));
    let kernel = Kernel::specialized(ctx, "sparse_rows", include_str!("../../../shaders/sparse_rows.wgsl"), &[U, R, R, R, R, W], &[("MODE", mode as u32 as f64)]);
    let params = uniform_buffer(ctx, "sparse_rows params", &[dim as u32, active.index_offset as u32, active.layer as u32, active.max_count as u32]);
    let n = active.max_count as u32;
    Call {
        group: kernel.bind(ctx, &[&params, x, w, active.index, active.counts, out]),
        kernel,
        grid: Box::new(move |_| {
            let [x, y] = spread(n.div_ceil(64));
            [x, y, 1]
        }),
    }
}

/// The dynamic threshold rules of `threshold_select.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdRule {
    /// |h_i| * ||W_down[:, i]|| >= eps (the Sparsing Law's CETT rule).
    Cett = 0,
    /// |silu(gate_i)| * w_i >= t (CATS, w = 1 unless a file weighs the neurons).
    Cats = 1,
}

/// The buffers a threshold selection writes.
pub struct SelectOut<'a> {
    pub index: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    pub bitmap: &'a wgpu::Buffer,
    pub compact: &'a wgpu::Buffer,
}

/// Selects layer `layer`'s active neurons from `values` ([n]: h for CETT,
/// silu(gate) for CATS), |v_i| * norms_i >= eps, with `norms` [layers, n]
/// (the rule's weights) and `thresholds` [layers]; one workgroup.
pub fn threshold_select(ctx: &GpuContext, n: usize, layer: usize, values: &wgpu::Buffer, norms: &wgpu::Buffer, thresholds: &wgpu::Buffer, out: SelectOut) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let kernel = Kernel::get(ctx, "threshold_select", include_str!("../../../shaders/threshold_select.wgsl"), &[U, R, R, R, W, W, W, W]);
    let params = uniform_buffer(ctx, "threshold_select params", &[n as u32, layer as u32, 0, (layer * n) as u32]);
    Call {
        group: kernel.bind(ctx, &[&params, values, norms, thresholds, out.index, out.counts, out.bitmap, out.compact]),
        kernel,
        grid: Box::new(|_| [1, 1, 1]),
    }
}

/// The threshold rule over every token of a batched forward: zeroes the
/// neurons of `h` ([tokens, n]) that `rule` drops; `gate_up` is the fused
/// [tokens, gate | up] projection (CATS reads the gates).
#[allow(clippy::too_many_arguments)]
pub fn threshold_zero(ctx: &GpuContext, n: usize, layer: usize, rule: ThresholdRule, step: &wgpu::Buffer, h: &wgpu::Buffer, gate_up: &wgpu::Buffer, norms: &wgpu::Buffer, thresholds: &wgpu::Buffer) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let kernel = Kernel::get(ctx, "threshold_zero", include_str!("../../../shaders/threshold_zero.wgsl"), &[U, U, W, R, R, R]);
    let params = uniform_buffer(ctx, "threshold_zero params", &[n as u32, layer as u32, rule as u32, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, step, h, gate_up, norms, thresholds]),
        kernel,
        grid: Box::new(move |tokens| {
            let [x, y] = spread((tokens * n as u32).div_ceil(64));
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

/// y += sum_a h[a] * w_t[index[a]] over the active units, in two passes
/// (slices, then their sum); `w_t` is the transposed projection [units, dim]
/// f16 and `partial` has [`down_scratch_bytes`].
#[allow(clippy::too_many_arguments)]
pub fn down(ctx: &GpuContext, dim: usize, active: ActiveList, h: &wgpu::Buffer, w_t: &wgpu::Buffer, partial: &wgpu::Buffer, y: &wgpu::Buffer) -> [Call; 2] {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    assert!(dim.is_multiple_of(8));
    let slices = active.max_count.div_ceil(64).clamp(1, MAX_DOWN_SLICES) as u32;
    let kernel = Kernel::get(ctx, "sparse_down", include_str!("../../../shaders/sparse_down.wgsl"), &[U, R, R, R, R, W]);
    let reduce = Kernel::get(ctx, "sparse_down_reduce", include_str!("../../../shaders/sparse_down_reduce.wgsl"), &[U, R, W]);
    let params = uniform_buffer(ctx, "sparse_down params", &[dim as u32, active.index_offset as u32, active.layer as u32, slices]);
    [
        Call {
            group: kernel.bind(ctx, &[&params, h, w_t, active.index, active.counts, partial]),
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

/// The ids kept by a threshold rule, in increasing order: |v_i| * norm_i >= eps.
pub fn threshold_reference(values: &[f32], norms: Option<&[f32]>, eps: f32) -> Vec<u32> {
    (0..values.len()).filter(|&i| values[i].abs() * norms.map_or(1.0, |n| n[i]) >= eps).map(|i| i as u32).collect()
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
pub(in crate::kernels) mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, read_buffer_u32, storage_buffer, zeroed_buffer};
    use crate::kernels::{run_calls, test_util::*};

    #[test]
    fn select_top_matches_reference_with_ties_and_nan() {
        let ctx = crate::testing::gpu();
        let (layers, n) = (11usize, 200usize);
        let mut s = random(layers * n + 5, 91);
        s[5 + 10] = f32::NAN;
        s[5 + 20] = s[5 + 21]; // a tie
        // A layer of negative scores with a block of equal ones, a layer all equal.
        s[5 + 2 * n..5 + 3 * n].iter_mut().enumerate().for_each(|(i, v)| *v = if i % 3 == 0 { -0.5 } else { -1.0 - i as f32 });
        s[5 + 3 * n..5 + 4 * n].fill(0.25);
        s[5 + 4 * n..5 + 5 * n].fill(f32::NAN);
        s[5 + 5 * n] = -0.0;
        s[5 + 5 * n + 1] = 0.0;
        let sb = storage_buffer(&ctx, "scores", &s);
        let (index, active) = (zeroed_buffer(&ctx, "index", (layers * n * 4) as u64), zeroed_buffer(&ctx, "active", (layers * n * 4) as u64));
        for k in [1, 37, 67, n] {
            run_calls(&ctx, &[&select_top(&ctx, n, layers, k, 5, &sb, &index, &active)], 1);
            let got = read_buffer_u32(&ctx, &index, 0, layers * n).unwrap();
            let bits = read_buffer_u32(&ctx, &active, 0, layers * n).unwrap();
            let want = select_top_reference(&s[5..], n, k);
            for l in 0..layers {
                let mut want = want[l].clone();
                want.sort_unstable();
                assert_eq!(got[l * n..l * n + k], want[..], "layer {l} k {k}");
                assert_eq!(bits[l * n..(l + 1) * n].iter().sum::<u32>(), k as u32);
                assert!(want.iter().all(|&i| bits[l * n + i as usize] == 1));
            }
        }
    }

    /// [ffn, gate row | up row] as sparse decoding stores it (f16).
    pub(in crate::kernels) fn pack_gate_up(gate: &[f32], up: &[f32], ffn: usize, dim: usize) -> Vec<half::f16> {
        (0..ffn).flat_map(|i| gate[i * dim..(i + 1) * dim].iter().chain(&up[i * dim..(i + 1) * dim]).map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>()).collect()
    }

    pub(in crate::kernels) fn to_f16(v: &[f32]) -> Vec<half::f16> {
        v.iter().map(|&x| half::f16::from_f32(x)).collect()
    }

    pub(in crate::kernels) fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| w[r * cols + c]).collect()
    }

    #[test]
    fn sparse_mlp_matches_reference() {
        let ctx = crate::testing::gpu();
        let (dim, ffn) = (72usize, 130usize);
        let half = |v: Vec<f32>| crate::testing::round_f16(&v);
        let (x, gate, up, down) = (random(dim, 92), half(random(ffn * dim, 93)), half(random(ffn * dim, 94)), half(random(dim * ffn, 95)));
        // 87 active neurons: two slices of the down projection.
        let active: Vec<u32> = (0..ffn as u32).filter(|i| i % 3 != 1).collect();
        // Layer 1's list sits after layer 0's (7 entries wide here).
        let mut index = vec![0u32; 7];
        index.extend(&active);
        let (xb, wb, db, ib) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "w", &pack_gate_up(&gate, &up, ffn, dim)), storage_buffer(&ctx, "down_t", &to_f16(&transpose(&down, dim, ffn))), storage_buffer(&ctx, "index", &index));
        let counts = storage_buffer(&ctx, "counts", &[3u32, active.len() as u32]);
        let list = ActiveList { index: &ib, counts: &counts, index_offset: 7, layer: 1, max_count: ffn };
        let h = zeroed_buffer(&ctx, "h", (ffn * 4) as u64);
        let residual = random(dim, 96);
        let y = storage_buffer(&ctx, "y", &residual);
        let up_call = rows(&ctx, dim, RowsMode::GateUp, list, &xb, &wb, &h);
        let partial = zeroed_buffer(&ctx, "partial", down_scratch_bytes(dim));
        let [down_call, reduce] = super::down(&ctx, dim, list, &h, &db, &partial, &y);
        run_calls(&ctx, &[&up_call, &down_call, &reduce], 1);
        let got = read_buffer_f32(&ctx, &y, 0, dim).unwrap();
        let mut want = mlp_reference(&x, &gate, &up, &down, ffn, &active);
        want.iter_mut().zip(&residual).for_each(|(a, b)| *a += b);
        // Dot products of 72 and sums of ~87 terms of size ~5 in another
        // order: a few 1e-6; a skipped or wrong neuron is O(1).
        assert!(max_err(&got, &want) < 5e-5, "{}", max_err(&got, &want));
    }

    #[test]
    fn threshold_selection_matches_reference_with_and_without_weights() {
        let ctx = crate::testing::gpu();
        // 1000 neurons: several per invocation, uneven at the end.
        let (layers, n) = (2usize, 1000usize);
        let values = random(n, 97);
        let norms: Vec<f32> = random(layers * n, 98).iter().map(|v| v.abs() + 0.1).collect();
        let thresholds = [0.5f32, 0.2];
        let (vb, tb) = (storage_buffer(&ctx, "v", &values), storage_buffer(&ctx, "t", &thresholds));
        // Weighted (CETT's norms or a file's weights) and unweighted (CATS's ones).
        let ones = vec![1.0f32; layers * n];
        for (what, weights) in [("weighted", &norms), ("ones", &ones)] {
            let nb = storage_buffer(&ctx, "norms", weights);
            let (index, counts, bitmap, compact) = (zeroed_buffer(&ctx, "i", (layers * n * 4) as u64), zeroed_buffer(&ctx, "c", 8), zeroed_buffer(&ctx, "b", (layers * n * 4) as u64), zeroed_buffer(&ctx, "v", (n * 4) as u64));
            let out = SelectOut { index: &index, counts: &counts, bitmap: &bitmap, compact: &compact };
            run_calls(&ctx, &[&threshold_select(&ctx, n, 1, &vb, &nb, &tb, out)], 1);
            let want = threshold_reference(&values, Some(&weights[n..]), thresholds[1]);
            assert!(want.len() > 100 && want.len() < 900, "{what}: {} active", want.len());
            let count = read_buffer_u32(&ctx, &counts, 1, 1).unwrap()[0] as usize;
            assert_eq!(read_buffer_u32(&ctx, &index, n, count).unwrap(), want, "{what}");
            let kept: Vec<f32> = want.iter().map(|&i| values[i as usize]).collect();
            assert_eq!(read_buffer_f32(&ctx, &compact, 0, count).unwrap(), kept);
            let bits = read_buffer_u32(&ctx, &bitmap, n, n).unwrap();
            assert!((0..n).all(|i| (bits[i] == 1) == want.contains(&(i as u32))));
        }
    }

    #[test]
    fn cats_mlp_matches_reference() {
        // Gate for every neuron, threshold |silu(gate)|, up and down for the kept ones.
        let ctx = crate::testing::gpu();
        let (dim, ffn) = (64usize, 300usize);
        let half = |v: Vec<f32>| crate::testing::round_f16(&v);
        let (x, gate, up, down) = (random(dim, 99), half(random(ffn * dim, 100)), half(random(ffn * dim, 101)), half(random(dim * ffn, 102)));
        let (xb, wb, db) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "w", &pack_gate_up(&gate, &up, ffn, dim)), storage_buffer(&ctx, "down_t", &to_f16(&transpose(&down, dim, ffn))));
        let t = 0.8f32;
        let (tb, ones) = (storage_buffer(&ctx, "t", &[t]), storage_buffer(&ctx, "norms", &vec![1.0f32; ffn]));
        let (index, counts, bitmap) = (zeroed_buffer(&ctx, "i", (ffn * 4) as u64), zeroed_buffer(&ctx, "c", 4), zeroed_buffer(&ctx, "b", (ffn * 4) as u64));
        let (g, h) = (zeroed_buffer(&ctx, "g", (ffn * 4) as u64), zeroed_buffer(&ctx, "h", (ffn * 4) as u64));
        let list = ActiveList { index: &index, counts: &counts, index_offset: 0, layer: 0, max_count: ffn };
        let y = zeroed_buffer(&ctx, "y", (dim * 4) as u64);
        let partial = zeroed_buffer(&ctx, "partial", down_scratch_bytes(dim));
        let gate_call = rows(&ctx, dim, RowsMode::Gate, list, &xb, &wb, &g);
        let select = threshold_select(&ctx, ffn, 0, &g, &ones, &tb, SelectOut { index: &index, counts: &counts, bitmap: &bitmap, compact: &h });
        let up_call = rows(&ctx, dim, RowsMode::Up, list, &xb, &wb, &h);
        let [down_call, reduce] = super::down(&ctx, dim, list, &h, &db, &partial, &y);
        run_calls(&ctx, &[&gate_call, &select, &up_call, &down_call, &reduce], 1);
        let silu_gate: Vec<f32> = (0..ffn).map(|i| super::super::swiglu::silu(gate[i * dim..(i + 1) * dim].iter().zip(&x).map(|(a, b)| a * b).sum())).collect();
        let active = threshold_reference(&silu_gate, None, t);
        assert!(active.len() > 20 && active.len() < 250, "{} active", active.len());
        let want = mlp_reference(&x, &gate, &up, &down, ffn, &active);
        let got = read_buffer_f32(&ctx, &y, 0, dim).unwrap();
        assert!(max_err(&got, &want) < 5e-5, "{}", max_err(&got, &want));
    }
}
