// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matvec_rows.wgsl (CPU
// adapters, decode), with W in 8 bits: blocks of 32 weights w = d * q + m, q
// in -127..127, each half block of 16 with its own d and m from a scale
// decoder composed before this file: q8_scales_f16.wgsl (GGUF's Q8_0, Q5_0,
// Q4_0, Q5_1: one f16 d and m per block) or q8_scales_f32.wgsl (K-quants).
// One vec4<u32> load brings 16 weights where f16 brings 8. kernels::linear
// uses it only when it reproduces the weights (kernels::packed).
//
// Layout, for blocks of 64 rows as in matvec_rows.wgsl: the quants,
// [block][k / 32][r][lane] as 2 vec4<u32> (word j holds weights 4j .. 4j + 3,
// a byte each from the low byte up), then the scales (see the decoder).
// k must be a multiple of 32.

// Params, Step, store_y, load_x, input and output_scale come from
// linear_common.wgsl and the output and input headers, block_inputs and
// input_sum_sq from a block header (linear_block.wgsl or
// linear_block_subgroup.wgsl).
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;

const ROWS: u32 = 8u;

// The word's 4 signed bytes.
fn bytes4(word: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// sum over the 16 weights of a vec4 of words, against 4 vec4 of inputs.
fn dot16(q: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
    return dot(x0, bytes4(q.x)) + dot(x1, bytes4(q.y)) + dot(x2, bytes4(q.z)) + dot(x3, bytes4(q.w));
}

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
    let scales = 2u * ((p.n + 63u) / 64u) * 64u * k32;
    // Padding rows of the last block are zeros; their results are not stored.
    var acc: array<f32, ROWS>;
    for (var i = 0u; i < k32; i++) {
        let xs = block_inputs(t, i, lane);
        // Per half: sum (d q_e + m) x_e = d sum q_e x_e + m sum x_e.
        let one = vec4<f32>(1.0);
        let sum_a = dot(xs[0], one) + dot(xs[1], one) + dot(xs[2], one) + dot(xs[3], one);
        let sum_b = dot(xs[4], one) + dot(xs[5], one) + dot(xs[6], one) + dot(xs[7], one);
        let s = block_scales(scales, (block * k32 + i) * 8u + lane);
        for (var r = 0u; r < ROWS; r++) {
            let unit = wbase + (i * 8u + r) * 8u + lane;
            let dot_a = dot16(w[2u * unit], xs[0], xs[1], xs[2], xs[3]);
            let dot_b = dot16(w[2u * unit + 1u], xs[4], xs[5], xs[6], xs[7]);
            acc[r] += s[r].x * dot_a + s[r].y * dot_b + s[r].z * sum_a + s[r].w * sum_b;
        }
    }
    let scale = output_scale(input_sum_sq());
    // Every invocation stores every row (store_y skips padding rows): a
    // fused RoPE exchanges values between invocations.
    for (var r = 0u; r < ROWS; r++) {
        store_y(t, block * 64u + r * 8u + lane, acc[r] * scale);
    }
}
