//! A compacted MLP in one dispatch (`fused_mlp.wgsl`): RMSNorm, the active
//! neurons' gate and up rows, SwiGLU and their columns of W_down, added to
//! the residual stream. On lavapipe a dispatch costs 20-35 us whatever it
//! does, and the two dispatches of a compacted MLP (`kernels::compact`) pay
//! it twice per layer, a sixth of the sparse MLP's time at AR 0.2.
//!
//! It runs where the compacted W_down is in 4-bit groups
//! (`kernels::column_groups`) on CPU adapters whose workgroups of 8 are one
//! subgroup: the kernel's slices of W_down h are summed by the last
//! workgroup to finish, which is sound where a workgroup's invocations run on
//! one CPU thread and atomics order the plain stores before them (lavapipe).
//!
//! Where the layer's heads are compacted too, the dispatch starts with their
//! output projection (`OutputProjection`), which every workgroup computes
//! whole: at AR 0.2 a few blocks of W_o's columns cost less than the
//! dispatch they save (a decode step with heads and MLP masked 1.60x dense
//! before, 1.80x after, in one bench run).

use super::linear::{Matrix, INTERLEAVE_ROWS};
use super::packed::{Format, BLOCK};
use super::{Call, Dispatch, KernelFamily};
use crate::gpu::{storage_buffer, uniform_buffer, zeroed_buffer, Binding, GpuContext, Kernel};

/// Chunks of 32 slots one workgroup holds (`MAX_CHUNKS` in the kernel).
const MAX_CHUNKS: usize = 64;
/// The widest model the kernel takes (`MAX_K32` blocks of 32 in the kernel).
pub const MAX_DIM: usize = 2048;

/// Whether compacted MLPs run in one dispatch on this adapter. Only in the
/// CPU-style kernel family, where the compacted matrices are interleaved,
/// and on 8-wide subgroups; `SIFT_TWO_DISPATCH_MLP` turns it off (A/B
/// comparisons).
pub fn runs_on(ctx: &GpuContext, family: KernelFamily) -> bool {
    family.is_cpu_style(ctx) && ctx.is_software() && ctx.has_subgroups_of_8() && std::env::var_os("SIFT_TWO_DISPATCH_MLP").is_none()
}

/// The CPU adapter's threads: lavapipe runs one workgroup per thread at a
/// time, one thread per CPU by default (`LP_NUM_THREADS`), at most 16.
pub fn threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("LP_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(cpus);
    threads.clamp(1, 16)
}

/// Workgroups for `chunks` chunks on `threads` threads: one per thread, no
/// more than there are chunks, and enough that none holds more than
/// `MAX_CHUNKS`.
fn workgroups(chunks: usize, threads: usize) -> usize {
    threads.max(1).min(chunks).max(chunks.div_ceil(MAX_CHUNKS)).max(1)
}

/// A chunk's cost in neurons' gate and up rows: its 32 slots of W_down (in
/// weight loads per lane: 2 per row and 32 slots; 5.6 per neuron for 576
/// inputs, so a 32-slot column costs about as much as 26 neurons).
const CHUNK_COST: u64 = 26;

/// What the kernel needs of a grouping plan (`ColumnGroups::slot_column`,
/// with `PADDING`, over a dense [gate; up] of `ffn` rows per half), split
/// among its workgroups.
#[derive(Debug, PartialEq)]
pub struct FusedPlan {
    /// The paired gate|up's source rows: each workgroup's neurons in slot
    /// order, from a block of 32 of their own (a block shared by two
    /// workgroups would be computed by both); in block k, row 8r + l is the
    /// gate row (r < 4) or the up row (r >= 4) of the block's neuron
    /// 4l + r % 4, so that lane l holds gate and up of 4 neurons. Past a
    /// workgroup's last neuron, `PADDING` (zero rows).
    pub rows: Vec<u32>,
    /// What the kernel reads, in order: each workgroup's first chunk and
    /// the count ([workgroups + 1]); each workgroup's first block of `rows`
    /// and the count ([workgroups + 1]); the first neuron (in slot order) of
    /// each chunk of 32 slots and the count ([chunks + 1]); each neuron's slot.
    pub table: Vec<u32>,
    /// Chunks of 32 slots.
    pub chunks: usize,
    pub workgroups: usize,
}

impl FusedPlan {
    pub fn new(slot_column: &[u32], ffn: usize, threads: usize) -> FusedPlan {
        use super::column_groups::PADDING;
        assert!(slot_column.len().is_multiple_of(BLOCK));
        // (slot, column) of each neuron, in slot order.
        let neurons: Vec<(u32, u32)> = (0..).zip(slot_column.iter().copied()).filter(|&(_, c)| c != PADDING).collect();
        let chunks = slot_column.len() / BLOCK;
        let firsts: Vec<u32> = (0..=chunks).map(|c| neurons.partition_point(|&(slot, _)| (slot as usize) < c * BLOCK) as u32).collect();
        let workgroups = workgroups(chunks, threads);
        let bounds = split(&firsts, workgroups);
        let mut rows = Vec::new();
        let mut block_bounds = vec![0u32];
        for run in bounds.windows(2) {
            let mine = &neurons[firsts[run[0] as usize] as usize..firsts[run[1] as usize] as usize];
            for block in mine.chunks(BLOCK) {
                for r in 0..8 {
                    for lane in 0..8 {
                        let row = block.get(4 * lane + r % 4).map(|&(_, column)| if r < 4 { column } else { ffn as u32 + column });
                        rows.push(row.unwrap_or(PADDING));
                    }
                }
            }
            block_bounds.push((rows.len() / (2 * BLOCK)) as u32);
        }
        let table = [bounds, block_bounds, firsts].concat().into_iter().chain(neurons.iter().map(|&(slot, _)| slot)).collect();
        FusedPlan { rows, table, chunks, workgroups }
    }
}

/// What a workgroup taking chunks [a, b) costs: its chunks, and its neurons'
/// blocks of 32, padding included (`firsts` as in [`split`]).
fn run_cost(firsts: &[u32], a: usize, b: usize) -> u64 {
    CHUNK_COST * (b - a) as u64 + BLOCK as u64 * (firsts[b] - firsts[a]).div_ceil(BLOCK as u32) as u64
}

/// The first chunk of each of `workgroups` workgroups, and the count, given
/// each chunk's first neuron and the count (`firsts`): runs of at most
/// `MAX_CHUNKS` chunks whose dearest costs least (the dispatch ends with its
/// slowest workgroup), and among those the cheapest in all ([`run_cost`]).
fn split(firsts: &[u32], workgroups: usize) -> Vec<u32> {
    let chunks = firsts.len() - 1;
    // best[w][c]: (dearest run, total, previous bound) of the first c chunks in w runs.
    let none = (u64::MAX, u64::MAX, 0);
    let mut best = vec![vec![none; chunks + 1]; workgroups + 1];
    best[0][0] = (0, 0, 0);
    for w in 1..=workgroups {
        for c in 0..=chunks {
            for a in c.saturating_sub(MAX_CHUNKS)..=c {
                let (dearest, total, _) = best[w - 1][a];
                if dearest == u64::MAX {
                    continue;
                }
                let run = run_cost(firsts, a, c);
                let candidate = (dearest.max(run), total + run, a);
                if (candidate.0, candidate.1) < (best[w][c].0, best[w][c].1) {
                    best[w][c] = candidate;
                }
            }
        }
    }
    let mut bounds = vec![chunks as u32];
    for w in (1..=workgroups).rev() {
        let previous = best[w][*bounds.last().expect("starts at the end") as usize].2;
        bounds.push(previous as u32);
    }
    bounds.reverse();
    bounds
}

/// Per layer: the plan's table, where the workgroups leave their slices,
/// and the counter of those that finished (zero between dispatches).
pub struct FusedState {
    pub chunks: usize,
    pub workgroups: usize,
    table: wgpu::Buffer,
    partial: wgpu::Buffer,
    arrivals: wgpu::Buffer,
}

impl FusedState {
    pub fn new(ctx: &GpuContext, dim: usize, plan: &FusedPlan) -> FusedState {
        FusedState {
            chunks: plan.chunks,
            workgroups: plan.workgroups,
            table: storage_buffer(ctx, "fused mlp table", &plan.table),
            partial: zeroed_buffer(ctx, "fused mlp slices", (plan.workgroups * dim * 4) as u64),
            arrivals: zeroed_buffer(ctx, "fused mlp arrivals", 4),
        }
    }
}

/// The buffers of one layer's fused MLP.
pub struct FusedMlpSpec<'a> {
    pub dim: usize,
    pub eps: f32,
    /// The residual stream [dim]: read, then added to.
    pub x: &'a wgpu::Buffer,
    pub norm_weight: &'a wgpu::Buffer,
    /// 4-bit, rows paired as [`FusedPlan::rows`].
    pub gate_up: &'a Matrix,
    /// [dim, slots] in 4-bit groups.
    pub down: &'a Matrix,
    pub state: &'a FusedState,
    /// The attention's output projection, where the layer's heads are
    /// compacted too: added to x before the MLP, in the same dispatch.
    pub o: Option<OutputProjection<'a>>,
}

/// x += W_o a for a layer's active heads: their outputs `a` [cols of W_o],
/// and W_o's columns of them, with a 4-bit copy.
#[derive(Clone, Copy)]
pub struct OutputProjection<'a> {
    pub heads: &'a wgpu::Buffer,
    pub o: &'a Matrix,
}

impl OutputProjection<'_> {
    /// Whether the fused kernel can take it: 4 bits, in whole blocks.
    pub fn fits(o: &Matrix, dim: usize) -> bool {
        o.q4().is_some() && o.rows == dim && o.cols.is_multiple_of(BLOCK)
    }
}

/// One layer's fused MLP, bound to its buffers.
pub struct FusedMlpCall {
    call: Call,
    /// The 4-bit gate|up and W_down it reads (and W_o), for the roofline.
    weight_bytes: u64,
    with_o: bool,
}

impl FusedMlpCall {
    /// Whether it adds the heads' output projection too.
    pub fn with_output_projection(&self) -> bool {
        self.with_o
    }

    pub fn plan<'a>(&'a self, label: &'static str, out: &mut Vec<Dispatch<'a>>) {
        let c = &self.call;
        out.push(Dispatch { label, kernel: &c.kernel, group: &c.group, grid: (c.grid)(1), weight_bytes: self.weight_bytes });
    }
}

/// A one-dispatch MLP kernel's source: the 4-bit dot products and what
/// these kernels share, then `body`.
pub fn source(body: &str) -> String {
    format!("{}\n{}\n{body}", super::linear::LINEAR_NIBBLES, include_str!("../../../shaders/one_dispatch_mlp.wgsl"))
}

pub fn call(ctx: &GpuContext, s: &FusedMlpSpec) -> FusedMlpCall {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let (gate_up, down) = (s.gate_up.q4().expect("a 4-bit paired gate|up"), s.down.packed.as_ref().filter(|p| p.format == Format::Q4Groups).expect("a grouped down"));
    let state = s.state;
    assert_eq!(s.down.cols, BLOCK * state.chunks);
    assert!(s.dim.is_multiple_of(BLOCK) && s.dim <= MAX_DIM && s.down.rows == s.dim && s.gate_up.cols == s.dim && s.gate_up.rows.is_multiple_of(INTERLEAVE_ROWS));
    let source = source(include_str!("../../../shaders/fused_mlp.wgsl"));
    let kernel = Kernel::get(ctx, "fused_mlp", &source, &[U, W, R, R, R, W, W, R, R, R]);
    let neuron_blocks = s.gate_up.rows / INTERLEAVE_ROWS;
    // Without an output projection its bindings take any buffer: unread.
    let (heads, wo, o_cols) = match s.o {
        Some(o) => {
            assert!(OutputProjection::fits(o.o, s.dim), "W_o in 4 bits, whole blocks of columns");
            (o.heads, o.o.q4().expect("checked"), o.o.cols)
        }
        None => (s.norm_weight, s.norm_weight, 0),
    };
    let params: [u32; 8] = [s.dim as u32, state.chunks as u32, state.workgroups as u32, s.eps.to_bits(), neuron_blocks as u32, (o_cols / BLOCK) as u32, 0, 0];
    let params = uniform_buffer(ctx, "fused mlp params", &params);
    let workgroups = state.workgroups as u32;
    let call = Call {
        group: kernel.bind(ctx, &[&params, s.x, s.norm_weight, gate_up, &down.buffer, &state.partial, &state.arrivals, &state.table, heads, wo]),
        kernel,
        grid: Box::new(move |_| [workgroups, 1, 1]),
    };
    let o_bytes = if o_cols > 0 { wo.size() } else { 0 };
    FusedMlpCall { call, weight_bytes: gate_up.size() + down.buffer.size() + o_bytes, with_o: o_cols > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::read_buffer_f32;
    use crate::kernels::column_groups::ColumnGroups;
    use crate::kernels::compact::{compact_mlp, width_for, DownInputs, MlpSources};
    use crate::kernels::sparse::mlp_reference;
    use crate::kernels::sparse::tests::{pack_gate_up, to_f16, transpose};
    use crate::kernels::sparse::ActiveList;
    use crate::kernels::{rmsnorm, run_plan, test_util::*};

    /// The paired rows put a neuron's gate and up rows in one lane, 4 rows
    /// apart, with each workgroup's neurons in slot order from a block of
    /// their own; the table gives each workgroup's chunks and blocks, each
    /// chunk's first neuron and each neuron's slot.
    #[test]
    fn plan_pairs_gate_and_up_rows_by_slot() {
        use crate::kernels::column_groups::PADDING;
        let p = PADDING;
        let real = |rows: &[u32]| rows.iter().filter(|&&r| r != PADDING).count();
        // Chunk 0: columns 7, 3, 5 in slots 0-2 and 40 in slot 8; chunk 1:
        // none; chunk 2: 33 columns from 100 in slots 64-95 and 96 (chunk 3).
        let mut slots = vec![7, 3, 5, p, p, p, p, p, 40];
        slots.resize(64, p);
        slots.extend(100..133);
        slots.resize(128, p);
        let plan = FusedPlan::new(&slots, 1000, 1);
        assert_eq!((plan.chunks, plan.workgroups), (4, 1));
        assert_eq!(plan.table[..4], [0, 4, 0, 2]);
        assert_eq!(plan.table[4..9], [0, 4, 4, 36, 37]);
        assert_eq!(plan.table[9..13], [0, 1, 2, 8]);
        assert_eq!(plan.table[13..], (64..97).collect::<Vec<u32>>()[..]);
        // 37 neurons: two blocks of 32. Block 0, lane 0: neurons 0-3
        // (columns 7, 3, 5, 40); lane 1, r = 2 and 6: neuron 6 (column 102).
        assert_eq!(plan.rows.len(), 128);
        assert_eq!([plan.rows[0], plan.rows[8], plan.rows[16], plan.rows[24]], [7, 3, 5, 40]);
        assert_eq!([plan.rows[32], plan.rows[56]], [1007, 1040]);
        assert_eq!([plan.rows[2 * 8 + 1], plan.rows[6 * 8 + 1]], [102, 1102]);
        // Block 1 holds neurons 32-36 (columns 128-132): lane 0 has 4, lane
        // 1 one, gate and up; the rest are padding.
        assert_eq!(real(&plan.rows[64..]), 10);
        assert_eq!([plan.rows[64 + 8], plan.rows[64 + 24], plan.rows[64 + 56]], [129, 131, 1131]);
        assert_eq!([plan.rows[64 + 1], plan.rows[64 + 32 + 1], plan.rows[64 + 8 + 1], plan.rows[64 + 40 + 1]], [132, 1132, p, p]);

        // Two threads. A run costs 26 a chunk and 32 a block of neurons:
        // after chunk 2 the halves cost 84 (2 chunks, 4 neurons) and 116 (2
        // chunks, 33 neurons); after chunk 1, 58 and 142; after chunk 3, 142
        // and 58.
        let two = FusedPlan::new(&slots, 1000, 2);
        assert_eq!(two.workgroups, 2);
        assert_eq!(two.table[..6], [0, 2, 4, 0, 1, 3]);
        assert_eq!(two.table[6..], plan.table[4..]);
        // Workgroup 0's block holds neurons 0-3; workgroup 1's first block
        // starts at its first neuron (4, column 100), and its second holds
        // neuron 36 (column 132) alone.
        assert_eq!(two.rows.len(), 192);
        assert_eq!([two.rows[0], two.rows[8], two.rows[16], two.rows[24], two.rows[32]], [7, 3, 5, 40, 1007]);
        assert_eq!(real(&two.rows[..64]), 8);
        assert_eq!([two.rows[64], two.rows[64 + 32], two.rows[64 + 1], two.rows[64 + 8 + 7]], [100, 1100, 104, 129]);
        assert_eq!(real(&two.rows[64..128]), 64);
        assert_eq!([two.rows[128], two.rows[128 + 32]], [132, 1132]);
        assert_eq!(real(&two.rows[128..]), 2);
        // Five threads: no more workgroups than chunks, one chunk each.
        let five = FusedPlan::new(&slots, 1000, 5);
        assert_eq!(five.workgroups, 4);
        assert_eq!(five.table[..10], [0, 1, 2, 3, 4, 0, 1, 1, 2, 3]);
    }

    /// The split's dearest run is the least any split has: against every
    /// split into two, on random layouts.
    #[test]
    fn split_minimises_the_dearest_run() {
        for seed in 0..50u32 {
            let chunks = 2 + (seed as usize * 7) % 30;
            let mut firsts = vec![0u32];
            for c in 0..chunks as u32 {
                let neurons = (c.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 33;
                firsts.push(firsts.last().unwrap() + neurons);
            }
            let bounds = split(&firsts, 2);
            assert_eq!((bounds[0], bounds[2]), (0, chunks as u32));
            let dearest = |a: usize| run_cost(&firsts, 0, a).max(run_cost(&firsts, a, chunks));
            let least = (0..=chunks).map(dearest).min().unwrap();
            assert_eq!(dearest(bounds[1] as usize), least, "seed {seed}: {firsts:?} split at {}", bounds[1]);
        }
    }

    /// The fused MLP gives x + the MLP of the active neurons on RMSNorm(x):
    /// the residual of 96 (a row block and a half of W_down), a quarter of
    /// 512 neurons listed out of order, over 1 to 3 workgroups and one per
    /// chunk; run twice, so the counter must have been reset. With an output
    /// projection (64 heads' values: two blocks of W_o's columns), x + W_o a
    /// first.
    #[test]
    fn fused_mlp_gives_the_residual_plus_the_mlp_of_the_active_neurons() {
        let ctx = crate::testing::gpu();
        if !runs_on(&ctx, KernelFamily::RowPerInvocation) {
            eprintln!("skipped: the fused MLP needs a CPU adapter with 8-wide subgroups");
            return;
        }
        let (dim, ffn, eps) = (96usize, 512usize, 1e-5f32);
        let (gate, up, down) = (q4_1_weights(ffn * dim, 150), q4_1_weights(ffn * dim, 151), q4_1_weights(dim * ffn, 152));
        let (x, norm_weight) = (random(dim, 153).iter().map(|v| 3.0 * v).collect::<Vec<f32>>(), random(dim, 154));
        let dense_gate_up = Matrix::upload(&ctx, "gate_up", &[gate.as_slice(), &up].concat(), 2 * ffn, dim, true);
        let dense_down = Matrix::upload(&ctx, "down", &down, dim, ffn, true);
        let (gub, dtb) = (storage_buffer(&ctx, "gate_up", &pack_gate_up(&gate, &up, ffn, dim)), storage_buffer(&ctx, "down_t", &to_f16(&transpose(&down, dim, ffn))));
        let active: Vec<u32> = (0..ffn as u32).rev().filter(|i| (i * 37 + 11) % 100 < 25).collect();
        let (ib, counts) = (storage_buffer(&ctx, "index", &active), storage_buffer(&ctx, "counts", &[active.len() as u32]));
        let compact = |threads| {
            let list = ActiveList { index: &ib, counts: &counts, index_offset: 0, layer: 0, max_count: active.len() };
            let sources = MlpSources { active: list, count: active.len(), gate_up: &gub, down_t: &dtb, dense_gate_up: Some(&dense_gate_up), dense_down: Some((&dense_down, &active)) };
            compact_mlp(&ctx, dim, true, Some(threads), &[sources]).remove(0)
        };
        let chunks = ColumnGroups::plan(&active, width_for(active.len()), ffn).slots() / BLOCK;
        assert!(chunks >= 4, "{chunks} chunks");
        let nwb = storage_buffer(&ctx, "norm weight", &norm_weight);
        let head_values = 64;
        let (wo, a) = (q4_1_weights(dim * head_values, 155), random(head_values, 156));
        let (wo_matrix, ab) = (Matrix::upload(&ctx, "wo", &wo, dim, head_values, true), storage_buffer(&ctx, "heads", &a));
        let o = OutputProjection { heads: &ab, o: &wo_matrix };
        assert!(OutputProjection::fits(&wo_matrix, dim));
        let step = |x: &[f32], with_o: bool| -> Vec<f32> {
            let x: Vec<f32> = match with_o {
                true => x.iter().zip(wo.chunks(head_values)).map(|(v, row)| v + row.iter().zip(&a).map(|(w, a)| w * a).sum::<f32>()).collect(),
                false => x.to_vec(),
            };
            let mlp = mlp_reference(&rmsnorm::reference(&x, &norm_weight, eps), &gate, &up, &down, ffn, &active);
            x.iter().zip(&mlp).map(|(a, m)| a + m).collect()
        };
        for with_o in [false, true] {
            for workgroups in [1, 2, 3, chunks] {
                let c = compact(workgroups);
                let DownInputs::Fused(state) = &c.inputs else { panic!("a grouped down on this adapter is fused") };
                assert_eq!((state.chunks, state.workgroups), (chunks, workgroups));
                let xb = storage_buffer(&ctx, "x", &x);
                let spec = FusedMlpSpec { dim, eps, x: &xb, norm_weight: &nwb, gate_up: &c.gate_up, down: &c.down, state, o: with_o.then_some(o) };
                let call = super::call(&ctx, &spec);
                let mut want = x.clone();
                let mut plan = Vec::new();
                call.plan("fused_mlp", &mut plan);
                let o_bytes = if with_o { wo_matrix.q4().unwrap().size() } else { 0 };
                assert_eq!(plan[0].weight_bytes, c.gate_up.q4().unwrap().size() + c.down.packed.as_ref().unwrap().buffer.size() + o_bytes);
                for run in 1..=2 {
                    run_plan(&ctx, &plan);
                    want = step(&want, with_o);
                    let err = max_err(&read_buffer_f32(&ctx, &xb, 0, dim).unwrap(), &want);
                    // Sums of 128 terms of size ~10 in another order: a few 1e-6
                    // relative; a neuron lost, or a slice added twice, is O(1).
                    assert!(err < 5e-5, "with W_o {with_o}, {workgroups} workgroups, run {run}: {err}");
                }
            }
        }
    }
}
