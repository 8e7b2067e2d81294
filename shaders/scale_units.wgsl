// Multiplies unit outputs in place by per-unit factors: x[t, j] *= f[j / unit_dim]
// for rows t >= t0. Units are MLP neurons (unit_dim 1) or attention heads
// (unit_dim head_dim). Zero deactivates a unit; Integrated Gradients scales a
// whole layer by alpha.

struct Params { width: u32, unit_dim: u32, factor_offset: u32, _a: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }
struct Scaling { t0: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<uniform> scaling: Scaling;
@group(0) @binding(3) var<storage, read> factors: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= step.n_tokens * p.width) { return; }
    let t = i / p.width;
    if (t < scaling.t0) { return; }
    x[i] *= factors[p.factor_offset + (i % p.width) / p.unit_dim];
}
