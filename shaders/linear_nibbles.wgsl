// The 4-bit kernels' dot products of quants with inputs (matvec_rows_q4.wgsl,
// matvec_rows_q4g.wgsl, fused_mlp.wgsl), prepended by kernels::linear and
// kernels::fused_mlp.

// sum over the word's 8 weights q_e * x_e, with the nibbles masked in place
// (q_e 16^e, exact in f32) against inputs scaled by 16^-e (x0: e < 4, x1:
// e >= 4; the top nibble is shifted down, its input not scaled): one integer
// operation a weight instead of a shift and a mask.
fn dot_nibbles(word: u32, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    let q = vec4<u32>(word);
    return dot(x0, vec4<f32>(q & vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u)))
         + dot(x1, vec4<f32>(vec4<u32>(word & 0xF0000u, word & 0xF00000u, word & 0xF000000u, word >> 28u)));
}

// The inputs' scales for dot_nibbles: even vec4s of a block are x0, odd ones x1.
const NIBBLE_SCALE = array<vec4<f32>, 2>(
    vec4<f32>(1.0, 1.0 / 16.0, 1.0 / 256.0, 1.0 / 4096.0),
    vec4<f32>(1.0 / 65536.0, 1.0 / 1048576.0, 1.0 / 16777216.0, 1.0));

// sum over a block's 32 weights q_e * x_e: its 4 quant words against its 32
// inputs, as 8 vec4s scaled by NIBBLE_SCALE.
fn dot_block(q: vec4<u32>, xs: array<vec4<f32>, 8>) -> f32 {
    return dot_nibbles(q.x, xs[0], xs[1]) + dot_nibbles(q.y, xs[2], xs[3])
         + dot_nibbles(q.z, xs[4], xs[5]) + dot_nibbles(q.w, xs[6], xs[7]);
}

// A block of 32 grouped slots (matvec_rows_q4g.wgsl): sum (d q + m) x over
// its 4 groups of 8, each with its own d and m (scale word g of `s`: d in the
// low half, m in the high half), `sums` each group's sum of inputs.
fn dot_groups(q: vec4<u32>, s: vec4<u32>, xs: array<vec4<f32>, 8>, sums: vec4<f32>) -> f32 {
    let dm0 = unpack2x16float(s.x);
    let dm1 = unpack2x16float(s.y);
    let dm2 = unpack2x16float(s.z);
    let dm3 = unpack2x16float(s.w);
    let q_dots = vec4<f32>(dot_nibbles(q.x, xs[0], xs[1]), dot_nibbles(q.y, xs[2], xs[3]),
                           dot_nibbles(q.z, xs[4], xs[5]), dot_nibbles(q.w, xs[6], xs[7]));
    return dot(vec4<f32>(dm0.x, dm1.x, dm2.x, dm3.x), q_dots) + dot(vec4<f32>(dm0.y, dm1.y, dm2.y, dm3.y), sums);
}
