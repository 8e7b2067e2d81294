// Prefill y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] for CPU-backed adapters:
// each invocation computes a block of ROWS output rows x 8 tokens in
// registers, so every weight load serves 8 tokens and every input ROWS rows,
// with no shared memory and no barriers (see matvec_rows.wgsl for why).
// GPUs use the tiled matmul.wgsl instead. k must be a multiple of 8. W is in
// the lane-interleaved layout of matvec_rows.wgsl.

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
    // A workgroup covers one block of 64 rows: invocation li takes rows
    // 8 r + lane for r in [4 (li / 8), 4 (li / 8) + 4), so each SIMD batch of
    // 8 lanes loads one contiguous run of the lane-interleaved layout.
    let lane = li % 8u;
    let r0 = (li / 8u) * ROWS;
    let block = wg.x;
    let t0 = wg.y * TOKS;
    if (block * 64u >= p.n || t0 >= step.n_tokens) { return; }
    let k8 = p.k / 8u;
    let wbase = block * 64u * k8;
    var acc: array<array<f32, TOKS>, ROWS>;
    for (var i = 0u; i < k8; i++) {
        var wv: array<array<vec4<f32>, 2>, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            let packed = w[wbase + ((r0 + r) * k8 + i) * 8u + lane];
            wv[r][0] = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
            wv[r][1] = vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w));
        }
        for (var h = 0u; h < 2u; h++) {
            let xs = token_inputs(t0, lane, 2u * i + h);
            for (var j = 0u; j < TOKS; j++) {
                for (var r = 0u; r < ROWS; r++) { acc[r][j] += dot(xs[j], wv[r][h]); }
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
