// Scales of the 8-bit packed form of K-quant blocks (kernels::packed's
// Q8Halves), for matvec_rows_q8.wgsl: four f32 words per unit (a block of 32
// weights of a row), d of weights 0..15, d of 16..31, m of 0..15, m of
// 16..31, [block][k / 32][lane][r]: a K-quant sub-block's scale is an f16
// times a small integer, not an f16 number.

// Row r's (d of weights 0..15, d of 16..31, m of 0..15, m of 16..31) for the
// invocation's 8 rows of the block; `group` is (block * k32 + i) * 8 + lane.
fn block_scales(scales: u32, group: u32) -> array<vec4<f32>, 8> {
    let at = scales + group * 8u;
    var out: array<vec4<f32>, 8>;
    for (var r = 0u; r < 8u; r++) {
        out[r] = bitcast<vec4<f32>>(w[at + r]);
    }
    return out;
}
