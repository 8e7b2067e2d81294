// A per-token gate rule's MLP in one dispatch (CPU adapters whose workgroups
// of 8 are one subgroup: lavapipe, as fused_mlp.wgsl):
//   n = RMSNorm(x), g = W_gate n, a_i = silu(g_i),
//   kept i: |a_i| * w_i >= t_layer (CATS, w = 1, or a file's weights),
//   x += sum over kept i of a_i (W_up[i] . n) W_down[:, i].
// Every gate row is computed (the rule needs them); only the kept neurons'
// up rows and W_down columns are read.
//
// Each workgroup owns a run of 64-neuron blocks. For each block, lane l
// computes the gate rows of its neurons 8r + l from the model's packed
// [gate; up] (the layout of matvec_rows_q4.wgsl), applies the rule, and
// computes the up rows of its kept neurons only (its loads for the others
// masked off). W_down's columns come from a per-neuron 4-bit copy
// (kernels::cats_mlp::neuron_weights): for each of the block's halves (one
// 32-neuron block of W_down's Q4_1 scales), lane l takes rows 8 (l + 8k) + e
// of every kept neuron's column, walked by subgroup ballots, summing quants
// times h in registers before the block's scales apply. (Per-lane arrays
// indexed in the inner loops, or workgroup memory and its barriers, cost
// several times the loads they organise on lavapipe.)
//
// Its slice of W_down h goes to `partial`; the last workgroup to arrive adds
// the slices to x, as fused_mlp.wgsl does (see there why that is sound on
// these adapters), writes the layer's kept count and resets the counter.
// dot_block, dot_nibbles and NIBBLE_SCALE come from linear_nibbles.wgsl,
// broadcast and slices_sum from one_dispatch_mlp.wgsl.

struct Params { dim: u32, ffn: u32, workgroups: u32, eps: f32, layer: u32, gate_units: u32, wg_blocks: u32, _a: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> norm_weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> gate_up: array<vec4<u32>>;
// kernels::cats_mlp::neuron_weights: W_down's columns [ffn][dim / 8] (word
// j: rows 8j .. 8j + 7, a nibble each from the low one up), then W_down's
// scales [ffn / 32][dim] (row r's d and m for each block of 32 neurons).
@group(0) @binding(4) var<storage, read> neurons: array<u32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
// [0]: the arrival counter; [1 + w]: workgroup w's kept count.
@group(0) @binding(6) var<storage, read_write> arrivals: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> rule_weights: array<f32>;
@group(0) @binding(8) var<storage, read> thresholds: array<f32>;
@group(0) @binding(9) var<storage, read_write> bitmap: array<u32>;
@group(0) @binding(10) var<storage, read_write> counts: array<u32>;

// Blocks of 32 in the model's width, and vec4s of rows per lane (kernels::cats_mlp::MAX_DIM).
const MAX_K32: u32 = 64u;
const MAX_ROWS4: u32 = 64u;

// The rows' input, as fused_mlp.wgsl keeps it: lane j holds vec4 j of
// every block of 32, scaled for dot_nibbles, and each block's sum.
var<private> x_in: array<vec4<f32>, MAX_K32>;
var<private> x_sum: array<f32, MAX_K32>;
// This lane's rows of W_down h: rows 8 (l + 8k) + 4e .. + 3 at 2k + e.
var<private> acc: array<vec4<f32>, MAX_ROWS4>;

// Rows 64 kb + 8 r + lane (r < 8) of [gate; up] on the normed input
// (without its scale), those of r with bit r of `rows` set.
fn rows_block(kb: u32, lane: u32, k32: u32, rows: u32) -> array<f32, 8> {
    let wbase = kb * 64u * k32;
    var g: array<f32, 8>;
    for (var i = 0u; i < k32; i++) {
        let xs = broadcast(x_in[i]);
        let at = params.gate_units + ((kb * k32 + i) * 8u + lane) * 2u;
        let dms = array<vec4<u32>, 2>(gate_up[at], gate_up[at + 1u]);
        for (var r = 0u; r < 8u; r++) {
            if ((rows & (1u << r)) != 0u) {
                let q = gate_up[wbase + (i * 8u + r) * 8u + lane];
                let dm = unpack2x16float(dms[r / 4u][r % 4u]);
                g[r] += dm.x * dot_block(q, xs) + dm.y * x_sum[i];
            }
        }
    }
    return g;
}

// acc += W_down[:, n] h over half block `block` (32 neurons of one block of
// W_down's scales, rows r = 4 half + r4 of every lane), h4[r4] this lane's
// neuron's h (0 where dropped): its kept neurons' columns by ballots.
fn down_half(block: u32, first: u32, h4: vec4<f32>, lane: u32) {
    let p = params;
    let h_sum = subgroupAdd(dot(h4, vec4<f32>(1.0)));
    var ballots: vec4<u32>;
    for (var r4 = 0u; r4 < 4u; r4++) {
        ballots[r4] = subgroupBallot(h4[r4] != 0.0).x;
    }
    if (all(ballots == vec4<u32>(0u))) { return; }
    let scales = p.ffn * (p.dim / 8u) + block * p.dim;
    for (var k = 0u; k < p.dim / 64u; k++) {
        var q0 = vec4<f32>(0.0);
        var q1 = vec4<f32>(0.0);
        for (var r4 = 0u; r4 < 4u; r4++) {
            var lanes = ballots[r4];
            while (lanes != 0u) {
                let from_lane = firstTrailingBit(lanes);
                lanes &= lanes - 1u;
                let h = subgroupShuffle(h4[r4], from_lane);
                let word = neurons[(first + 8u * r4 + from_lane) * (p.dim / 8u) + lane + 8u * k];
                q0 += vec4<f32>(vec4<u32>(word) & vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u)) * h;
                q1 += vec4<f32>(vec4<u32>(word & 0xF0000u, word & 0xF00000u, word & 0xF000000u, word >> 28u)) * h;
            }
        }
        // Rows 8 (lane + 8k) .. + 7: their d and m (one word each) for this block.
        let row = scales + 8u * (lane + 8u * k);
        let s0 = vec4<u32>(neurons[row], neurons[row + 1u], neurons[row + 2u], neurons[row + 3u]);
        let s1 = vec4<u32>(neurons[row + 4u], neurons[row + 5u], neurons[row + 6u], neurons[row + 7u]);
        acc[2u * k] += decode_d(s0) * NIBBLE_SCALE[0] * q0 + decode_m(s0) * h_sum;
        acc[2u * k + 1u] += decode_d(s1) * NIBBLE_SCALE[1] * q1 + decode_m(s1) * h_sum;
    }
}

// The d (low halves) and m (high halves) of four scale words.
fn decode_d(s: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(s.x).x, unpack2x16float(s.y).x, unpack2x16float(s.z).x, unpack2x16float(s.w).x);
}
fn decode_m(s: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(s.x).y, unpack2x16float(s.y).y, unpack2x16float(s.z).y, unpack2x16float(s.w).y);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let p = params;
    let dim4 = p.dim / 4u;
    let k32 = p.dim / 32u;
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
    }
    let norm_scale = inverseSqrt(subgroupAdd(sum_sq) / f32(p.dim) + p.eps);

    let b0 = wg.x * p.wg_blocks;
    let b1 = min(p.ffn / 64u, b0 + p.wg_blocks);
    var kept_here = 0u;
    for (var kb = b0; kb < b1; kb++) {
        let g = rows_block(kb, lane, k32, 0xFFu);
        // The rule, on this lane's 8 neurons.
        var acts: array<f32, 8>;
        var kept = 0u;
        for (var r = 0u; r < 8u; r++) {
            let n = kb * 64u + 8u * r + lane;
            let gate = g[r] * norm_scale;
            acts[r] = gate / (1.0 + exp(-gate));
            let on = abs(acts[r]) * rule_weights[layer_at + n] >= threshold;
            bitmap[layer_at + n] = select(0u, 1u, on);
            kept |= select(0u, 1u << r, on);
        }
        kept_here += countOneBits(kept);
        // The kept neurons' up rows (block ffn / 64 + kb of [gate; up]), and h.
        let u = rows_block(p.ffn / 64u + kb, lane, k32, kept);
        var h: array<f32, 8>;
        for (var r = 0u; r < 8u; r++) {
            h[r] = select(0.0, acts[r] * u[r] * norm_scale, (kept & (1u << r)) != 0u);
        }
        down_half(2u * kb, kb * 64u, vec4<f32>(h[0], h[1], h[2], h[3]), lane);
        down_half(2u * kb + 1u, kb * 64u + 32u, vec4<f32>(h[4], h[5], h[6], h[7]), lane);
    }
    for (var k = 0u; k < p.dim / 64u; k++) {
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
    let kept_total = subgroupAdd(kept_here);
    var arrived = 0u;
    if (lane == 0u) {
        atomicStore(&arrivals[1u + wg.x], kept_total);
        arrived = atomicAdd(&arrivals[0], 1u);
    }
    if (subgroupBroadcast(arrived, 0u) + 1u == p.workgroups) {
        for (var i = lane; i < dim4; i += 8u) {
            x[i] = x[i] + slices_sum(i, p.dim, p.workgroups);
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
