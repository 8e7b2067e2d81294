// Prefill y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] like matmul_rows.wgsl
// (CPU adapters, ROWS rows x TOKS tokens per invocation in registers), with W
// in the 4-bit layout of matvec_rows_q4.wgsl. Each weight is dequantized to
// d * q + m, the f32 value the model loader gives, so prefill, decode and
// the attribution pass all compute with the model's own weights. k must be
// a multiple of 32.

// Params, Step and store_y come from linear_common.wgsl and an output header.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;

const ROWS: u32 = 4u;
const TOKS: u32 = 8u;

// Weights 4h .. 4h + 3 of a word of 8 nibbles, dequantized.
fn nibbles(word: u32, h: u32, dm: vec2<f32>) -> vec4<f32> {
    let shifts = vec4<u32>(0u, 4u, 8u, 12u) + 16u * h;
    return vec4<f32>((vec4<u32>(word) >> shifts) & vec4<u32>(15u)) * dm.x + dm.y;
}

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
    // Tokens past the end repeat the last one, padding rows are zeros; neither is stored.
    var xbase: array<u32, TOKS>;
    for (var j = 0u; j < TOKS; j++) { xbase[j] = min(t0 + j, step.n_tokens - 1u) * (p.k / 4u); }
    var acc: array<array<f32, TOKS>, ROWS>;
    for (var i = 0u; i < k32; i++) {
        var qs: array<vec4<u32>, ROWS>;
        var dm: array<vec2<f32>, ROWS>;
        // The scales of rows r0 .. r0 + 3 of this lane: one vec4
        // (kernels::packed::scale_index).
        let ds = w[scales + ((block * k32 + i) * 8u + lane) * 2u + r0 / 4u];
        for (var r = 0u; r < ROWS; r++) {
            let unit = wbase + (i * 8u + r0 + r) * 8u + lane;
            qs[r] = w[unit];
            dm[r] = unpack2x16float(ds[r]);
        }
        // Eight weights (one word) per row at a time.
        for (var s = 0u; s < 4u; s++) {
            var wv: array<array<vec4<f32>, 2>, ROWS>;
            for (var r = 0u; r < ROWS; r++) {
                wv[r][0] = nibbles(qs[r][s], 0u, dm[r]);
                wv[r][1] = nibbles(qs[r][s], 1u, dm[r]);
            }
            for (var j = 0u; j < TOKS; j++) {
                let x0 = x[xbase[j] + 8u * i + 2u * s];
                let x1 = x[xbase[j] + 8u * i + 2u * s + 1u];
                for (var r = 0u; r < ROWS; r++) { acc[r][j] += dot(x0, wv[r][0]) + dot(x1, wv[r][1]); }
            }
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
