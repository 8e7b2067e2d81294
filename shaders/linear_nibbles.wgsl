// The 4-bit matvecs' dot product of a word of 8 quants with 8 inputs
// (matvec_rows_q4.wgsl, matvec_rows_q4g.wgsl), prepended by kernels::linear.

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
