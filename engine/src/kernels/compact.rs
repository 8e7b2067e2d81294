//! Compaction of a fixed mask (`compact.wgsl`): the active units' weights
//! copied, on the GPU, into dense matrices of the layout the linear kernels
//! read. A mask kept for many tokens (prompt mode, a mask file) then decodes
//! with the dense matvec over only its share of the weights, which on CPU
//! adapters is faster per weight than gathering scattered rows.
//! - MLP neurons: their gate and up rows, and their columns of W_down.
//! - Attention heads: their query rows of W_q and their columns of W_o.
//!
//! Where the dense matrix has a 4-bit copy (`kernels::packed`), the copied
//! rows get one too (`compact_q4.wgsl`): rows keep their blocks of 32
//! weights, so the copy is exact. Columns cut across those blocks: W_o's
//! columns are whole blocks where heads are; W_down's are copied in groups
//! of 8 per block (`kernels::column_groups`) where those are faster to read
//! than f16 columns (`ColumnGroups::beats_f16`), and stay f16 otherwise.
//! Where the whole MLP runs in one dispatch (`kernels::fused_mlp`), the
//! gate|up rows are copied in that kernel's paired slot order instead.

use super::column_groups::{ColumnGroups, GROUP};
use super::fused_mlp::{FusedPlan, FusedState};
use super::linear::{Matrix, MatrixChunk, Output, Packed, INTERLEAVE_ROWS};
use super::packed::{self, Format, BLOCK};
use super::sparse::ActiveList;
use super::{run_calls, spread, Call};
use crate::gpu::{storage_buffer, uniform_buffer, zeroed_buffer, Binding, GpuContext, Kernel};

/// One layer's active neurons as dense matrices.
pub struct CompactMlp {
    /// [2 * width, dim]: the gate rows of the active neurons, then their up
    /// rows; fused, in the paired slot order of `fused_mlp::FusedPlan` (4
    /// bits only).
    pub gate_up: Matrix,
    /// [dim, width]: the active neurons' columns of W_down (f16); or, in
    /// groups, [dim, slots] in 4 bits (`Format::Q4Groups`).
    pub down: Matrix,
    /// Active neurons rounded up to a multiple of 8 (the rest are zero).
    pub width: usize,
    /// How the down projection gets its inputs.
    pub inputs: DownInputs,
}

/// How a compacted MLP's down projection gets its inputs.
pub enum DownInputs {
    /// f16 columns in the mask's order: the gate|up's outputs as they are.
    Columns,
    /// 4-bit groups: the gate|up stores each row at its slot.
    Slots(Slots),
    /// 4-bit groups, and the whole MLP in one dispatch (`kernels::fused_mlp`).
    Fused(FusedState),
}

impl CompactMlp {
    /// Whether W_down kept its 4 bits in groups.
    pub fn grouped(&self) -> bool {
        !matches!(self.inputs, DownInputs::Columns)
    }

    /// Whether the whole MLP runs in one dispatch (`kernels::fused_mlp`).
    pub fn fused(&self) -> bool {
        matches!(self.inputs, DownInputs::Fused(_))
    }
}

/// The lists a layer's 4-bit copies read: each grouped slot's source column
/// (a grouped W_down), and the paired gate|up's source rows and their count
/// (a fused layer).
#[derive(Default)]
struct CopyLists {
    slot_columns: Option<wgpu::Buffer>,
    paired_rows: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

/// The inputs of a grouped down (`kernels::column_groups`): gate|up row o is
/// stored at `table[o]` of `gate_up`, [gate (count) | up (count) | 1], whose
/// slots that no row is stored at stay zero, so padding columns add nothing.
pub struct Slots {
    pub count: usize,
    pub table: wgpu::Buffer,
    pub gate_up: wgpu::Buffer,
}

impl Slots {
    /// The compacted gate|up's output: each row to its slot.
    pub fn gate_up_output(&self) -> Output<'_> {
        Output::Slots { y: &self.gate_up, slots: &self.table, stride: 2 * self.count + 1 }
    }
}

/// One layer's active attention heads as dense matrices.
pub struct CompactHeads {
    /// [width + kv rows, dim]: the active heads' query rows, head after head
    /// in list order, then [W_k; W_v]: one fused projection.
    pub qkv: Matrix,
    /// [dim, width]: W_o's columns of the active query rows.
    pub o: Matrix,
    /// Active query rows (heads x head_dim) rounded up to a multiple of 8.
    pub width: usize,
}

/// Slots for `count` active units: a multiple of 8, as the linear kernels need.
pub fn width_for(count: usize) -> usize {
    count.div_ceil(8).max(1) * 8
}

/// A zeroed matrix to copy units into, with an empty 4-bit copy too when
/// `packed_source` (the dense matrix it is compacted from) has one and the
/// layout is interleaved.
fn empty_matrix(ctx: &GpuContext, name: &str, rows: usize, cols: usize, interleaved: bool, packed_source: Option<&Matrix>) -> Matrix {
    let stored_rows = if interleaved { rows.div_ceil(INTERLEAVE_ROWS) * INTERLEAVE_ROWS } else { rows };
    let buffer = zeroed_buffer(ctx, name, (stored_rows * cols * 2) as u64);
    let packed = q4_copy(ctx, packed_source.filter(|_| interleaved), rows, cols);
    Matrix { rows, cols, interleaved, chunks: vec![MatrixChunk { buffer, rows: 0..rows }], packed }
}

/// The kernel's modes (`MODE` in compact.wgsl).
#[derive(Clone, Copy)]
enum Mode {
    GateUp = 0,
    Columns = 1,
    Rows = 2,
}

/// One copy: `width` units of `list` from `src` into `dst` (from row `row0` in ROWS mode).
struct Job<'a> {
    mode: Mode,
    list: ActiveList<'a>,
    width: usize,
    row0: usize,
    src: &'a wgpu::Buffer,
    dst: &'a Matrix,
}

/// One copy between 4-bit matrices (see `compact_q4.wgsl`).
struct Q4Job<'a> {
    list: ActiveList<'a>,
    copy: Q4Copy,
    src: &'a Matrix,
    dst: &'a Matrix,
}

enum Q4Copy {
    /// In each of `halves` groups h, output row `row0 + h * width + a` is
    /// source row `src_row0 + h * src_half + list[a]`.
    Rows { width: usize, halves: usize, row0: usize, src_row0: usize, src_half: usize },
    /// Output block i of every row is the source block holding column
    /// `list[32 i]` (columns listed in whole, aligned blocks).
    ColumnBlocks,
    /// Slot s of every row is source column `list[s]` or padding (the
    /// grouped layout; see `kernels::column_groups`).
    ColumnGroups,
}

/// An empty 4-bit copy for a compacted matrix, when its source has one.
fn q4_copy(ctx: &GpuContext, source: Option<&Matrix>, rows: usize, cols: usize) -> Option<Packed> {
    source.and_then(|m| m.q4())?;
    Some(zeroed_packed(ctx, "compact q4", rows, cols, Format::Q4))
}

/// A zeroed packed [rows, cols] matrix in `format`.
fn zeroed_packed(ctx: &GpuContext, name: &str, rows: usize, cols: usize, format: Format) -> Packed {
    Packed { format, buffer: zeroed_buffer(ctx, name, (packed::units(rows, cols) * format.unit_words() * 4) as u64) }
}

fn q4_call(ctx: &GpuContext, j: &Q4Job) -> Call {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let kernel = Kernel::get(ctx, "compact_q4", include_str!("../../../shaders/compact_q4.wgsl"), &[U, R, R, R, W]);
    let (src_k32, out_k32) = (j.src.cols / BLOCK, j.dst.cols / BLOCK);
    let ([width, halves, row0, src_row0, src_half], mode, slots) = match j.copy {
        Q4Copy::Rows { width, halves, row0, src_row0, src_half } => ([width, halves, row0, src_row0, src_half], 0, halves * width * out_k32),
        Q4Copy::ColumnBlocks => ([0; 5], 1, j.dst.rows * out_k32),
        Q4Copy::ColumnGroups => ([0; 5], 2, j.dst.rows * j.dst.cols / GROUP),
    };
    let params = [src_k32, out_k32, j.list.index_offset, j.list.layer, row0, src_row0, src_half, halves, j.src.rows, j.dst.rows, width, mode].map(|v| v as u32);
    let params = uniform_buffer(ctx, "compact q4 params", &params);
    let src = j.src.q4().expect("source has a 4-bit copy");
    let dst = &j.dst.packed.as_ref().expect("output has a 4-bit copy").buffer;
    let slots = slots as u32;
    Call {
        group: kernel.bind(ctx, &[&params, j.list.index, j.list.counts, src, dst]),
        kernel,
        grid: Box::new(move |_| {
            let [x, y] = spread(slots.div_ceil(64));
            [x, y, 1]
        }),
    }
}

/// Runs the copies at once, so the matrices are ready for the next submission.
fn compact(ctx: &GpuContext, dim: usize, interleaved: bool, jobs: &[Job], q4_jobs: &[Q4Job]) {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    assert!(dim.is_multiple_of(8));
    let mut calls: Vec<Call> = jobs
        .iter()
        .map(|j| {
            let kernel = Kernel::specialized(ctx, "compact", include_str!("../../../shaders/compact.wgsl"), &[U, R, R, R, W], &[("MODE", j.mode as u32 as f64)]);
            let params = [dim, j.width, j.list.index_offset, j.list.layer, interleaved as usize, j.row0, 0, 0].map(|v| v as u32);
            let params = uniform_buffer(ctx, "compact params", &params);
            let out_rows = if let Mode::GateUp = j.mode { 2 * j.width } else { j.width };
            let slots = (out_rows * dim / 8) as u32;
            Call {
                group: kernel.bind(ctx, &[&params, j.list.index, j.list.counts, j.src, &j.dst.chunks[0].buffer]),
                kernel,
                grid: Box::new(move |_| {
                    let [x, y] = spread(slots.div_ceil(64));
                    [x, y, 1]
                }),
            }
        })
        .collect();
    calls.extend(q4_jobs.iter().map(|j| q4_call(ctx, j)));
    run_calls(ctx, &calls.iter().collect::<Vec<_>>(), 1);
}

/// One layer's active neurons (at most `count`; the list's count buffer says
/// how many) and the per-neuron layouts of sparse decoding they are copied
/// from: `gate_up` [ffn, gate row | up row] and `down_t` (W_down^T, [ffn,
/// dim]), both f16; and the dense [gate; up] matrix, whose 4-bit copy (if
/// any) the compacted gate|up rows are copied from.
pub struct MlpSources<'a> {
    pub active: ActiveList<'a>,
    pub count: usize,
    pub gate_up: &'a wgpu::Buffer,
    pub down_t: &'a wgpu::Buffer,
    pub dense_gate_up: Option<&'a Matrix>,
    /// To keep W_down in 4 bits: the dense W_down and the list as the GPU
    /// holds it (the first `count` entries), read back to plan its groups.
    pub dense_down: Option<(&'a Matrix, &'a [u32])>,
}

/// The grouped 4-bit copy of a layer's W_down, when its dense matrix has a
/// 4-bit copy and the groups are faster to read than f16 columns: an empty
/// matrix, and its plan.
fn grouped_down(ctx: &GpuContext, l: &MlpSources, width: usize, interleaved: bool) -> Option<(Matrix, ColumnGroups)> {
    let (dense, active) = l.dense_down.filter(|(m, _)| interleaved && m.q4().is_some())?;
    let plan = ColumnGroups::plan(&active[..l.count], width, dense.cols);
    if !plan.beats_f16(width) {
        return None;
    }
    Some((packed_only(ctx, "compact down q4 groups", dense.rows, plan.slots(), Format::Q4Groups), plan))
}

/// The slots a gate|up stores its rows at, for the grouped down of `plan`.
fn slot_store(ctx: &GpuContext, plan: &ColumnGroups) -> Slots {
    let count = plan.slots();
    Slots { count, table: storage_buffer(ctx, "compact gate_up slots", &plan.store_slot), gate_up: zeroed_buffer(ctx, "compact gate_up by slot", ((2 * count + 1) * 4) as u64) }
}

/// An empty packed matrix (packed matrices are interleaved) whose f16 copy
/// is a placeholder the kernels never read: the grouped W_down, and the
/// fused MLP's gate|up.
fn packed_only(ctx: &GpuContext, name: &str, rows: usize, cols: usize, format: Format) -> Matrix {
    let packed = zeroed_packed(ctx, name, rows, cols, format);
    let chunks = vec![MatrixChunk { buffer: zeroed_buffer(ctx, "compacted (no f16 copy)", 16), rows: 0..rows }];
    Matrix { rows, cols, interleaved: true, chunks, packed: Some(packed) }
}

/// Compacts every listed layer's active neurons, in one submission. With
/// `fused_threads`, layers whose W_down keeps 4 bits are laid out for the
/// fused MLP (`kernels::fused_mlp`), split among that many threads'
/// workgroups.
pub fn compact_mlp(ctx: &GpuContext, dim: usize, interleaved: bool, fused_threads: Option<usize>, layers: &[MlpSources]) -> Vec<CompactMlp> {
    let (outs, lists): (Vec<CompactMlp>, Vec<CopyLists>) = layers
        .iter()
        .map(|l| {
            let width = width_for(l.count);
            let f16_gate_up = || empty_matrix(ctx, "compact gate_up", 2 * width, dim, interleaved, l.dense_gate_up);
            let Some((down, plan)) = grouped_down(ctx, l, width, interleaved) else {
                let down = empty_matrix(ctx, "compact down", dim, width, interleaved, None);
                return (CompactMlp { gate_up: f16_gate_up(), down, width, inputs: DownInputs::Columns }, CopyLists::default());
            };
            let slot_columns = Some(storage_buffer(ctx, "compact down slot columns", &plan.slot_column));
            // The fused kernel copies its gate|up from the dense 4-bit rows.
            let fused_source = fused_threads.zip(l.dense_gate_up.filter(|m| m.q4().is_some() && dim <= super::fused_mlp::MAX_DIM));
            let Some((threads, dense_gate_up)) = fused_source else {
                let out = CompactMlp { gate_up: f16_gate_up(), down, width, inputs: DownInputs::Slots(slot_store(ctx, &plan)) };
                return (out, CopyLists { slot_columns, paired_rows: None });
            };
            let fused = FusedPlan::new(&plan.slot_column, dense_gate_up.rows / 2, threads);
            let paired_rows = Some((storage_buffer(ctx, "fused gate_up rows", &fused.rows), storage_buffer(ctx, "fused gate_up row count", &[fused.rows.len() as u32])));
            let gate_up = packed_only(ctx, "compact gate_up paired", fused.rows.len(), dim, Format::Q4);
            let out = CompactMlp { gate_up, down, width, inputs: DownInputs::Fused(FusedState::new(ctx, dim, &fused)) };
            (out, CopyLists { slot_columns, paired_rows })
        })
        .unzip();
    let jobs: Vec<Job> = layers
        .iter()
        .zip(&outs)
        .flat_map(|(l, out)| {
            let job = |mode, src, dst| Job { mode, list: l.active, width: out.width, row0: 0, src, dst };
            let f16_gate_up = (!out.fused()).then(|| job(Mode::GateUp, l.gate_up, &out.gate_up));
            let f16_down = (!out.grouped()).then(|| job(Mode::Columns, l.down_t, &out.down));
            f16_gate_up.into_iter().chain(f16_down)
        })
        .collect();
    let mut q4_jobs: Vec<Q4Job> = layers
        .iter()
        .zip(&outs)
        .zip(&lists)
        .filter(|((_, out), _)| out.gate_up.q4().is_some())
        .map(|((l, out), lists)| {
            let src = l.dense_gate_up.expect("a 4-bit copy has a source");
            match &lists.paired_rows {
                Some((rows, count)) => {
                    let list = ActiveList { index: rows, counts: count, index_offset: 0, layer: 0, max_count: out.gate_up.rows };
                    Q4Job { list, copy: Q4Copy::Rows { width: out.gate_up.rows, halves: 1, row0: 0, src_row0: 0, src_half: 0 }, src, dst: &out.gate_up }
                }
                None => Q4Job { list: l.active, copy: Q4Copy::Rows { width: out.width, halves: 2, row0: 0, src_row0: 0, src_half: src.rows / 2 }, src, dst: &out.gate_up },
            }
        })
        .collect();
    q4_jobs.extend(layers.iter().zip(&outs).zip(&lists).filter_map(|((l, out), lists)| {
        let columns = lists.slot_columns.as_ref()?;
        let list = ActiveList { index: columns, counts: columns, index_offset: 0, layer: 0, max_count: out.down.cols };
        Some(Q4Job { list, copy: Q4Copy::ColumnGroups, src: l.dense_down?.0, dst: &out.down })
    }));
    compact(ctx, dim, interleaved, &jobs, &q4_jobs);
    let grouped: Vec<String> = outs.iter().filter(|o| o.grouped()).map(|o| format!("{}/{}", o.down.cols, o.width)).collect();
    let fused_layers = outs.iter().filter(|o| o.fused()).count();
    log::debug!("compacted W_down: {} of {} layers in 4-bit groups, {fused_layers} fused (slots/width: {})", grouped.len(), outs.len(), grouped.join(" "));
    outs
}

/// One layer's active query rows (`active`, at most `count`) and the f16
/// row-major matrices they are copied from: `wq` [q_dim, dim], `w_kv`
/// ([W_k; W_v], copied whole after the query rows) and `wo_t` (W_o^T,
/// [q_dim, dim]); and the dense [W_q; W_k; W_v] and W_o matrices, whose
/// 4-bit copies (if any) the compacted projection's rows are copied from,
/// and the compacted W_o's columns (`dense_o` only where heads are whole
/// blocks of 32 columns).
pub struct HeadSources<'a> {
    pub active: ActiveList<'a>,
    pub count: usize,
    pub wq: &'a wgpu::Buffer,
    pub w_kv: &'a wgpu::Buffer,
    pub wo_t: &'a wgpu::Buffer,
    pub dense_qkv: Option<&'a Matrix>,
    pub dense_o: Option<&'a Matrix>,
}

/// Compacts every listed layer's active heads, in one submission. `kv` lists
/// all of [W_k; W_v]'s rows (`kv.max_count` of them).
pub fn compact_heads(ctx: &GpuContext, dim: usize, interleaved: bool, kv: ActiveList, layers: &[HeadSources]) -> Vec<CompactHeads> {
    let outs: Vec<CompactHeads> = layers
        .iter()
        .map(|l| {
            let width = width_for(l.count);
            CompactHeads {
                qkv: empty_matrix(ctx, "compact wqkv", width + kv.max_count, dim, interleaved, l.dense_qkv),
                // Whole heads are whole blocks of W_o's columns only when the width is.
                o: empty_matrix(ctx, "compact wo", dim, width, interleaved, l.dense_o.filter(|_| width.is_multiple_of(BLOCK))),
                width,
            }
        })
        .collect();
    let jobs: Vec<Job> = layers
        .iter()
        .zip(&outs)
        .flat_map(|(l, out)| {
            let width = out.width;
            [
                Job { mode: Mode::Rows, list: l.active, width, row0: 0, src: l.wq, dst: &out.qkv },
                Job { mode: Mode::Rows, list: kv, width: kv.max_count, row0: width, src: l.w_kv, dst: &out.qkv },
                Job { mode: Mode::Columns, list: l.active, width, row0: 0, src: l.wo_t, dst: &out.o },
            ]
        })
        .collect();
    // The query rows by their ids, then every key and value row after them;
    // W_o's columns of the active heads.
    let mut q4_jobs: Vec<Q4Job> = layers
        .iter()
        .zip(&outs)
        .filter(|(_, out)| out.qkv.q4().is_some())
        .flat_map(|(l, out)| {
            let src = l.dense_qkv.expect("a 4-bit copy has a source");
            let job = |list, width, row0, src_row0| Q4Job { list, copy: Q4Copy::Rows { width, halves: 1, row0, src_row0, src_half: 0 }, src, dst: &out.qkv };
            [job(l.active, out.width, 0, 0), job(kv, kv.max_count, out.width, src.rows - kv.max_count)]
        })
        .collect();
    q4_jobs.extend(layers.iter().zip(&outs).filter(|(_, out)| out.o.q4().is_some()).map(|(l, out)| Q4Job {
        list: l.active,
        copy: Q4Copy::ColumnBlocks,
        src: l.dense_o.expect("a 4-bit copy has a source"),
        dst: &out.o,
    }));
    compact(ctx, dim, interleaved, &jobs, &q4_jobs);
    outs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer};
    use crate::kernels::linear::{LinearCall, LinearOptions, Output, QkvOut};
    use crate::kernels::sparse::mlp_reference;
    use crate::kernels::sparse::tests::{pack_gate_up, to_f16, transpose};
    use crate::kernels::{run_plan, swiglu, test_util::*, KernelFamily, Step};

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
            let c = compact_mlp(&ctx, dim, interleaved, None, &[MlpSources { active: list, count: active.len(), gate_up: &gub, down_t: &dtb, dense_gate_up: None, dense_down: None }]).remove(0);
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
            run_plan(&ctx, &plan);
            let got = read_buffer_f32(&ctx, &y, 0, dim).unwrap();
            let mut want = mlp_reference(&x, &gate, &up, &down, ffn, &active);
            want.iter_mut().zip(&residual).for_each(|(a, b)| *a += b);
            // Dot products of 72 and sums of up to 130 terms of size ~5 in
            // another order: a few 1e-6; a wrong or missing neuron is O(1).
            assert!(max_err(&got, &want) < 5e-5, "{family:?} {} active: {}", active.len(), max_err(&got, &want));
        }
    }

    /// Compacted heads through the dense kernels: the fused projection gives
    /// the listed query rows in list order and every key and value row, and
    /// W_o runs over only those query rows; in both layouts.
    #[test]
    fn compacted_heads_give_the_listed_query_rows_keys_values_and_output_columns() {
        let ctx = crate::testing::gpu();
        let (dim, q_dim, hd, kv_dim) = (72usize, 64usize, 16usize, 32usize);
        let half = |v: Vec<f32>| crate::testing::round_f16(&v);
        let (x, wq, w_kv, wo) = (random(dim, 120), half(random(q_dim * dim, 121)), half(random(2 * kv_dim * dim, 124)), half(random(dim * q_dim, 122)));
        let wqb = storage_buffer(&ctx, "wq", &to_f16(&wq));
        let (wkvb, wotb, xb) = (storage_buffer(&ctx, "w_kv", &to_f16(&w_kv)), storage_buffer(&ctx, "wo_t", &to_f16(&transpose(&wo, dim, q_dim))), storage_buffer(&ctx, "x", &x));
        let (kv_index, kv_count) = (storage_buffer(&ctx, "kv rows", &(0..2 * kv_dim as u32).collect::<Vec<_>>()), storage_buffer(&ctx, "kv count", &[2 * kv_dim as u32]));
        let kv = ActiveList { index: &kv_index, counts: &kv_count, index_offset: 0, layer: 0, max_count: 2 * kv_dim };
        let step = uniform_buffer(&ctx, "step", &Step::new(1, 0));
        for (family, heads) in [(KernelFamily::RowPerInvocation, vec![3u32, 1]), (KernelFamily::Cooperative, vec![2u32]), (KernelFamily::Cooperative, vec![0u32, 1, 2, 3])] {
            let rows: Vec<u32> = heads.iter().flat_map(|&h| h * hd as u32..(h + 1) * hd as u32).collect();
            let (ib, counts) = (storage_buffer(&ctx, "index", &rows), storage_buffer(&ctx, "counts", &[rows.len() as u32]));
            let list = ActiveList { index: &ib, counts: &counts, index_offset: 0, layer: 0, max_count: rows.len() };
            let interleaved = family == KernelFamily::RowPerInvocation;
            let c = compact_heads(&ctx, dim, interleaved, kv, &[HeadSources { active: list, count: rows.len(), wq: &wqb, w_kv: &wkvb, wo_t: &wotb, dense_qkv: None, dense_o: None }]).remove(0);
            assert_eq!(c.width, rows.len());
            let (q_out, k_out, v_out) = (zeroed_buffer(&ctx, "q", (c.width * 4) as u64), zeroed_buffer(&ctx, "k", (kv_dim * 4) as u64), zeroed_buffer(&ctx, "v", (kv_dim * 4) as u64));
            let h = storage_buffer(&ctx, "h", &random(c.width, 123));
            let y = zeroed_buffer(&ctx, "y", (dim * 4) as u64);
            let out = QkvOut { q: &q_out, q_rows: c.width, k_cache: &k_out, v_cache: &v_out, kv_rows: kv_dim, rope: None };
            let (qkv_call, o_call) = (LinearCall::build_for(&ctx, &c.qkv, &step, &xb, Output::Qkv(&out), family), LinearCall::with_family(&ctx, &c.o, &step, &h, &y, LinearOptions::default(), family));
            let mut plan = Vec::new();
            qkv_call.plan("qkv", 1, &mut plan);
            o_call.plan("o", 1, &mut plan);
            run_plan(&ctx, &plan);
            let q_full = crate::kernels::linear::reference(&x, &wq, q_dim, dim);
            let want_q: Vec<f32> = rows.iter().map(|&r| q_full[r as usize]).collect();
            assert!(max_err(&read_buffer_f32(&ctx, &q_out, 0, c.width).unwrap(), &want_q) < 1e-4, "{family:?} {heads:?} queries");
            let kv_full = crate::kernels::linear::reference(&x, &w_kv, 2 * kv_dim, dim);
            assert!(max_err(&read_buffer_f32(&ctx, &k_out, 0, kv_dim).unwrap(), &kv_full[..kv_dim]) < 1e-4, "{family:?} {heads:?} keys");
            assert!(max_err(&read_buffer_f32(&ctx, &v_out, 0, kv_dim).unwrap(), &kv_full[kv_dim..]) < 1e-4, "{family:?} {heads:?} values");
            // W_o applied to h placed at the listed rows of a full head vector.
            let hv = read_buffer_f32(&ctx, &h, 0, c.width).unwrap();
            let mut full = vec![0.0f32; q_dim];
            rows.iter().zip(&hv).for_each(|(&r, &v)| full[r as usize] = v);
            let want_y = crate::kernels::linear::reference(&full, &wo, dim, q_dim);
            assert!(max_err(&read_buffer_f32(&ctx, &y, 0, dim).unwrap(), &want_y) < 1e-4, "{family:?} {heads:?} output");
        }
    }
    /// A 4-bit W_down compacted in groups (`kernels::column_groups`): the
    /// gate|up rows stored at their slots, then the grouped matvec with SwiGLU
    /// fused (and SwiGLU on its own, then the matvec), give the MLP of only
    /// the active neurons, listed out of order; with the inputs shared
    /// through subgroups and loaded by every invocation. A mask spread too
    /// thinly keeps W_down in f16.
    #[test]
    fn grouped_4_bit_down_gives_the_mlp_of_the_active_neurons() {
        use crate::kernels::linear::FusedInput;
        for ctx in [crate::testing::gpu(), crate::testing::gpu_without_subgroups()] {
            let family = KernelFamily::RowPerInvocation;
            let (dim, ffn) = (96usize, 256usize);
            let (gate, up, down) = (q4_1_weights(ffn * dim, 140), q4_1_weights(ffn * dim, 141), q4_1_weights(dim * ffn, 142));
            let x: Vec<f32> = random(dim, 143).iter().map(|v| 2.0 * v).collect();
            let dense_gate_up = Matrix::upload(&ctx, "gate_up", &[gate.as_slice(), &up].concat(), 2 * ffn, dim, true);
            let dense_down = Matrix::upload(&ctx, "down", &down, dim, ffn, true);
            assert!(dense_gate_up.q4().is_some() && dense_down.q4().is_some());
            let (gub, dtb, xb) = (storage_buffer(&ctx, "gate_up", &pack_gate_up(&gate, &up, ffn, dim)), storage_buffer(&ctx, "down_t", &to_f16(&transpose(&down, dim, ffn))), storage_buffer(&ctx, "x", &x));
            let step = uniform_buffer(&ctx, "step", &Step::new(1, 0));
            // A quarter of the neurons, in descending order; then 5 in 5 blocks.
            let quarter: Vec<u32> = (0..ffn as u32).rev().filter(|i| (i * 37 + 11) % 100 < 25).collect();
            for (active, grouped) in [(quarter, true), (vec![250u32, 3, 40, 100, 170], false)] {
                let (ib, counts) = (storage_buffer(&ctx, "index", &active), storage_buffer(&ctx, "counts", &[active.len() as u32]));
                let list = ActiveList { index: &ib, counts: &counts, index_offset: 0, layer: 0, max_count: active.len() };
                let sources = MlpSources { active: list, count: active.len(), gate_up: &gub, down_t: &dtb, dense_gate_up: Some(&dense_gate_up), dense_down: Some((&dense_down, &active)) };
                let c = compact_mlp(&ctx, dim, true, None, &[sources]).remove(0);
                assert_eq!(c.grouped(), grouped, "{} active", active.len());
                let residual = random(dim, 144);
                // The f16 columns hold the weights rounded to f16; the groups hold them exactly.
                let held_down = if grouped { down.clone() } else { crate::testing::round_f16(&down) };
                let mut want = mlp_reference(&x, &gate, &up, &held_down, ffn, &active);
                want.iter_mut().zip(&residual).for_each(|(a, b)| *a += b);
                let accumulate = LinearOptions { accumulate: true, ..Default::default() };
                let DownInputs::Slots(slots) = &c.inputs else {
                    let gu_out = zeroed_buffer(&ctx, "gu", (2 * c.width * 4) as u64);
                    let y = storage_buffer(&ctx, "y", &residual);
                    let gu_call = LinearCall::with_family(&ctx, &c.gate_up, &step, &xb, &gu_out, LinearOptions::default(), family);
                    let down_call = LinearCall::fused(&ctx, &c.down, &step, &gu_out, Output::One(&y, accumulate), FusedInput::SwiGlu, family);
                    let mut plan = Vec::new();
                    gu_call.plan("gate_up", 1, &mut plan);
                    down_call.plan("down", 1, &mut plan);
                    run_plan(&ctx, &plan);
                    assert!(max_err(&read_buffer_f32(&ctx, &y, 0, dim).unwrap(), &want) < 5e-5, "f16 down");
                    continue;
                };
                assert_eq!(c.down.packed.as_ref().map(|p| p.format), Some(Format::Q4Groups));
                assert!(slots.count < 2 * c.width, "{} slots for {} neurons", slots.count, active.len());
                let gu_call = LinearCall::build_for(&ctx, &c.gate_up, &step, &xb, slots.gate_up_output(), family);
                for fused in [true, false] {
                    let y = storage_buffer(&ctx, "y", &residual);
                    let h = zeroed_buffer(&ctx, "h", (slots.count * 4) as u64);
                    let act = swiglu::call(&ctx, slots.count, &step, &slots.gate_up, &h);
                    let down_call = if fused {
                        LinearCall::fused(&ctx, &c.down, &step, &slots.gate_up, Output::One(&y, accumulate), FusedInput::SwiGlu, family)
                    } else {
                        LinearCall::with_family(&ctx, &c.down, &step, &h, &y, accumulate, family)
                    };
                    let mut plan = Vec::new();
                    gu_call.plan("gate_up", 1, &mut plan);
                    if !fused {
                        act.plan("swiglu", 1, &mut plan);
                    }
                    down_call.plan("down", 1, &mut plan);
                    run_plan(&ctx, &plan);
                    // Sums of 64 terms of size ~10 in another order: a few
                    // 1e-6 relative; a neuron lost or misplaced is O(1).
                    let err = max_err(&read_buffer_f32(&ctx, &y, 0, dim).unwrap(), &want);
                    assert!(err < 5e-5, "subgroups {} fused {fused}: {err}", ctx.has_subgroups_of_8());
                }
            }
        }
    }

    /// Where the dense matrices have 4-bit copies, the compacted matrices get
    /// them too, and the 4-bit matvec over them gives the listed gate and up
    /// rows (padding zero); the listed query rows, then every key and value
    /// row; and W_o over the listed heads' columns (heads of 32, whole blocks).
    #[test]
    fn compacted_rows_keep_the_4_bit_copy() {
        let ctx = crate::testing::gpu();
        let family = KernelFamily::RowPerInvocation;
        let (dim, ffn, q_dim, kv_dim) = (96usize, 130usize, 96usize, 32usize);
        let x = random(dim, 130);
        let (xb, step) = (storage_buffer(&ctx, "x", &x), uniform_buffer(&ctx, "step", &Step::new(1, 0)));
        let run_on = |m: &Matrix, xb: &wgpu::Buffer, rows: usize| -> Vec<f32> {
            assert!(m.q4().is_some(), "the compacted matrix has a 4-bit copy");
            let y = zeroed_buffer(&ctx, "y", (rows * 4) as u64);
            let mut plan = Vec::new();
            let call = LinearCall::with_family(&ctx, m, &step, xb, &y, LinearOptions::default(), family);
            call.plan("linear", 1, &mut plan);
            run_plan(&ctx, &plan);
            read_buffer_f32(&ctx, &y, 0, rows).unwrap()
        };
        let run = |m: &Matrix, rows: usize| run_on(m, &xb, rows);
        let dummy = storage_buffer(&ctx, "f16 sources (not checked here)", &vec![0u32; ffn * dim]);
        // MLP: 13 of 130 neurons, so 3 padding slots.
        let gate_up = q4_1_weights(2 * ffn * dim, 131);
        let dense = Matrix::upload(&ctx, "gate_up", &gate_up, 2 * ffn, dim, true);
        let active: Vec<u32> = (0..13).map(|i| (i * 37 + 5) % ffn as u32).collect();
        let (ib, counts) = (storage_buffer(&ctx, "index", &active), storage_buffer(&ctx, "counts", &[active.len() as u32]));
        let list = ActiveList { index: &ib, counts: &counts, index_offset: 0, layer: 0, max_count: active.len() };
        let c = compact_mlp(&ctx, dim, true, None, &[MlpSources { active: list, count: active.len(), gate_up: &dummy, down_t: &dummy, dense_gate_up: Some(&dense), dense_down: None }]).remove(0);
        let full = crate::kernels::linear::reference(&x, &gate_up, 2 * ffn, dim);
        let mut want = vec![0.0f32; 2 * c.width];
        for (a, &n) in active.iter().enumerate() {
            want[a] = full[n as usize];
            want[c.width + a] = full[ffn + n as usize];
        }
        assert!(max_err(&run(&c.gate_up, 2 * c.width), &want) < 1e-4, "gate and up rows");
        // Heads of 32: query rows 64..96 and 0..32, then the 64 key and value rows.
        let qkv = q4_1_weights((q_dim + 2 * kv_dim) * dim, 132);
        let dense = Matrix::upload(&ctx, "qkv", &qkv, q_dim + 2 * kv_dim, dim, true);
        let rows: Vec<u32> = (64..96).chain(0..32).collect();
        let (ib, counts) = (storage_buffer(&ctx, "index", &rows), storage_buffer(&ctx, "counts", &[rows.len() as u32]));
        let list = ActiveList { index: &ib, counts: &counts, index_offset: 0, layer: 0, max_count: rows.len() };
        let (kv_index, kv_count) = (storage_buffer(&ctx, "kv rows", &(0..2 * kv_dim as u32).collect::<Vec<_>>()), storage_buffer(&ctx, "kv count", &[2 * kv_dim as u32]));
        let kv = ActiveList { index: &kv_index, counts: &kv_count, index_offset: 0, layer: 0, max_count: 2 * kv_dim };
        let wo = q4_1_weights(dim * q_dim, 133);
        let dense_o = Matrix::upload(&ctx, "wo", &wo, dim, q_dim, true);
        let sources = HeadSources { active: list, count: rows.len(), wq: &dummy, w_kv: &dummy, wo_t: &dummy, dense_qkv: Some(&dense), dense_o: Some(&dense_o) };
        let c = compact_heads(&ctx, dim, true, kv, &[sources]).remove(0);
        let full = crate::kernels::linear::reference(&x, &qkv, q_dim + 2 * kv_dim, dim);
        let want: Vec<f32> = rows.iter().map(|&r| full[r as usize]).chain(full[q_dim..].iter().copied()).collect();
        assert!(max_err(&run(&c.qkv, c.width + 2 * kv_dim), &want) < 1e-4, "query, key and value rows");
        // W_o applied to h placed at the listed rows of a full head vector.
        let h = random(c.width, 134);
        let mut placed = vec![0.0f32; q_dim];
        rows.iter().zip(&h).for_each(|(&r, &v)| placed[r as usize] = v);
        let want_o = crate::kernels::linear::reference(&placed, &wo, dim, q_dim);
        assert!(max_err(&run_on(&c.o, &storage_buffer(&ctx, "h", &h), dim), &want_o) < 1e-4, "output columns");
    }
}
