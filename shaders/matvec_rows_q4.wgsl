// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matvec_rows.wgsl (CPU
// adapters, decode), with W in 4 bits: each row's k is cut into blocks of 32
// weights w = d * q + m (q in 0..15; d and m f16), the form GGUF's Q4_1
// stores, so one vec4<u32> load brings 32 weights where f16 brings 8. On
// lavapipe, weight loads are gathers, and their count is what bounds a
// decode step. kernels::linear uses this layout only when it reproduces the
// model's weights exactly (kernels::packed).
//
// Layout, for blocks of 64 rows as in matvec_rows.wgsl: the quants,
// [block][k / 32][r][lane] vec4<u32> (word j holds weights 8j .. 8j + 7, four
// bits each from the low bits up; a workgroup reads its block's in order,
// one stream for the CPU's prefetcher: kernels::packed::unit_index), then
// the scales, [block][k / 32][lane][r] u32 (d in the low half, m in the high
// half), so that an invocation's 8 rows of a block are two whole vec4s
// (kernels::packed::scale_index). k must be a multiple of 32.
//
// The 5-bit form (Q5_0, Q5_1) is this layout plus a word of high bits per
// unit after the scales: `high_words` and `high_dot` come from a decoder
// composed before this file, q4_high_none.wgsl (Q4: nothing to add) or
// q5_high_bits.wgsl.

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
    // Words of scales, then as many of high bits (Q5): a quarter as many vec4s.
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
        let his = high_words(highs + ((block * k32 + i) * 8u + lane) * 2u);
        for (var r = 0u; r < ROWS; r++) {
            let q = w[wbase + (i * 8u + r) * 8u + lane];
            let dm = unpack2x16float(dms[r / 4u][r % 4u]);
            acc[r] += dm.x * (dot_block(q, xs) + high_dot(his[r / 4u][r % 4u], xs)) + dm.y * x_sum;
        }
    }
    let scale = output_scale(input_sum_sq());
    // Every invocation stores every row (store_y skips padding rows): a
    // fused RoPE exchanges values between invocations.
    for (var r = 0u; r < ROWS; r++) {
        store_y(t, block * 64u + r * 8u + lane, acc[r] * scale);
    }
}
