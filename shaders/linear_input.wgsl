// The matvec kernels' input as stored (see linear_input_norm.wgsl and
// linear_input_swiglu.wgsl for the fused ones). load_x(t, i) is the i-th vec4
// of token t's input as loaded, input(i, raw) as the product reads it;
// output_scale(sum of dot(raw, raw) over the token) multiplies each result.
// The kernel declares x (binding 2) as array<vec4<f32>>.

fn load_x(t: u32, i: u32) -> vec4<f32> { return x[t * (p.k / 4u) + i]; }
fn input(i: u32, raw: vec4<f32>) -> vec4<f32> { return raw; }
fn output_scale(sum_sq: f32) -> f32 { return 1.0; }
