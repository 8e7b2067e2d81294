// Prefill y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] for CPU-backed adapters:
// each invocation computes a block of ROWS output rows x TOKS tokens in
// registers, so every weight load serves TOKS tokens and every x load ROWS
// rows, with no shared memory and no barriers (see matvec_rows.wgsl for why).
// GPUs use the tiled matmul.wgsl instead. k must be a multiple of 8. W is in
// the lane-interleaved layout of matvec_rows.wgsl.
// Same parameters and layout as matvec.wgsl.

// Params, Step and store_y come from linear_common.wgsl and an output header.
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
    // Tokens past the end repeat the last one, padding rows are zeros; neither is stored.
    var xbase: array<u32, TOKS>;
    for (var j = 0u; j < TOKS; j++) { xbase[j] = min(t0 + j, step.n_tokens - 1u) * k8 * 2u; }
    var acc: array<array<f32, TOKS>, ROWS>;
    for (var i = 0u; i < k8; i++) {
        var wv: array<array<vec4<f32>, 2>, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            let packed = w[wbase + ((r0 + r) * k8 + i) * 8u + lane];
            wv[r][0] = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
            wv[r][1] = vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w));
        }
        for (var j = 0u; j < TOKS; j++) {
            let x0 = x[xbase[j] + 2u * i];
            let x1 = x[xbase[j] + 2u * i + 1u];
            for (var r = 0u; r < ROWS; r++) { acc[r][j] += dot(x0, wv[r][0]) + dot(x1, wv[r][1]); }
        }
    }
    for (var j = 0u; j < TOKS; j++) {
        let t = t0 + j;
        if (t >= step.n_tokens) { break; }
        for (var r = 0u; r < ROWS; r++) {
            let row = block * 64u + (r0 + r) * 8u + lane;
            if (row >= p.n) { continue; }
            store_y(t, row, acc[r][j]);
        }
    }
}
