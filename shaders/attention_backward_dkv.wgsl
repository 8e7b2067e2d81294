// Attention backward, key and value gradients, summed over the query heads
// that share a KV head and over the query rows i >= r that saw key row r
// (position pos0 + r; cached keys before pos0 get no gradient):
//   dK[r, g] = sum_h sum_i dS[h,i,pos0+r] q_i,h      dV[r, g] = sum_h sum_i P[h,i,pos0+r] dA_i,h
// one invocation per (key row, KV head, 4 lanes of the head dimension).

// Params, Step, p and step come from attention_params.wgsl.
@group(0) @binding(2) var<storage, read> probs: array<f32>;
@group(0) @binding(3) var<storage, read> dscores: array<f32>;
@group(0) @binding(4) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> da: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dv: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hd4 = p.head_dim / 4u;
    let d = gid.x % hd4;
    let g = gid.x / hd4;
    let j = gid.y;
    let n = step.n_tokens;
    if (g >= p.n_kv_heads || j >= n) { return; }
    let keys = step.pos0 + n;
    let group = p.n_heads / p.n_kv_heads;
    var acc_k = vec4<f32>(0.0);
    var acc_v = vec4<f32>(0.0);
    for (var h = g * group; h < (g + 1u) * group; h++) {
        for (var i = j; i < n; i++) {
            let s = (h * n + i) * keys + step.pos0 + j;
            let qd = (i * p.n_heads + h) * hd4 + d;
            acc_k += dscores[s] * q[qd];
            acc_v += probs[s] * da[qd];
        }
    }
    let o = (j * p.n_kv_heads + g) * hd4 + d;
    dk[o] = acc_k;
    dv[o] = acc_v;
}
