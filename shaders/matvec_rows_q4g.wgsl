// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matvec_rows_q4.wgsl, over
// a matrix whose columns come in groups of 8 that each have their own d and
// m per row: a compacted W_down (kernels::compact), whose active neurons'
// columns are copied from the 4-bit blocks of 32 they lie in, padded to
// groups of 8 within each block so that a group shares its block's d and m
// and the copy is exact. Padding columns have q = 0, and their inputs must be
// 0 (the m term reads them). Per 32 columns a row costs 2 vec4 loads, where
// f16 costs 4 and matvec_rows_q4.wgsl 1.25: on lavapipe, where weight loads
// are gathers, their count is what bounds a decode step.
//
// Layout, for blocks of 64 rows as in matvec_rows.wgsl: [block][k / 32][r]
// [lane] pairs of vec4<u32>, for row 8r + lane and columns 32i .. 32i + 31:
// the quant words of its 4 groups (weight e of a group in bits 4e .. 4e + 3),
// then their scale words (d in the low half, m in the high half). k must be a
// multiple of 32.

// Params, Step, store_y, load_x, input and output_scale come from
// linear_common.wgsl and the output and input headers, block_inputs and
// input_sum_sq from a block header, dot_groups and NIBBLE_SCALE from
// linear_nibbles.wgsl.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;

const ROWS: u32 = 8u;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    load_params();
    // This workgroup's block of 64 rows; invocation `lane` owns rows 8r + lane.
    let block = wg.x + wg.y * nwg.x;
    let t = wg.z;
    if (t >= step.n_tokens || block * 64u >= p.n) { return; }
    let k32 = p.k / 32u;
    let wbase = block * 64u * k32;
    var acc: array<f32, ROWS>;
    for (var i = 0u; i < k32; i++) {
        // The 32 inputs and each group's sum for its m term:
        // sum (d q_e + m) x_e = d sum q_e x_e + m sum x_e.
        var xs = block_inputs(t, i, lane);
        let one = vec4<f32>(1.0);
        let sums = vec4<f32>(dot(xs[0], one) + dot(xs[1], one), dot(xs[2], one) + dot(xs[3], one),
                             dot(xs[4], one) + dot(xs[5], one), dot(xs[6], one) + dot(xs[7], one));
        for (var j = 0u; j < 8u; j++) {
            xs[j] *= NIBBLE_SCALE[j & 1u];
        }
        for (var r = 0u; r < ROWS; r++) {
            let at = 2u * (wbase + (i * 8u + r) * 8u + lane);
            acc[r] += dot_groups(w[at], w[at + 1u], xs, sums);
        }
    }
    let scale = output_scale(input_sum_sq());
    for (var r = 0u; r < ROWS; r++) {
        store_y(t, block * 64u + r * 8u + lane, acc[r] * scale);
    }
}
