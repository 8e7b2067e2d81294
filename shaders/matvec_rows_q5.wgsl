// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matvec_rows_q4.wgsl, with
// W in 5 bits: blocks of 32 weights w = d * q + m, q in 0..31 (GGUF's Q5_0,
// m = -16 d, and Q5_1). Q4's layout holds q's low 4 bits, its scales d and m;
// after the scales, one word of high bits per block of a row, in the scales'
// order, so that an invocation's 8 rows' words are two whole vec4s. Bit
// 4p + j of a high word is weight 8j + p's: (word >> j) & 0x11111111 lays
// group j's bits out as nibbles, for dot_nibbles (kernels::packed::q5_block).
// One vec4<u32> load brings 32 weights' low bits, where the 8-bit form needs
// two vec4s for 32 weights. k must be a multiple of 32.

// Params, Step, store_y, load_x, input and output_scale come from
// linear_common.wgsl and the output and input headers, block_inputs and
// input_sum_sq from a block header (linear_block.wgsl or
// linear_block_subgroup.wgsl), dot_block and NIBBLE_SCALE from
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
    let scales = ((p.n + 63u) / 64u) * 64u * k32;
    // Words of scales, then as many of high bits: a quarter as many vec4s.
    let highs = scales + scales / 4u;
    // Padding rows of the last block are zeros; their results are not stored.
    var acc: array<f32, ROWS>;
    for (var i = 0u; i < k32; i++) {
        // The block's 32 inputs, and their sum for the m term:
        // sum (d q_e + m) x_e = d sum q_e x_e + m sum x_e.
        var xs = block_inputs(t, i, lane);
        var x_sum = 0.0;
        for (var j = 0u; j < 8u; j++) {
            x_sum += dot(xs[j], vec4<f32>(1.0));
            xs[j] *= NIBBLE_SCALE[j & 1u];
        }
        // This invocation's 8 rows' scales of the block, two whole vec4s.
        let at = scales + ((block * k32 + i) * 8u + lane) * 2u;
        let dms = array<vec4<u32>, 2>(w[at], w[at + 1u]);
        let hat = highs + ((block * k32 + i) * 8u + lane) * 2u;
        let his = array<vec4<u32>, 2>(w[hat], w[hat + 1u]);
        for (var r = 0u; r < ROWS; r++) {
            let q = w[wbase + (i * 8u + r) * 8u + lane];
            let dm = unpack2x16float(dms[r / 4u][r % 4u]);
            // q = low + 16 high: the high bits' dot product, group by group.
            let h = his[r / 4u][r % 4u];
            let high = dot_nibbles(h & 0x11111111u, xs[0], xs[1]) + dot_nibbles((h >> 1u) & 0x11111111u, xs[2], xs[3])
                     + dot_nibbles((h >> 2u) & 0x11111111u, xs[4], xs[5]) + dot_nibbles((h >> 3u) & 0x11111111u, xs[6], xs[7]);
            acc[r] += dm.x * (dot_block(q, xs) + 16.0 * high) + dm.y * x_sum;
        }
    }
    let scale = output_scale(input_sum_sq());
    // Every invocation stores every row (store_y skips padding rows): a
    // fused RoPE exchanges values between invocations.
    for (var r = 0u; r < ROWS; r++) {
        store_y(t, block * 64u + r * 8u + lane, acc[r] * scale);
    }
}
