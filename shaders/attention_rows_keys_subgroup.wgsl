// How attention_rows.wgsl reads a key and a value where a workgroup of 8 is
// one subgroup (lavapipe): invocation `lane` loads vec4s lane, lane + 8, ...
// of each, and subgroup broadcasts hand every invocation all of them. On
// lavapipe every load is a loop over the lanes, whether or not the address
// is the same for all, so this loads each value once where
// attention_rows_keys.wgsl loads it 8 times. Past head_dim, lanes load the
// last vec4 again and qr is zero there; acc past head_dim is never stored.

fn key_score(kb: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < HEAD_DIM4; c += 8u) {
        let mine = k[kb + min(c + lane, HEAD_DIM4 - 1u)];
        // subgroupBroadcast takes a constant lane.
        s += dot(qr[c], subgroupBroadcast(mine, 0u)) + dot(qr[c + 1u], subgroupBroadcast(mine, 1u))
           + dot(qr[c + 2u], subgroupBroadcast(mine, 2u)) + dot(qr[c + 3u], subgroupBroadcast(mine, 3u))
           + dot(qr[c + 4u], subgroupBroadcast(mine, 4u)) + dot(qr[c + 5u], subgroupBroadcast(mine, 5u))
           + dot(qr[c + 6u], subgroupBroadcast(mine, 6u)) + dot(qr[c + 7u], subgroupBroadcast(mine, 7u));
    }
    return s;
}

fn add_value(kb: u32, lane: u32, correction: f32, e: f32) {
    for (var c = 0u; c < HEAD_DIM4; c += 8u) {
        let mine = v[kb + min(c + lane, HEAD_DIM4 - 1u)];
        acc[c] = acc[c] * correction + e * subgroupBroadcast(mine, 0u);
        acc[c + 1u] = acc[c + 1u] * correction + e * subgroupBroadcast(mine, 1u);
        acc[c + 2u] = acc[c + 2u] * correction + e * subgroupBroadcast(mine, 2u);
        acc[c + 3u] = acc[c + 3u] * correction + e * subgroupBroadcast(mine, 3u);
        acc[c + 4u] = acc[c + 4u] * correction + e * subgroupBroadcast(mine, 4u);
        acc[c + 5u] = acc[c + 5u] * correction + e * subgroupBroadcast(mine, 5u);
        acc[c + 6u] = acc[c + 6u] * correction + e * subgroupBroadcast(mine, 6u);
        acc[c + 7u] = acc[c + 7u] * correction + e * subgroupBroadcast(mine, 7u);
    }
}
