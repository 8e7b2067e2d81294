// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] for a few tokens (decode), on GPUs;
// an input header may compute x on the fly (RMSNorm, SwiGLU).
// W is row-major [n, k] packed as f16 pairs, so one row is k/2 u32 words.
// A workgroup computes ROWS output rows for one token: each thread takes a
// strided slice of k, then the workgroup reduces in shared memory.

// Params, Step, store_y, load_x, input and output_scale come from linear_common.wgsl
// and the output and input headers.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec2<u32>>;

const WG: u32 = 64u;
const ROWS: u32 = 4u;
// Partial sums of the ROWS rows, then of the input's squares (output_scale).
var<workgroup> partial: array<array<f32, WG>, 5>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    load_params();
    let t = wg.z;
    let row0 = (wg.x + wg.y * nwg.x) * ROWS;
    if (t >= step.n_tokens || row0 >= p.n) { return; }
    let k4 = p.k / 4u;
    var acc = array<f32, 5>(0.0, 0.0, 0.0, 0.0, 0.0);
    for (var i = lid.x; i < k4; i += WG) {
        let raw = load_x(t, i);
        acc[ROWS] += dot(raw, raw);
        let xv = input(i, raw);
        for (var r = 0u; r < ROWS; r++) {
            let row = min(row0 + r, p.n - 1u);
            let packed = w[row * k4 + i];
            let lo = unpack2x16float(packed.x);
            let hi = unpack2x16float(packed.y);
            acc[r] += dot(xv, vec4<f32>(lo, hi));
        }
    }
    for (var r = 0u; r <= ROWS; r++) { partial[r][lid.x] = acc[r]; }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            for (var r = 0u; r <= ROWS; r++) { partial[r][lid.x] += partial[r][lid.x + s]; }
        }
        workgroupBarrier();
    }
    if (lid.x < ROWS && row0 + lid.x < p.n) {
        store_y(t, row0 + lid.x, partial[lid.x][0] * output_scale(partial[ROWS][0]));
    }
}
