// RoPE inside the q/k/v projection's store, in decode on CPU adapters whose
// workgroups of 8 are one subgroup: one dispatch less a layer. GGUF Llama
// rotates interleaved pairs (2i, 2i+1) of each head's rot_dim leading
// dimensions; rows 2i and 2i+1 are held by invocations lane and lane ^ 1 of
// the CPU-style matvecs (row 8r + lane of a block of 64, and heads start at
// even rows), so each takes its partner's value by a subgroup shuffle and
// stores its half of the rotation, as rope.wgsl computes it. Queries are
// rows below k_row0, keys rows k_row0 .. v_row0; values are not rotated.
// kernels::linear declares `rope_table` (rope.wgsl's [pos, rot_dim / 2] of
// cos, sin) after the outputs.

fn rotated(t: u32, row: u32, value: f32) -> f32 {
    let partner = subgroupShuffleXor(value, 1u);
    if (row >= p.v_row0) { return value; }
    let d = select(row - p.k_row0, row, row < p.k_row0) % p.rope_head_dim;
    if (d >= p.rope_dims) { return value; }
    let cs = rope_table[(step.pos0 + t) * (p.rope_dims / 2u) + d / 2u];
    if ((d & 1u) == 0u) { return value * cs.x - partner * cs.y; }
    return partner * cs.y + value * cs.x;
}
