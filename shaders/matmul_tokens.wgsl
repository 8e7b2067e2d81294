// How the CPU-style matmul kernels (matmul_rows.wgsl, matmul_rows_q4.wgsl)
// get the inputs of the 8 tokens an invocation computes, where subgroups are
// not known to be 8 wide: each invocation loads all 8 vec4s itself (the same
// addresses in every invocation). token_inputs(t0, lane, col) is vec4
// number col of tokens t0 .. t0 + 7's inputs. Tokens past the end repeat
// the last one; their results are not stored.

fn token_inputs(t0: u32, lane: u32, col: u32) -> array<vec4<f32>, 8> {
    var xs: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        xs[j] = x[min(t0 + j, step.n_tokens - 1u) * (p.k / 4u) + col];
    }
    return xs;
}
