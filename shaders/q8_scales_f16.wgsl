// Scales of the 8-bit packed form of Q8_0, Q5_0, Q4_0 and Q5_1 blocks, for
// matvec_rows_q8.wgsl: one word per unit (a block of 32 weights of a row),
// d in the low half and m in the high, f16, [block][k / 32][lane][r], so that
// an invocation's 8 rows of a block are two whole vec4s.

// Row r's (d of weights 0..15, d of 16..31, m of 0..15, m of 16..31) for the
// invocation's 8 rows of the block; `group` is (block * k32 + i) * 8 + lane.
fn block_scales(scales: u32, group: u32) -> array<vec4<f32>, 8> {
    let at = scales + group * 2u;
    let dms = array<vec4<u32>, 2>(w[at], w[at + 1u]);
    var out: array<vec4<f32>, 8>;
    for (var r = 0u; r < 8u; r++) {
        let dm = unpack2x16float(dms[r / 4u][r % 4u]);
        out[r] = vec4<f32>(dm.x, dm.x, dm.y, dm.y);
    }
    return out;
}
