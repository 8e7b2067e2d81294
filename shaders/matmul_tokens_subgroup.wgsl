// How the CPU-style matmul kernels (matmul_rows.wgsl, matmul_rows_q4.wgsl)
// get the inputs of their 8 tokens where 8 invocations are one subgroup
// (lavapipe): invocation `lane` loads token t0 + lane's vec4 and subgroup
// broadcasts hand every invocation all 8. On lavapipe every load is a loop
// over the lanes, whether or not the address is the same for all, so this
// loads each input once where matmul_tokens.wgsl loads it 8 times: a 4-bit
// prefill matmul 3-4x faster. Same function and results as
// matmul_tokens.wgsl. Tokens past the end repeat the last one; their results
// are not stored.
//
// (Computing an RMSNorm or SwiGLU here as the inputs load, as the matvecs do
// in decode, was measured and dropped: each of a matrix's blocks of 64 rows
// loads the inputs again, so the fused step ran 10-50 times per input and
// cost more than the dispatch it saved.)

fn token_inputs(t0: u32, lane: u32, col: u32) -> array<vec4<f32>, 8> {
    let mine = x[min(t0 + lane, step.n_tokens - 1u) * (p.k / 4u) + col];
    // subgroupBroadcast takes a constant lane.
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}
