// A compacted MLP in one dispatch (CPU adapters whose workgroups of 8 are
// one subgroup: lavapipe): x += W_down (silu(W_gate n) * (W_up n)), n =
// RMSNorm(x), over a fixed mask's active neurons, where the two dispatches of
// matvec_rows_q4.wgsl and matvec_rows_q4g.wgsl pay a dispatch's fixed cost
// twice (20-35 us on lavapipe, a sixth of the layer's sparse MLP).
//
// The active neurons sit in slots of the grouped 4-bit W_down
// (kernels::column_groups), 32 slots a chunk, padded. Each workgroup takes a
// run of chunks (the host balances their cost):
//   - it computes the gate and up rows of the neurons in those chunks, from
//     a paired gate|up: the workgroup's neurons in slot order, in 64-row
//     blocks of 32 neurons of its own (in its block j, rows 8r + l are the
//     gate (r < 4) and up (r >= 4) rows of its neuron 32j + 4l + r % 4), so
//     that lane l ends with h of 4 neurons, padded after its last;
//   - stores h at the neurons' slots in workgroup memory (padding slots
//     stay zero, as their inputs must);
//   - multiplies its chunks' columns of W_down by h into its own slice of
//     `partial` [workgroups, dim].
// WGSL has no float atomics and no barrier across workgroups, so the
// workgroup that arrives last (a counter, as CUDA's threadFenceReduction
// sample does) adds the slices, in workgroup order, to x and resets the
// counter. The slices are plain stores ordered before the counter's
// increment: lavapipe's atomics are sequentially consistent, and all of a
// workgroup's invocations run on one thread. kernels::fused_mlp uses this
// kernel on such adapters only. dot_block, dot_groups and NIBBLE_SCALE come
// from linear_nibbles.wgsl, broadcast and slices_sum from one_dispatch_mlp.wgsl.
//
// Where the layer's heads are compacted too (o_k32 > 0), the attention's
// output projection comes first, x += W_o a, a the active heads' outputs and
// W_o their 4-bit columns: every workgroup computes all of it (at a low AR a
// few blocks of 32 columns), so that none waits for another before its
// RMSNorm, and the layer saves the dispatch of its own.

struct Params { dim: u32, chunks: u32, workgroups: u32, eps: f32, neuron_blocks: u32, o_k32: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> norm_weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> gate_up: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> down: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(6) var<storage, read_write> arrivals: array<atomic<u32>>;
// [workgroups + 1]: each workgroup's first chunk, and the count; then
// [workgroups + 1]: each workgroup's first block of gate|up, and the count;
// then [chunks + 1]: each chunk's first neuron (in slot order), and the
// count; then each neuron's slot.
@group(0) @binding(7) var<storage, read> table: array<u32>;
// The active heads' outputs [o_k32 * 32], and W_o's columns of them
// [dim, o_k32 * 32] in the 4-bit layout of matvec_rows_q4.wgsl (unused, and
// bound to any buffer, where o_k32 = 0).
@group(0) @binding(8) var<storage, read> heads: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> wo: array<vec4<u32>>;

const ROWS: u32 = 8u;
// Chunks one workgroup holds (kernels::fused_mlp launches enough workgroups).
const MAX_CHUNKS: u32 = 64u;
// Blocks of 32 in the model's width (kernels::fused_mlp::MAX_DIM).
const MAX_K32: u32 = 64u;

// Both matvecs' inputs, prepared once per workgroup: each lane keeps its
// own vec4 of every block of 32 (lane j holds vec4 j of the block), already
// scaled for dot_nibbles, and broadcasts hand all 8 to every lane; with the
// sums the m terms need. The normed x, and each block's sum:
var<private> x_in: array<vec4<f32>, MAX_K32>;
var<private> x_sum: array<f32, MAX_K32>;
// h by slot, per chunk, and each chunk's 4 groups' sums:
var<private> h: array<vec4<f32>, MAX_CHUNKS>;
var<private> h_sums: array<vec4<f32>, MAX_CHUNKS>;
// This workgroup's h by slot as the neurons' lanes leave it
// (zero-initialised, as WGSL's workgroup memory is: padding slots stay 0).
var<workgroup> by_slot: array<vec4<f32>, MAX_CHUNKS * 8u>;
// W_o a by row (zero without heads).
var<workgroup> o_out: array<f32, MAX_K32 * 32u>;

// A lane's vec4 of a block, scaled for dot_nibbles (even vec4s are x0, odd x1).
fn for_nibbles(mine: vec4<f32>, lane: u32) -> vec4<f32> {
    return mine * NIBBLE_SCALE[lane & 1u];
}

// Neuron block k's gate and up rows (one 64-row block of the paired
// gate|up, d and m per block of 32 inputs as in matvec_rows_q4.wgsl) on the
// normed input, and this lane's 4 values of h.
fn block_h(k: u32, lane: u32, k32: u32, norm_scale: f32) -> vec4<f32> {
    let wbase = k * 64u * k32;
    let scales = params.neuron_blocks * 64u * k32;
    var acc: array<f32, ROWS>;
    for (var i = 0u; i < k32; i++) {
        // sum (d q + m) x = d sum q x + m sum x
        let xs = broadcast(x_in[i]);
        let at = scales + ((k * k32 + i) * 8u + lane) * 2u;
        let dms = array<vec4<u32>, 2>(gate_up[at], gate_up[at + 1u]);
        for (var r = 0u; r < ROWS; r++) {
            let q = gate_up[wbase + (i * 8u + r) * 8u + lane];
            let dm = unpack2x16float(dms[r / 4u][r % 4u]);
            acc[r] += dm.x * dot_block(q, xs) + dm.y * x_sum[i];
        }
    }
    var mine: vec4<f32>;
    for (var r = 0u; r < 4u; r++) {
        let g = acc[r] * norm_scale;
        mine[r] = g / (1.0 + exp(-g)) * acc[r + 4u] * norm_scale;
    }
    return mine;
}

// o_out = W_o a, rows as matvec_rows_q4.wgsl computes them.
fn output_projection(lane: u32) {
    let p = params;
    let scales = ((p.dim + 63u) / 64u) * 64u * p.o_k32;
    for (var b = 0u; b * 64u < p.dim; b++) {
        var acc: array<f32, ROWS>;
        for (var i = 0u; i < p.o_k32; i++) {
            let mine = heads[8u * i + lane];
            let a_sum = subgroupAdd(dot(mine, vec4<f32>(1.0)));
            let xs = broadcast(for_nibbles(mine, lane));
            let at = scales + ((b * p.o_k32 + i) * 8u + lane) * 2u;
            let dms = array<vec4<u32>, 2>(wo[at], wo[at + 1u]);
            for (var r = 0u; r < ROWS; r++) {
                let q = wo[b * 64u * p.o_k32 + (i * 8u + r) * 8u + lane];
                let dm = unpack2x16float(dms[r / 4u][r % 4u]);
                acc[r] += dm.x * dot_block(q, xs) + dm.y * a_sum;
            }
        }
        for (var r = 0u; r < ROWS; r++) {
            let row = b * 64u + r * 8u + lane;
            if (row < p.dim) {
                o_out[row] = acc[r];
            }
        }
    }
    workgroupBarrier();
}

// Elements 4i .. 4i + 3 of W_o a.
fn o_out4(i: u32) -> vec4<f32> {
    return vec4<f32>(o_out[4u * i], o_out[4u * i + 1u], o_out[4u * i + 2u], o_out[4u * i + 3u]);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let p = params;
    let dim4 = p.dim / 4u;
    let k32 = p.dim / 32u;
    // This workgroup's chunks, and its blocks of gate|up.
    let c0 = table[wg.x];
    let c1 = table[wg.x + 1u];
    let k0 = table[p.workgroups + 1u + wg.x];
    let k1 = table[p.workgroups + 2u + wg.x];
    let firsts = 2u * (p.workgroups + 1u);

    if (p.o_k32 > 0u) {
        output_projection(lane);
    }
    // x (after the output projection) times the norm weight; the norm's
    // scale applies to the results.
    var sum_sq = 0.0;
    for (var i = 0u; i < k32; i++) {
        let raw = x[8u * i + lane] + o_out4(8u * i + lane);
        sum_sq += dot(raw, raw);
        let normed = raw * norm_weight[8u * i + lane];
        x_sum[i] = subgroupAdd(dot(normed, vec4<f32>(1.0)));
        x_in[i] = for_nibbles(normed, lane);
    }
    let norm_scale = inverseSqrt(subgroupAdd(sum_sq) / f32(p.dim) + p.eps);
    // Their neurons, [n0, n1) in slot order, by blocks of 32.
    let n0 = table[firsts + c0];
    let n1 = table[firsts + c1];
    for (var k = k0; k < k1; k++) {
        let mine = block_h(k, lane, k32, norm_scale);
        for (var r = 0u; r < 4u; r++) {
            let n = n0 + 32u * (k - k0) + 4u * lane + r;
            if (n < n1) {
                let at = table[firsts + p.chunks + 1u + n] - 32u * c0;
                by_slot[at / 4u][at % 4u] = mine[r];
            }
        }
    }
    workgroupBarrier();
    for (var c = c0; c < c1; c++) {
        let mine = by_slot[(c - c0) * 8u + lane];
        // Group g of 8 slots is lanes 2g and 2g + 1.
        let one = vec4<f32>(1.0);
        let pair = dot(mine, one) + subgroupShuffleXor(dot(mine, one), 1u);
        h_sums[c - c0] = vec4<f32>(subgroupBroadcast(pair, 0u), subgroupBroadcast(pair, 2u), subgroupBroadcast(pair, 4u), subgroupBroadcast(pair, 6u));
        h[c - c0] = for_nibbles(mine, lane);
    }

    // W_down over these chunks' slots, 64 rows at a time: its layout
    // (matvec_rows_q4g.wgsl) is [block][chunk][r][lane] pairs of vec4<u32>,
    // the quant words of 4 groups of 8 slots, then their scale words.
    for (var b = 0u; b * 64u < p.dim; b++) {
        var acc: array<f32, ROWS>;
        for (var c = c0; c < c1; c++) {
            let xs = broadcast(h[c - c0]);
            let sums = h_sums[c - c0];
            for (var r = 0u; r < ROWS; r++) {
                let at = 2u * (b * 64u * p.chunks + (c * 8u + r) * 8u + lane);
                acc[r] += dot_groups(down[at], down[at + 1u], xs, sums);
            }
        }
        for (var r = 0u; r < ROWS; r++) {
            let row = b * 64u + r * 8u + lane;
            if (row < p.dim) {
                partial[wg.x * p.dim + row] = acc[r];
            }
        }
    }

    // The last workgroup to arrive adds every slice, and W_o a, to x.
    storageBarrier();
    var arrived = 0u;
    if (lane == 0u) {
        arrived = atomicAdd(&arrivals[0], 1u);
    }
    if (subgroupBroadcast(arrived, 0u) + 1u == p.workgroups) {
        for (var i = lane; i < dim4; i += 8u) {
            x[i] = x[i] + o_out4(i) + slices_sum(i, p.dim, p.workgroups);
        }
        if (lane == 0u) {
            atomicStore(&arrivals[0], 0u);
        }
    }
}
