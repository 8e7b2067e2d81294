// SwiGLU fused into the matvec that reads its output (the down projection in
// decode, where every dispatch has a fixed cost): token t's row of x is
// [gate (k) | up (k)], as swiglu.wgsl reads it, and the input is
// silu(gate) * up, computed as it is loaded.

fn load_x(t: u32, i: u32) -> vec4<f32> {
    let k4 = p.k / 4u;
    let g = x[2u * t * k4 + i];
    return g / (1.0 + exp(-g)) * x[(2u * t + 1u) * k4 + i];
}
fn input(i: u32, raw: vec4<f32>) -> vec4<f32> { return raw; }
fn output_scale(sum_sq: f32) -> f32 { return 1.0; }
