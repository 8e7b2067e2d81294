// L2 norm of each row of a layer's gradient, rows t0 .. t1: the
// sqrt(sum_k g_k^2) of the corrected-GxO term, one invocation per row.

struct Params { width: u32, _a: u32, _b: u32, _c: u32 }
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
    for (var k = 0u; k < p.width; k++) {
        let v = g[t * p.width + k];
        s += v * v;
    }
    norms[t] = sqrt(s);
}
