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
@group(0) @binding(3) var<storage, read> gate_up: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dh: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> factors: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dgate_up: array<vec4<f32>>;

// Four neurons an invocation, as vec4s (dim and factor_offset are multiples
// of 4: on CPU adapters each load or store is a loop over the lanes, so a
// vec4 costs about what one float does); x: neurons / 4, y: tokens, so no
// index is divided.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let t = gid.y;
    let dim4 = p.dim / 4u;
    if (j >= dim4 || t >= step.n_tokens) { return; }
    var d = dh[t * dim4 + j];
    if (t >= scaling.t0) { d *= factors[p.factor_offset / 4u + j]; }
    let g = gate_up[2u * t * dim4 + j];
    let u = gate_up[(2u * t + 1u) * dim4 + j];
    let sig = 1.0 / (1.0 + exp(-g));
    dgate_up[2u * t * dim4 + j] = d * u * sig * (1.0 + g * (1.0 - sig));
    dgate_up[(2u * t + 1u) * dim4 + j] = d * g * sig;
}
