// Attention backward, first step, one invocation per (query row i, head h).
// The n rows of this step sit at positions pos0 + i after pos0 cached ones
// (held constant: their gradients are not needed), so T = pos0 + n keys:
//   P[h,i,j]  = softmax_j(q_i . k_j * scale), j <= pos0 + i, recomputed from the saved q and K
//   dS[h,i,j] = scale * P[h,i,j] * (dA_i . v_j - sum_j' P[h,i,j'] dA_i . v_j')
// where dA is the gradient of the head output. Both are [heads, n, T] with
// zeros after each row's position, for the dQ and dK/dV kernels to reduce.

// Params, Step, p and step come from attention_params.wgsl.

override HEAD_DIM4: u32 = 16u;
// Invocations a workgroup (8 where the keys header shares loads through subgroups).
override WG: u32 = 64u;
// Local arrays need a constant size; the loops stop at HEAD_DIM4.
const MAX_HEAD_DIM4: u32 = 64u;

@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> da: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;
@group(0) @binding(7) var<storage, read_write> dscores: array<f32>;

// This row's query and head-output gradient, zero past head_dim; key_bound,
// q_dot_key and da_dot_value come from a keys header
// (attention_backward_keys.wgsl, attention_backward_keys_subgroup.wgsl).
var<private> qi: array<vec4<f32>, MAX_HEAD_DIM4>;
var<private> dai: array<vec4<f32>, MAX_HEAD_DIM4>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = gid.y;
    let n = step.n_tokens;
    if (h >= p.n_heads) { return; }
    // Rows past the end compute the last row's values and store nothing: the
    // keys header may need every invocation of a subgroup in its loops.
    let live = gid.x < n;
    let i = min(gid.x, n - 1u);
    let lane = li % 8u;
    let keys = step.pos0 + n;
    let last = step.pos0 + i;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let row = (h * n + i) * keys;
    let qbase = (i * p.n_heads + h) * HEAD_DIM4;
    for (var d = 0u; d < HEAD_DIM4; d++) {
        qi[d] = q[qbase + d];
        dai[d] = da[qbase + d];
    }
    let kv_stride = p.n_kv_heads * HEAD_DIM4;
    // Keys this invocation's loops visit: its own (0 ..= last) or more.
    let bound = key_bound(last);
    // Scores, their maximum, then the softmax in place.
    var m = -3.0e38;
    for (var j = 0u; j <= bound; j++) {
        let s = q_dot_key(j * kv_stride + kvh * HEAD_DIM4, lane) * p.scale;
        if (j <= last) {
            m = max(m, s);
            if (live) { probs[row + j] = s; }
        }
    }
    // Every invocation takes the same path through the loops that share
    // loads; rows past the end read the last row's values and store nothing.
    var sum = 0.0;
    for (var j = 0u; j <= last; j++) {
        let e = exp(probs[row + j] - m);
        if (live) { probs[row + j] = e; }
        sum += e;
    }
    let inv = 1.0 / sum;
    var delta = 0.0;
    for (var j = 0u; j <= bound; j++) {
        let dp = da_dot_value(j * kv_stride + kvh * HEAD_DIM4, lane);
        if (j <= last && live) {
            let pj = probs[row + j] * inv;
            probs[row + j] = pj;
            dscores[row + j] = dp;
            delta += pj * dp;
        }
    }
    if (!live) { return; }
    for (var j = 0u; j <= last; j++) {
        dscores[row + j] = p.scale * probs[row + j] * (dscores[row + j] - delta);
    }
    for (var j = last + 1u; j < keys; j++) {
        probs[row + j] = 0.0;
        dscores[row + j] = 0.0;
    }
}
