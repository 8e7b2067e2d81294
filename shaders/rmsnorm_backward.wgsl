// Gradient through RMSNorm y = x * r * w with r = 1/sqrt(mean(x^2) + eps):
// dx = r * w * dy - x * r^3 / dim * sum(w * dy * x), one workgroup per row,
// added to dx when `accumulate` (the residual stream's gradient) or stored.

struct Params { dim: u32, eps: f32, accumulate: u32, _a: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4<f32>>;

const WG: u32 = 64u;
var<workgroup> partial: array<vec2<f32>, WG>;

// vec4 loads and stores (dim is a multiple of 4): on CPU adapters each is a
// loop over the lanes, so a vec4 costs about what one float does.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wg.x;
    if (t >= step.n_tokens) { return; }
    let dim4 = p.dim / 4u;
    let base = t * dim4;
    var sums = vec2<f32>(0.0);
    for (var i = lid.x; i < dim4; i += WG) {
        let v = x[base + i];
        sums += vec2<f32>(dot(v, v), dot(weight[i] * dy[base + i], v));
    }
    partial[lid.x] = sums;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { partial[lid.x] += partial[lid.x + s]; }
        workgroupBarrier();
    }
    let r = inverseSqrt(partial[0].x / f32(p.dim) + p.eps);
    let c = r * r * r * partial[0].y / f32(p.dim);
    for (var i = lid.x; i < dim4; i += WG) {
        var d = r * weight[i] * dy[base + i] - x[base + i] * c;
        if (p.accumulate != 0u) { d += dx[base + i]; }
        dx[base + i] = d;
    }
}
