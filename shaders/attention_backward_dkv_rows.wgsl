// Attention backward, key and value gradients, for CPU adapters whose
// workgroups of 8 are one subgroup (lavapipe): as attention_backward_dkv.wgsl,
//   dK[r, g] = sum_h sum_i dS[h,i,pos0+r] q_i,h      dV[r, g] = sum_h sum_i P[h,i,pos0+r] dA_i,h
// but one invocation per key row r (8 rows of one KV head a workgroup), the
// whole head dimension in registers. The 8 rows read the same q_i,h and
// dA_i,h, so invocation `lane` loads vec4s lane, lane + 8, ... of each and
// subgroup broadcasts hand all of them to every invocation (every lavapipe
// load is a loop over the lanes). All 8 visit the query rows from the
// workgroup's first key row on: dS and P are zero where a row does not see
// a key (attention_backward_scores.wgsl zeroes them).

// Params, Step, p and step come from attention_params.wgsl.
@group(0) @binding(2) var<storage, read> probs: array<f32>;
@group(0) @binding(3) var<storage, read> dscores: array<f32>;
@group(0) @binding(4) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> da: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dv: array<vec4<f32>>;

override HEAD_DIM4: u32 = 16u;
const MAX_HEAD_DIM4: u32 = 64u;
// This key row's gradients; entries past head_dim gather junk and are not stored.
var<private> acc_k: array<vec4<f32>, MAX_HEAD_DIM4>;
var<private> acc_v: array<vec4<f32>, MAX_HEAD_DIM4>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let g = wg.y;
    let n = step.n_tokens;
    if (g >= p.n_kv_heads) { return; }
    // Rows past the end compute the last row's gradients and store nothing.
    let r0 = wg.x * 8u;
    let live = r0 + lane < n;
    let r = min(r0 + lane, n - 1u);
    let keys = step.pos0 + n;
    let group = p.n_heads / p.n_kv_heads;
    for (var h = g * group; h < (g + 1u) * group; h++) {
        for (var i = min(r0, n - 1u); i < n; i++) {
            let s = (h * n + i) * keys + step.pos0 + r;
            let ds = dscores[s];
            let pr = probs[s];
            let qb = (i * p.n_heads + h) * HEAD_DIM4;
            for (var c = 0u; c < HEAD_DIM4; c += 8u) {
                let at = qb + min(c + lane, HEAD_DIM4 - 1u);
                let q_mine = q[at];
                let da_mine = da[at];
                acc_k[c + 0u] += ds * subgroupBroadcast(q_mine, 0u);
                acc_k[c + 1u] += ds * subgroupBroadcast(q_mine, 1u);
                acc_k[c + 2u] += ds * subgroupBroadcast(q_mine, 2u);
                acc_k[c + 3u] += ds * subgroupBroadcast(q_mine, 3u);
                acc_k[c + 4u] += ds * subgroupBroadcast(q_mine, 4u);
                acc_k[c + 5u] += ds * subgroupBroadcast(q_mine, 5u);
                acc_k[c + 6u] += ds * subgroupBroadcast(q_mine, 6u);
                acc_k[c + 7u] += ds * subgroupBroadcast(q_mine, 7u);
                acc_v[c + 0u] += pr * subgroupBroadcast(da_mine, 0u);
                acc_v[c + 1u] += pr * subgroupBroadcast(da_mine, 1u);
                acc_v[c + 2u] += pr * subgroupBroadcast(da_mine, 2u);
                acc_v[c + 3u] += pr * subgroupBroadcast(da_mine, 3u);
                acc_v[c + 4u] += pr * subgroupBroadcast(da_mine, 4u);
                acc_v[c + 5u] += pr * subgroupBroadcast(da_mine, 5u);
                acc_v[c + 6u] += pr * subgroupBroadcast(da_mine, 6u);
                acc_v[c + 7u] += pr * subgroupBroadcast(da_mine, 7u);
            }
        }
    }
    if (!live) { return; }
    let o = (r * p.n_kv_heads + g) * HEAD_DIM4;
    for (var d = 0u; d < HEAD_DIM4; d++) {
        dk[o + d] = acc_k[d];
        dv[o + d] = acc_v[d];
    }
}
