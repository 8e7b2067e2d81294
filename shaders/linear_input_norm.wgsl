// RMSNorm fused into the matvec that follows it (decode on GPUs, where every
// dispatch costs microseconds of latency): the input is the residual stream
// x, read times the norm weight, and each result is scaled by
// 1 / sqrt(mean(x^2) + eps), the sum of squares taken on the same loads.
// kernels::linear declares `norm_weight` (array<vec4<f32>>, after the outputs).

fn input(i: u32, xv: vec4<f32>) -> vec4<f32> { return xv * norm_weight[i]; }
fn output_scale(sum_sq: f32) -> f32 { return inverseSqrt(sum_sq / f32(p.k) + p.norm_eps); }
