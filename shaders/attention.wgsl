// Causal attention with grouped-query heads over a KV cache, one workgroup per
// (query head, token). Keys are visited in tiles of 64 with an online softmax,
// so shared memory stays small whatever the context length.
// q: [n_tokens, n_heads * head_dim]; k, v caches: [max_ctx, n_kv_heads * head_dim];
// token t sits at position pos0 + t and sees keys 0 ..= pos0 + t.

struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, scale: f32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_THREAD: u32 = MAX_HEAD_DIM / WG;
var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> weights: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    if (h >= p.n_heads || t >= step.n_tokens) { return; }
    let hd = p.head_dim;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let kv_stride = p.n_kv_heads * hd;
    let q_base = (t * p.n_heads + h) * hd;
    for (var d = lid.x; d < hd; d += WG) { qs[d] = q[q_base + d] * p.scale; }
    workgroupBarrier();

    let n_keys = step.pos0 + t + 1u;
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var j0 = 0u; j0 < n_keys; j0 += WG) {
        let j = j0 + lid.x;
        var s = -3.0e38;
        if (j < n_keys) {
            let kb = j * kv_stride + kvh * hd;
            s = 0.0;
            for (var d = 0u; d < hd; d++) { s += qs[d] * k[kb + d]; }
        }
        weights[lid.x] = s;
        workgroupBarrier();
        var tile_max = -3.0e38;
        let tile_len = min(WG, n_keys - j0);
        for (var jj = 0u; jj < tile_len; jj++) { tile_max = max(tile_max, weights[jj]); }
        let m_new = max(m, tile_max);
        let correction = exp(m - m_new);
        workgroupBarrier();
        weights[lid.x] = select(0.0, exp(s - m_new), j < n_keys);
        workgroupBarrier();
        l *= correction;
        for (var i = 0u; i < DIMS_PER_THREAD; i++) { acc[i] *= correction; }
        for (var jj = 0u; jj < tile_len; jj++) {
            let e = weights[jj];
            l += e;
            let vb = (j0 + jj) * kv_stride + kvh * hd;
            for (var i = 0u; i < DIMS_PER_THREAD; i++) {
                let d = lid.x + i * WG;
                if (d < hd) { acc[i] += e * v[vb + d]; }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    let o_base = (t * p.n_heads + h) * hd;
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = lid.x + i * WG;
        if (d < hd) { out[o_base + d] = acc[i] / l; }
    }
}
