// Attribution scores of one layer's units (MLP neurons: unit_dim 1; heads:
// unit_dim head_dim) from outputs x and gradients g = dF/dx, summed over rows
// t0 .. t1. Per row, with m = ||x_u||_2 and s = mean over the unit of g * x:
//   magnitude m, GxO s, SNIP |s|, Fisher s^2, corrected GxO s + 0.5 m n,
// n the norm over the layer's units of their mean gradients (grad_norm.wgsl;
// the paper's head term, and for neurons the norm of the row's gradient).
// Scores are [metric, layer, unit]; slot 4 is Integrated Gradients, which
// mode 1 accumulates instead: ig_weight * s (x is the scaled output there,
// and ig_weight = 1 / (steps * alpha) undoes the scale).

struct Params { width: u32, unit_dim: u32, n_units: u32, offset: u32, metric_stride: u32, mode: u32, _a: u32, _b: u32 }
struct Range { t0: u32, t1: u32, ig_weight: f32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> range: Range;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read> norms: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let u = gid.x;
    if (u >= p.n_units) { return; }
    var mag = 0.0;
    var gxo = 0.0;
    var snip = 0.0;
    var fisher = 0.0;
    var corrected = 0.0;
    for (var t = range.t0; t < range.t1; t++) {
        let base = t * p.width + u * p.unit_dim;
        var xx = 0.0;
        var gx = 0.0;
        for (var d = 0u; d < p.unit_dim; d++) {
            let xv = x[base + d];
            xx += xv * xv;
            gx += xv * g[base + d];
        }
        let m = sqrt(xx);
        let s = gx / f32(p.unit_dim);
        mag += m;
        gxo += s;
        snip += abs(s);
        fisher += s * s;
        corrected += s + 0.5 * m * norms[t];
    }
    let o = p.offset + u;
    if (p.mode == 1u) {
        scores[4u * p.metric_stride + o] += range.ig_weight * gxo;
        return;
    }
    scores[o] = mag;
    scores[p.metric_stride + o] = gxo;
    scores[2u * p.metric_stride + o] = snip;
    scores[3u * p.metric_stride + o] = fisher;
    scores[5u * p.metric_stride + o] = corrected;
}
