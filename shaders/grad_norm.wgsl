// The gradient norm of the corrected-GxO term (the sparse-activation paper's
// form), per row t0 .. t1: the L2 norm over a layer's units of each unit's
// mean gradient, sqrt(sum_u (mean_d g_{u,d})^2); for MLP neurons (unit_dim 1)
// the norm of the row. One invocation per row.

struct Params { width: u32, unit_dim: u32, _b: u32, _c: u32 }
struct Range { t0: u32, t1: u32, ig_weight: f32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> range: Range;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = range.t0 + gid.x;
    if (t >= range.t1) { return; }
    var s = 0.0;
    for (var u = 0u; u < p.width / p.unit_dim; u++) {
        var mean = 0.0;
        for (var d = 0u; d < p.unit_dim; d++) {
            mean += g[t * p.width + u * p.unit_dim + d];
        }
        mean /= f32(p.unit_dim);
        s += mean * mean;
    }
    norms[t] = sqrt(s);
}
