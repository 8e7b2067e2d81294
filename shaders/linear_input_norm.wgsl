// RMSNorm fused into the matvec that follows it (decode, where every dispatch
// has a fixed cost): the input is the residual stream x, read times the norm
// weight, and each result is scaled by 1 / sqrt(mean(x^2) + eps), the sum of
// squares taken on the same loads. kernels::linear declares `norm_weight`
// (array<vec4<f32>>, after the outputs).

fn load_x(t: u32, i: u32) -> vec4<f32> { return x[t * (p.k / 4u) + i]; }
fn input(i: u32, raw: vec4<f32>) -> vec4<f32> { return raw * norm_weight[i]; }
fn output_scale(sum_sq: f32) -> f32 { return inverseSqrt(sum_sq / f32(p.k) + p.norm_eps); }
