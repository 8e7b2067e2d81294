// Attention backward, query gradient: dQ[i, h] = sum_{j <= pos0 + i} dS[h,i,j] k_j,
// one invocation per (token, head, 4 lanes of the head dimension); x runs
// over heads and lanes so a workgroup has no idle lanes at small head dims.

// Params, Step, p and step come from attention_params.wgsl.
@group(0) @binding(2) var<storage, read> dscores: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dq: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hd4 = p.head_dim / 4u;
    let d = gid.x % hd4;
    let h = gid.x / hd4;
    let i = gid.y;
    let n = step.n_tokens;
    if (h >= p.n_heads || i >= n) { return; }
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let row = (h * n + i) * (step.pos0 + n);
    let kv_stride = p.n_kv_heads * hd4;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j <= step.pos0 + i; j++) {
        acc += dscores[row + j] * k[j * kv_stride + kvh * hd4 + d];
    }
    dq[(i * p.n_heads + h) * hd4 + d] = acc;
}
