// SwiGLU activation: h = silu(gate) * up over [n_tokens, dim]. Gate and up
// come from one fused projection: row t of `gate_up` is [gate (dim) | up (dim)].
// Four neurons an invocation, as vec4s (dim is a multiple of 4): on CPU
// adapters each load or store is a loop over the lanes, so a vec4 costs about
// what one float does.

struct Params { dim: u32, _a: u32, _b: u32, _c: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> gate_up: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> h: array<vec4<f32>>;

// Workgroups cover 256 neurons of one token (x: neurons / 4, y: tokens), so
// no index is divided (CPU adapters cannot vectorize integer division).
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let t = gid.y;
    let dim4 = p.dim / 4u;
    if (j >= dim4 || t >= step.n_tokens) { return; }
    let g = gate_up[2u * t * dim4 + j];
    h[t * dim4 + j] = g / (1.0 + exp(-g)) * gate_up[(2u * t + 1u) * dim4 + j];
}
