// y[t, col0 + o] (+)= sum_k x[t, k] * W[o, k] with each invocation computing
// ROWS whole output rows, no shared memory and no barriers. W is in the
// lane-interleaved layout (kernels::linear::Matrix): [block][r][k / 8][lane],
// so the 8 invocations' loads of one k-slice are contiguous. This suits
// CPU-backed adapters (lavapipe), where a workgroup is a loop over SIMD lanes
// and a barrier is a costly context switch: loading 8 weights at once and
// reusing each x load for ROWS rows is what brings it near memory bandwidth.
// GPUs use the cooperative matvec.wgsl instead. k must be a multiple of 8.
// Same parameters and layout as matvec.wgsl.

// Params, Step, store_y, load_x, input and output_scale come from
// linear_common.wgsl and the output and input headers. Each invocation loads
// the whole input, so the fused norm's sum of squares needs no reduction.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;

const ROWS: u32 = 8u;

fn dot8(x0: vec4<f32>, x1: vec4<f32>, packed: vec4<u32>) -> f32 {
    return dot(x0, vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y)))
         + dot(x1, vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w)));
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    // This workgroup's block of 64 rows; invocation `lane` owns rows 8r + lane.
    let block = wg.x + wg.y * nwg.x;
    let t = wg.z;
    if (t >= step.n_tokens || block * 64u >= p.n) { return; }
    let k8 = p.k / 8u;
    let wbase = block * 64u * k8;
    // Padding rows of the last block are zeros; their results are not stored.
    var acc: array<f32, ROWS>;
    var sum_sq = 0.0;
    for (var i = 0u; i < k8; i++) {
        let raw0 = load_x(t, 2u * i);
        let raw1 = load_x(t, 2u * i + 1u);
        sum_sq += dot(raw0, raw0) + dot(raw1, raw1);
        let x0 = input(2u * i, raw0);
        let x1 = input(2u * i + 1u, raw1);
        for (var r = 0u; r < ROWS; r++) { acc[r] += dot8(x0, x1, w[wbase + (r * k8 + i) * 8u + lane]); }
    }
    let scale = output_scale(sum_sq);
    for (var r = 0u; r < ROWS; r++) {
        let row = block * 64u + r * 8u + lane;
        if (row >= p.n) { continue; }
        store_y(t, row, acc[r] * scale);
    }
}
