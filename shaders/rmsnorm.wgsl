// RMSNorm over each token's row: out = x / sqrt(mean(x^2) + eps) * weight.
// One workgroup a token; vec4 loads and stores (dim is a multiple of 4): on
// CPU adapters each is a loop over the lanes, so a vec4 costs about what one
// float does.

struct Params { dim: u32, eps: f32, _a: u32, _b: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wg.x;
    if (t >= step.n_tokens) { return; }
    let dim4 = p.dim / 4u;
    let base = t * dim4;
    var sum = 0.0;
    for (var i = lid.x; i < dim4; i += WG) {
        let v = x[base + i];
        sum += dot(v, v);
    }
    partial[lid.x] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { partial[lid.x] += partial[lid.x + s]; }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(p.dim) + p.eps);
    for (var i = lid.x; i < dim4; i += WG) {
        out[base + i] = x[base + i] * inv * weight[i];
    }
}
