// How attention_backward_scores.wgsl reads keys and values where subgroups
// are not known to be 8 wide: every invocation loads all of each.

// The last key an invocation's loops visit: its own.
fn key_bound(last: u32) -> u32 { return last; }

fn q_dot_key(kb: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < HEAD_DIM4; d++) { s += dot(qi[d], k[kb + d]); }
    return s;
}

fn da_dot_value(vb: u32, lane: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < HEAD_DIM4; d++) { s += dot(dai[d], v[vb + d]); }
    return s;
}
