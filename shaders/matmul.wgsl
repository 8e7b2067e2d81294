// Tiled y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] for many tokens (prefill).
// W is row-major [n, k] packed as f16 pairs. A 16x16 workgroup computes a
// 64x64 tile of y, 4x4 per thread, staging 64x16 slices of x and W in shared
// memory. Same parameters as matvec.wgsl.

// Params, Step and store_y come from linear_common.wgsl and an output header.
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;

const TILE: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> xs: array<array<f32, BK>, TILE>;
var<workgroup> ws: array<array<f32, BK>, TILE>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    load_params();
    let t0 = wg.y * TILE;
    let o0 = wg.x * TILE;
    let half_k = p.k / 2u;
    var acc: array<array<f32, 4>, 4>;
    for (var kk = 0u; kk < p.k; kk += BK) {
        // 256 threads load 64x16 of x (4 each) and 64x8 f16 pairs of W (2 each).
        for (var j = 0u; j < 4u; j++) {
            let e = li * 4u + j;
            let r = e / BK;
            let c = e % BK;
            let t = t0 + r;
            var v = 0.0;
            if (t < step.n_tokens && kk + c < p.k) { v = x[t * p.k + kk + c]; }
            xs[r][c] = v;
        }
        for (var j = 0u; j < 2u; j++) {
            let e = li * 2u + j;
            let r = e / (BK / 2u);
            let c2 = e % (BK / 2u);
            let o = o0 + r;
            var v = vec2<f32>(0.0, 0.0);
            if (o < p.n && kk + 2u * c2 < p.k) { v = unpack2x16float(w[o * half_k + kk / 2u + c2]); }
            ws[r][2u * c2] = v.x;
            ws[r][2u * c2 + 1u] = v.y;
        }
        workgroupBarrier();
        for (var c = 0u; c < BK; c++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[lid.y * 4u + i][c];
                b[i] = ws[lid.x * 4u + i][c];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) { acc[i][j] += a[i] * b[j]; }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + lid.y * 4u + i;
        if (t >= step.n_tokens) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let o = o0 + lid.x * 4u + j;
            if (o >= p.n) { continue; }
            store_y(t, o, acc[i][j]);
        }
    }
}
