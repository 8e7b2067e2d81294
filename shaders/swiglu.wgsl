// SwiGLU activation: h = silu(gate) * up over [n_tokens, dim]. Gate and up
// come from one fused projection: row t of `gate_up` is [gate (dim) | up (dim)].

struct Params { dim: u32, _a: u32, _b: u32, _c: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> gate_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= step.n_tokens * p.dim) { return; }
    let t = i / p.dim;
    let j = i % p.dim;
    let g = gate_up[2u * t * p.dim + j];
    h[i] = g / (1.0 + exp(-g)) * gate_up[(2u * t + 1u) * p.dim + j];
}
