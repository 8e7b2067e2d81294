// Prefill y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matmul_rows.wgsl
// (CPU adapters, ROWS rows x 8 tokens per invocation in registers), with W
// in the 4-bit layout of matvec_rows_q4.wgsl. Each weight is dequantized to
// d * q + m, the f32 value the model loader gives, so prefill, decode and
// the attribution pass all compute with the model's own weights. k must be
// a multiple of 32.

// Params, Step and store_y come from linear_common.wgsl and an output header,
// token_inputs from a tokens header (matmul_tokens.wgsl or
// matmul_tokens_subgroup.wgsl).
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;

const ROWS: u32 = 4u;
const TOKS: u32 = 8u;

@compute @workgroup_size(16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params();
    // As in matmul_rows.wgsl: invocation li takes rows 8 r + lane for r in
    // [4 (li / 8), 4 (li / 8) + 4) of a block of 64.
    let lane = li % 8u;
    let r0 = (li / 8u) * ROWS;
    let block = wg.x;
    let t0 = wg.y * TOKS;
    if (block * 64u >= p.n || t0 >= step.n_tokens) { return; }
    let k32 = p.k / 32u;
    let wbase = block * 64u * k32;
    let scales = ((p.n + 63u) / 64u) * 64u * k32;
    var acc: array<array<f32, TOKS>, ROWS>;
    for (var i = 0u; i < k32; i++) {
        var qs: array<vec4<u32>, ROWS>;
        var dm: array<vec2<f32>, ROWS>;
        // The scales of rows r0 .. r0 + 3 of this lane: one vec4
        // (kernels::packed::scale_index).
        let ds = w[scales + ((block * k32 + i) * 8u + lane) * 2u + r0 / 4u];
        for (var r = 0u; r < ROWS; r++) {
            qs[r] = w[wbase + (i * 8u + r0 + r) * 8u + lane];
            dm[r] = unpack2x16float(ds[r]);
        }
        // Four weights (half a word) of each row at a time, against the
        // matching vec4 of each token.
        for (var s = 0u; s < 4u; s++) {
            for (var h = 0u; h < 2u; h++) {
                let xs = token_inputs(t0, lane, 8u * i + 2u * s + h);
                var wv: array<vec4<f32>, ROWS>;
                for (var r = 0u; r < ROWS; r++) {
                    let q = (vec4<u32>(qs[r][s]) >> (vec4<u32>(0u, 4u, 8u, 12u) + 16u * h)) & vec4<u32>(15u);
                    // Through i32: x86 has no vector conversion from unsigned.
                    wv[r] = vec4<f32>(bitcast<vec4<i32>>(q)) * dm[r].x + dm[r].y;
                }
                for (var j = 0u; j < TOKS; j++) {
                    for (var r = 0u; r < ROWS; r++) { acc[r][j] += dot(xs[j], wv[r]); }
                }
            }
        }
    }
    // Every invocation stores every row (store_y skips padding rows), and
    // the token bound is the same for all: a RoPE in the store exchanges
    // values between invocations (linear_rope_fused.wgsl).
    for (var j = 0u; j < TOKS; j++) {
        let t = t0 + j;
        if (t >= step.n_tokens) { break; }
        for (var r = 0u; r < ROWS; r++) {
            store_y(t, block * 64u + (r0 + r) * 8u + lane, acc[r][j]);
        }
    }
}
