// Gradient through h = f * silu(gate) * up, where f is the per-neuron factor a
// scaled forward applied to rows t >= t0 (1 elsewhere; Integrated Gradients
// scales a layer). dh is the gradient of the (scaled) neuron outputs; writes
// [dgate | dup] rows matching the fused gate_up layout.

struct Params { dim: u32, factor_offset: u32, _a: u32, _b: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }
struct Scaling { t0: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<uniform> scaling: Scaling;
@group(0) @binding(3) var<storage, read> gate_up: array<f32>;
@group(0) @binding(4) var<storage, read> dh: array<f32>;
@group(0) @binding(5) var<storage, read> factors: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgate_up: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= step.n_tokens * p.dim) { return; }
    let t = i / p.dim;
    let j = i % p.dim;
    var d = dh[i];
    if (t >= scaling.t0) { d *= factors[p.factor_offset + j]; }
    let g = gate_up[2u * t * p.dim + j];
    let u = gate_up[(2u * t + 1u) * p.dim + j];
    let sig = 1.0 / (1.0 + exp(-g));
    dgate_up[2u * t * p.dim + j] = d * u * sig * (1.0 + g * (1.0 - sig));
    dgate_up[(2u * t + 1u) * p.dim + j] = d * g * sig;
}
