// Attention backward, query gradient, for CPU adapters whose workgroups of
// 8 are one subgroup (lavapipe): dQ[i, h] = sum_{j <= pos0 + i} dS[h,i,j] k_j
// as attention_backward_dq.wgsl computes it, but one invocation per query row
// (8 rows of one head a workgroup), the whole head dimension in registers.
// The 8 rows read the same keys, so invocation `lane` loads vec4s lane,
// lane + 8, ... of each and subgroup broadcasts hand all of them to every
// invocation: every lavapipe load is a loop over the lanes, and this loads
// each key vec4 once a workgroup where the per-lane kernel loads it for each
// row. All 8 visit the keys of the workgroup's last row: dS is zero past each
// row's own (attention_backward_scores.wgsl zeroes it).

// Params, Step, p and step come from attention_params.wgsl.
@group(0) @binding(2) var<storage, read> dscores: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dq: array<vec4<f32>>;

override HEAD_DIM4: u32 = 16u;
const MAX_HEAD_DIM4: u32 = 64u;
// This row's gradient; entries past head_dim gather junk and are not stored.
var<private> acc: array<vec4<f32>, MAX_HEAD_DIM4>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let h = wg.y;
    let n = step.n_tokens;
    if (h >= p.n_heads) { return; }
    // Rows past the end compute the last row's gradient and store nothing.
    let i0 = wg.x * 8u;
    let live = i0 + lane < n;
    let i = min(i0 + lane, n - 1u);
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let row = (h * n + i) * (step.pos0 + n);
    let kv_stride = p.n_kv_heads * HEAD_DIM4;
    let bound = step.pos0 + min(i0 + 7u, n - 1u);
    for (var j = 0u; j <= bound; j++) {
        let ds = dscores[row + j];
        let kb = j * kv_stride + kvh * HEAD_DIM4;
        for (var c = 0u; c < HEAD_DIM4; c += 8u) {
            let mine = k[kb + min(c + lane, HEAD_DIM4 - 1u)];
            acc[c + 0u] += ds * subgroupBroadcast(mine, 0u);
            acc[c + 1u] += ds * subgroupBroadcast(mine, 1u);
            acc[c + 2u] += ds * subgroupBroadcast(mine, 2u);
            acc[c + 3u] += ds * subgroupBroadcast(mine, 3u);
            acc[c + 4u] += ds * subgroupBroadcast(mine, 4u);
            acc[c + 5u] += ds * subgroupBroadcast(mine, 5u);
            acc[c + 6u] += ds * subgroupBroadcast(mine, 6u);
            acc[c + 7u] += ds * subgroupBroadcast(mine, 7u);
        }
    }
    if (!live) { return; }
    let o = (i * p.n_heads + h) * HEAD_DIM4;
    for (var d = 0u; d < HEAD_DIM4; d++) { dq[o + d] = acc[d]; }
}
