// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matvec_rows.wgsl (CPU
// adapters, decode), with W in 4 bits: each row's k is cut into blocks of 32
// weights w = d * q + m (q in 0..15; d and m f16), the form GGUF's Q4_1
// stores, so one vec4<u32> load brings 32 weights where f16 brings 8. On
// lavapipe, weight loads are gathers, and their count is what bounds a
// decode step. kernels::linear uses this layout only when it reproduces the
// model's weights exactly (kernels::packed).
//
// Layout, for blocks of 64 rows as in matvec_rows.wgsl: the quants,
// [block][r][k / 32][lane] vec4<u32> (word j holds weights 8j .. 8j + 7, four
// bits each from the low bits up), then the scales, [block][r][k / 32][lane]
// u32 (d in the low half, m in the high half), four to a vec4. k must be a
// multiple of 32.

// Params, Step, store_y, load_x, input and output_scale come from
// linear_common.wgsl and the output and input headers.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;

const ROWS: u32 = 8u;

// sum over the word's 8 weights q_e * x_e, x_e from x0 (e < 4) and x1.
fn dot_nibbles(word: u32, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    let q = vec4<u32>(word);
    return dot(x0, vec4<f32>((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)))
         + dot(x1, vec4<f32>((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)));
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    // This workgroup's block of 64 rows; invocation `lane` owns rows 8r + lane.
    let block = wg.x + wg.y * nwg.x;
    let t = wg.z;
    if (t >= step.n_tokens || block * 64u >= p.n) { return; }
    let k32 = p.k / 32u;
    let wbase = block * 64u * k32;
    let scales = ((p.n + 63u) / 64u) * 64u * k32;
    // Padding rows of the last block are zeros; their results are not stored.
    var acc: array<f32, ROWS>;
    var sum_sq = 0.0;
    for (var i = 0u; i < k32; i++) {
        // The block's 32 inputs, and their sum for the m term:
        // sum (d q_e + m) x_e = d sum q_e x_e + m sum x_e.
        var xs: array<vec4<f32>, 8>;
        var x_sum = 0.0;
        for (var j = 0u; j < 8u; j++) {
            let raw = load_x(t, 8u * i + j);
            sum_sq += dot(raw, raw);
            xs[j] = input(8u * i + j, raw);
            x_sum += dot(xs[j], vec4<f32>(1.0));
        }
        for (var r = 0u; r < ROWS; r++) {
            let unit = wbase + (r * k32 + i) * 8u;
            let q = w[unit + lane];
            let dm = unpack2x16float(w[scales + unit / 4u + lane / 4u][lane % 4u]);
            let q_dot = dot_nibbles(q.x, xs[0], xs[1]) + dot_nibbles(q.y, xs[2], xs[3])
                      + dot_nibbles(q.z, xs[4], xs[5]) + dot_nibbles(q.w, xs[6], xs[7]);
            acc[r] += dm.x * q_dot + dm.y * x_sum;
        }
    }
    let scale = output_scale(sum_sq);
    for (var r = 0u; r < ROWS; r++) {
        let row = block * 64u + r * 8u + lane;
        if (row >= p.n) { continue; }
        store_y(t, row, acc[r] * scale);
    }
}
