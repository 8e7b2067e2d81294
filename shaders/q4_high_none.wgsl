// The 4-bit form's high bits for matvec_rows_q4.wgsl: none. q is the nibble.

fn high_words(at: u32) -> array<vec4<u32>, 2> { return array<vec4<u32>, 2>(); }
fn high_dot(h: u32, xs: array<vec4<f32>, 8>) -> f32 { return 0.0; }
