// How attention_rows.wgsl reads a key and a value where subgroups are not
// known to be 8 wide: every invocation loads all of each (the same addresses
// in every invocation of the workgroup).

// q . k for the key at kb (vec4 index), with qr pre-scaled.
fn key_score(kb: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < HEAD_DIM4; c += 2u) {
        s += dot(qr[c], k[kb + c]) + dot(qr[c + 1u], k[kb + c + 1u]);
    }
    return s;
}

// acc = acc * correction + e * v for the value at kb.
fn add_value(kb: u32, lane: u32, correction: f32, e: f32) {
    for (var c = 0u; c < HEAD_DIM4; c += 2u) {
        acc[c] = acc[c] * correction + e * v[kb + c];
        acc[c + 1u] = acc[c + 1u] * correction + e * v[kb + c + 1u];
    }
}
