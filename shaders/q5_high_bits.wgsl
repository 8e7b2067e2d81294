// The 5-bit form's high bits for matvec_rows_q4.wgsl (kernels::packed's Q5:
// GGUF's Q5_0, m = -16 d, Q5_1 and Q4_0): q = nibble + 16 high, one word of
// high bits per unit after the scales, in the scales' order, so that an
// invocation's 8 rows' words are two whole vec4s. Bit 4p + j of a word is
// weight 8j + p's: (word >> j) & 0x11111111 lays group j's bits out as
// nibbles, for dot_nibbles (kernels::packed::q5_block). One vec4<u32> load
// brings 32 weights' low bits, where the 8-bit form needs two vec4s.

fn high_words(at: u32) -> array<vec4<u32>, 2> { return array<vec4<u32>, 2>(w[at], w[at + 1u]); }

// 16 sum over the block's weights of high_e x_e (inputs scaled as for dot_block).
fn high_dot(h: u32, xs: array<vec4<f32>, 8>) -> f32 {
    return 16.0 * (dot_nibbles(h & 0x11111111u, xs[0], xs[1]) + dot_nibbles((h >> 1u) & 0x11111111u, xs[2], xs[3])
                 + dot_nibbles((h >> 2u) & 0x11111111u, xs[4], xs[5]) + dot_nibbles((h >> 3u) & 0x11111111u, xs[6], xs[7]));
}
