// How the CPU-style matvec kernels load a block of 32 inputs where a
// workgroup of 8 is one subgroup (lavapipe): invocation `lane` loads and
// prepares the block's vec4 number `lane`, and subgroup broadcasts hand each
// invocation all 8. On lavapipe every load is a gather, so loading each
// input once instead of 8 times makes a 4-bit matvec a tenth to a fifth
// faster, and a fused RMSNorm or SwiGLU costs an eighth of what it costs in
// linear_block.wgsl, the version without subgroups (same functions, same
// results).

var<private> lane_sum_sq: f32;

fn block_inputs(t: u32, i: u32, lane: u32) -> array<vec4<f32>, 8> {
    let raw = load_x(t, 8u * i + lane);
    lane_sum_sq += dot(raw, raw);
    let mine = input(8u * i + lane, raw);
    // subgroupBroadcast takes a constant lane.
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}

// One vec4 that every invocation loads (the end of a k that is not a multiple
// of 32); its squares count once.
fn single_input(t: u32, i: u32, lane: u32) -> vec4<f32> {
    let raw = load_x(t, i);
    lane_sum_sq += select(0.0, dot(raw, raw), lane == 0u);
    return input(i, raw);
}

fn input_sum_sq() -> f32 { return subgroupAdd(lane_sum_sq); }
