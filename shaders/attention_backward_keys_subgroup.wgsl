// How attention_backward_scores.wgsl reads keys and values where a workgroup
// of 8 is one subgroup (lavapipe): the 8 query rows of a workgroup read the
// same keys, so invocation `lane` loads vec4s lane, lane + 8, ... of each and
// subgroup broadcasts hand every invocation all of them (every lavapipe load
// is a loop over the lanes; see attention_rows_keys_subgroup.wgsl). All 8
// visit the keys of the workgroup's last row; past head_dim, lanes load the
// last vec4 again against zeros in qi and dai.

fn key_bound(last: u32) -> u32 { return subgroupMax(last); }

fn shared_dot(own: ptr<private, array<vec4<f32>, MAX_HEAD_DIM4>>, mine: vec4<f32>, c: u32) -> f32 {
    // subgroupBroadcast takes a constant lane.
    return dot((*own)[c], subgroupBroadcast(mine, 0u)) + dot((*own)[c + 1u], subgroupBroadcast(mine, 1u))
         + dot((*own)[c + 2u], subgroupBroadcast(mine, 2u)) + dot((*own)[c + 3u], subgroupBroadcast(mine, 3u))
         + dot((*own)[c + 4u], subgroupBroadcast(mine, 4u)) + dot((*own)[c + 5u], subgroupBroadcast(mine, 5u))
         + dot((*own)[c + 6u], subgroupBroadcast(mine, 6u)) + dot((*own)[c + 7u], subgroupBroadcast(mine, 7u));
}

fn q_dot_key(kb: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < HEAD_DIM4; c += 8u) { s += shared_dot(&qi, k[kb + min(c + lane, HEAD_DIM4 - 1u)], c); }
    return s;
}

fn da_dot_value(vb: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < HEAD_DIM4; c += 8u) { s += shared_dot(&dai, v[vb + min(c + lane, HEAD_DIM4 - 1u)], c); }
    return s;
}
