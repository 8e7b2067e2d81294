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
// linear_common.wgsl and the output and input headers, block_inputs,
// single_input and input_sum_sq from a block header (linear_block.wgsl or
// linear_block_subgroup.wgsl): each block of 32 inputs is loaded as one, and
// a k that is not a multiple of 32 (compacted matrices) ends with single vec4s.
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
    load_params();
    // This workgroup's block of 64 rows; invocation `lane` owns rows 8r + lane.
    let block = wg.x + wg.y * nwg.x;
    let t = wg.z;
    if (t >= step.n_tokens || block * 64u >= p.n) { return; }
    let k8 = p.k / 8u;
    let wbase = block * 64u * k8;
    // Padding rows of the last block are zeros; their results are not stored.
    var acc: array<f32, ROWS>;
    let k32 = p.k / 32u;
    for (var b = 0u; b < k32; b++) {
        let xs = block_inputs(t, b, lane);
        // The block's four k-slices of 8, written out: indexing xs by a loop
        // variable left it in memory on lavapipe (f16 decode 1.4x slower).
        for (var r = 0u; r < ROWS; r++) {
            let at = wbase + (r * k8 + 4u * b) * 8u + lane;
            acc[r] += dot8(xs[0], xs[1], w[at]) + dot8(xs[2], xs[3], w[at + 8u])
                    + dot8(xs[4], xs[5], w[at + 16u]) + dot8(xs[6], xs[7], w[at + 24u]);
        }
    }
    for (var i = 4u * k32; i < k8; i++) {
        let x0 = single_input(t, 2u * i, lane);
        let x1 = single_input(t, 2u * i + 1u, lane);
        for (var r = 0u; r < ROWS; r++) { acc[r] += dot8(x0, x1, w[wbase + (r * k8 + i) * 8u + lane]); }
    }
    let scale = output_scale(input_sum_sq());
    // Every invocation stores every row (store_y skips padding rows): a
    // fused RoPE exchanges values between invocations.
    for (var r = 0u; r < ROWS; r++) {
        store_y(t, block * 64u + r * 8u + lane, acc[r] * scale);
    }
}
