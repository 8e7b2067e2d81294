// What the one-dispatch MLP kernels (fused_mlp.wgsl, cats_mlp.wgsl) share,
// prepended by kernels::fused_mlp::source. Each declares `partial`
// ([workgroups, dim]: each workgroup's slice of W_down h).

// Every lane's vec4 `mine`, lane j's as element j (subgroupBroadcast takes a constant lane).
fn broadcast(mine: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}

// Elements 4i .. 4i + 3 of every workgroup's slice, summed in workgroup
// order (what the last workgroup to arrive adds to x).
fn slices_sum(i: u32, dim: u32, workgroups: u32) -> vec4<f32> {
    var sum = vec4<f32>(0.0);
    for (var w = 0u; w < workgroups; w++) {
        let at = w * dim + 4u * i;
        sum += vec4<f32>(partial[at], partial[at + 1u], partial[at + 2u], partial[at + 3u]);
    }
    return sum;
}
