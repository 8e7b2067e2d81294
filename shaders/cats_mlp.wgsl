// A per-token gate rule's MLP in one dispatch (CPU adapters whose workgroups
// of 8 are one subgroup: lavapipe, as fused_mlp.wgsl):
//   n = RMSNorm(x), g = W_gate n, a_i = silu(g_i),
//   kept i: |a_i| * w_i >= t_layer (CATS, w = 1, or a file's weights),
//   x += sum over kept i of a_i (W_up[i] . n) W_down[:, i].
// Every gate row is computed (the rule needs them); only the kept neurons'
// up rows and W_down columns are read, from per-neuron 4-bit copies
// (kernels::cats_mlp::neuron_weights), so a dropped neuron costs a third of
// a dense one.
//
// Each workgroup owns a run of 64-neuron blocks. For each block it computes
// the gate rows from the model's packed [gate; up] (the layout of
// matvec_rows_q4.wgsl: lane l holds rows 8r + l), applies the rule, lists
// each half block's kept neurons (one 32-neuron block of W_down's Q4_1
// scales) in workgroup memory, and for each of them computes its up row
// (the 8 lanes split the row, a word each per pair of blocks) and adds
// h W_down[:, i] to per-row sums of the quants (lane l holds rows
// 8 (l + 8k) + e); at the end of the half block those sums get the block's
// scales. Its slice of W_down h goes to `partial`; the last workgroup to
// arrive adds the slices to x, as fused_mlp.wgsl does (see there why that is
// sound on these adapters), writes the layer's kept count and resets the
// counter. dot_nibbles and NIBBLE_SCALE come from linear_nibbles.wgsl.

struct Params { dim: u32, ffn: u32, workgroups: u32, eps: f32, layer: u32, gate_units: u32, wg_blocks: u32, up_k32: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> norm_weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> gate_up: array<vec4<u32>>;
// kernels::cats_mlp::neuron_weights: up quants [ffn][up_k32][4], up scales
// [ffn][up_k32], W_down's columns [ffn][dim / 8] (word j: rows 8j .. 8j + 7),
// W_down's scales [ffn / 32][dim].
@group(0) @binding(4) var<storage, read> neurons: array<u32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
// [0]: the arrival counter; [1 + w]: workgroup w's kept count.
@group(0) @binding(6) var<storage, read_write> arrivals: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> rule_weights: array<f32>;
@group(0) @binding(8) var<storage, read> thresholds: array<f32>;
@group(0) @binding(9) var<storage, read_write> bitmap: array<u32>;
@group(0) @binding(10) var<storage, read_write> counts: array<u32>;

// Blocks of 32 in the model's width, and rows per lane (kernels::cats_mlp::MAX_DIM).
const MAX_K32: u32 = 64u;
const MAX_ROWS4: u32 = 64u;

// The gate rows' input, as fused_mlp.wgsl keeps it: lane j holds vec4 j of
// every block of 32, scaled for dot_nibbles, and each block's sum.
var<private> x_in: array<vec4<f32>, MAX_K32>;
var<private> x_sum: array<f32, MAX_K32>;
// The up rows' input: this lane's word (l % 4) of block 2j + l / 4, as the
// two vec4s dot_nibbles takes, and the word's 8 inputs' sum.
var<private> up_x0: array<vec4<f32>, MAX_K32 / 2u>;
var<private> up_x1: array<vec4<f32>, MAX_K32 / 2u>;
var<private> up_sum: array<f32, MAX_K32 / 2u>;
// This lane's rows of W_down h (acc), and of the current block's quants times h (quant_sums).
var<private> acc: array<vec4<f32>, MAX_ROWS4>;
var<private> quant_sums: array<vec4<f32>, MAX_ROWS4>;

// A half block's kept neurons and their silu(gate), and how many.
var<workgroup> kept_ids: array<u32, 32>;
var<workgroup> kept_acts: array<f32, 32>;
var<workgroup> kept_count: u32;

// Every lane's vec4 `mine`, lane j's as element j.
fn broadcast(mine: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}

// Gate rows 64 kb + 8 r + lane, r < 8, on the normed input (without its scale).
fn gate_block(kb: u32, lane: u32, k32: u32) -> array<f32, 8> {
    let wbase = kb * 64u * k32;
    var g: array<f32, 8>;
    for (var i = 0u; i < k32; i++) {
        let xs = broadcast(x_in[i]);
        let at = params.gate_units + ((kb * k32 + i) * 8u + lane) * 2u;
        let dms = array<vec4<u32>, 2>(gate_up[at], gate_up[at + 1u]);
        for (var r = 0u; r < 8u; r++) {
            let q = gate_up[wbase + (i * 8u + r) * 8u + lane];
            let dm = unpack2x16float(dms[r / 4u][r % 4u]);
            g[r] += dm.x * dot_block(q, xs) + dm.y * x_sum[i];
        }
    }
    return g;
}

// Neuron n's up row on the normed input (without its scale): each lane takes
// its word of every pair of blocks, and the lanes' parts are summed.
fn up_row(n: u32, lane: u32) -> f32 {
    let k32 = params.up_k32;
    let scales = params.ffn * k32 * 4u;
    var part = 0.0;
    for (var j = 0u; j < k32 / 2u; j++) {
        let block = 2u * j + lane / 4u;
        let word = neurons[(n * k32 + block) * 4u + lane % 4u];
        let dm = unpack2x16float(neurons[scales + n * k32 + block]);
        part += dm.x * dot_nibbles(word, up_x0[j], up_x1[j]) + dm.y * up_sum[j];
    }
    return subgroupAdd(part);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let p = params;
    let dim4 = p.dim / 4u;
    let k32 = p.dim / 32u;
    let rows8 = p.dim / 64u;
    let columns = p.ffn * p.up_k32 * 5u;
    let down_scales = columns + p.ffn * (p.dim / 8u);
    let layer_at = p.layer * p.ffn;
    let threshold = thresholds[p.layer];

    // x times the norm weight; the norm's scale applies to the results.
    var sum_sq = 0.0;
    for (var i = 0u; i < k32; i++) {
        let raw = x[8u * i + lane];
        sum_sq += dot(raw, raw);
        let normed = raw * norm_weight[8u * i + lane];
        x_sum[i] = subgroupAdd(dot(normed, vec4<f32>(1.0)));
        x_in[i] = normed * NIBBLE_SCALE[lane & 1u];
        // Word w of block i is lanes 2w (x0) and 2w + 1 (x1).
        let pair = dot(normed, vec4<f32>(1.0)) + subgroupShuffleXor(dot(normed, vec4<f32>(1.0)), 1u);
        let src = 2u * (lane % 4u);
        let x0 = subgroupShuffle(x_in[i], src);
        let x1 = subgroupShuffle(x_in[i], src + 1u);
        let s = subgroupShuffle(pair, src);
        if (i % 2u == lane / 4u) {
            up_x0[i / 2u] = x0;
            up_x1[i / 2u] = x1;
            up_sum[i / 2u] = s;
        }
    }
    let norm_scale = inverseSqrt(subgroupAdd(sum_sq) / f32(p.dim) + p.eps);

    let b0 = wg.x * p.wg_blocks;
    let b1 = min(p.ffn / 64u, b0 + p.wg_blocks);
    var kept_here = 0u;
    for (var kb = b0; kb < b1; kb++) {
        let g = gate_block(kb, lane, k32);
        for (var half = 0u; half < 2u; half++) {
            // The rule over rows 4 half .. 4 half + 3 of each lane: neuron
            // block 2 kb + half, listed in workgroup memory.
            var listed = 0u;
            for (var r = 4u * half; r < 4u * half + 4u; r++) {
                let n = kb * 64u + 8u * r + lane;
                let gate = g[r] * norm_scale;
                let act = gate / (1.0 + exp(-gate));
                let on = abs(act) * rule_weights[layer_at + n] >= threshold;
                bitmap[layer_at + n] = select(0u, 1u, on);
                let at = listed + subgroupExclusiveAdd(select(0u, 1u, on));
                if (on) {
                    kept_ids[at] = n;
                    kept_acts[at] = act;
                }
                listed += subgroupAdd(select(0u, 1u, on));
            }
            if (lane == 0u) {
                kept_count = listed;
            }
            let count = workgroupUniformLoad(&kept_count);
            kept_here += count;
            // Each kept neuron's h times its W_down column, in quants.
            var h_sum = 0.0;
            for (var a = 0u; a < count; a++) {
                let n = kept_ids[a];
                let h = kept_acts[a] * up_row(n, lane) * norm_scale;
                h_sum += h;
                let column = columns + n * (p.dim / 8u);
                for (var k = 0u; k < rows8; k++) {
                    let word = neurons[column + lane + 8u * k];
                    quant_sums[2u * k] += vec4<f32>(vec4<u32>(word) & vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u)) * h;
                    quant_sums[2u * k + 1u] += vec4<f32>(vec4<u32>(word & 0xF0000u, word & 0xF00000u, word & 0xF000000u, word >> 28u)) * h;
                }
            }
            // The block's scales: row r's d and m (one word) at [block][r].
            if (count > 0u) {
                let scales = down_scales + (2u * kb + half) * p.dim;
                for (var k = 0u; k < rows8; k++) {
                    let row = scales + 8u * (lane + 8u * k);
                    for (var e = 0u; e < 2u; e++) {
                        let dm0 = unpack2x16float(neurons[row + 4u * e]);
                        let dm1 = unpack2x16float(neurons[row + 4u * e + 1u]);
                        let dm2 = unpack2x16float(neurons[row + 4u * e + 2u]);
                        let dm3 = unpack2x16float(neurons[row + 4u * e + 3u]);
                        let d = vec4<f32>(dm0.x, dm1.x, dm2.x, dm3.x) * NIBBLE_SCALE[e];
                        let m = vec4<f32>(dm0.y, dm1.y, dm2.y, dm3.y);
                        acc[2u * k + e] += d * quant_sums[2u * k + e] + m * h_sum;
                        quant_sums[2u * k + e] = vec4<f32>(0.0);
                    }
                }
            }
            workgroupBarrier();
        }
    }
    for (var k = 0u; k < rows8; k++) {
        let row = 8u * (lane + 8u * k);
        for (var e = 0u; e < 2u; e++) {
            let v = acc[2u * k + e];
            let at = wg.x * p.dim + row + 4u * e;
            partial[at] = v.x;
            partial[at + 1u] = v.y;
            partial[at + 2u] = v.z;
            partial[at + 3u] = v.w;
        }
    }

    // The last workgroup to arrive adds every slice to x.
    storageBarrier();
    var arrived = 0u;
    if (lane == 0u) {
        atomicStore(&arrivals[1u + wg.x], kept_here);
        arrived = atomicAdd(&arrivals[0], 1u);
    }
    if (subgroupBroadcast(arrived, 0u) + 1u == p.workgroups) {
        for (var i = lane; i < dim4; i += 8u) {
            var sum = vec4<f32>(0.0);
            for (var w = 0u; w < p.workgroups; w++) {
                let at = w * p.dim + 4u * i;
                sum += vec4<f32>(partial[at], partial[at + 1u], partial[at + 2u], partial[at + 3u]);
            }
            x[i] = x[i] + sum;
        }
        if (lane == 0u) {
            var kept = 0u;
            for (var w = 0u; w < p.workgroups; w++) {
                kept += atomicLoad(&arrivals[1u + w]);
            }
            counts[p.layer] = kept;
            atomicStore(&arrivals[0], 0u);
        }
    }
}
