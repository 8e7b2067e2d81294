// Causal attention with grouped-query heads over a KV cache, one workgroup per
// (query head, token). Keys are visited in tiles of 256 with an online softmax,
// so shared memory stays small whatever the context length. Within a tile,
// every invocation scores one key, the tile maximum is a tree reduction, and
// the values are summed by 4 groups of 64 invocations (one dimension each,
// reading value rows coalesced), merged once at the end. Decode runs only
// n_heads workgroups, so the work per key is what matters: one key costs about
// half a serial step here, against three when one invocation walked a tile.
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
// The KV head each query head reads: h / (n_heads / n_kv_heads) for all
// heads, or for a compacted list of active heads, their own KV heads.
@group(0) @binding(6) var<storage, read> kv_head: array<u32>;

const WG: u32 = 256u;
// Invocations per value group: one dimension each, DIMS_PER_THREAD strides.
const LANES: u32 = 64u;
const GROUPS: u32 = WG / LANES;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_THREAD: u32 = MAX_HEAD_DIM / LANES;
var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> reduce_max: array<f32, WG>;
var<workgroup> weights: array<f32, WG>;
var<workgroup> group_acc: array<f32, 1024>; // GROUPS * MAX_HEAD_DIM
var<workgroup> group_l: array<f32, GROUPS>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    if (h >= p.n_heads || t >= step.n_tokens) { return; }
    let hd = p.head_dim;
    let kvh = kv_head[h];
    let kv_stride = p.n_kv_heads * hd;
    let q_base = (t * p.n_heads + h) * hd;
    for (var d = lid.x; d < hd; d += WG) { qs[d] = q[q_base + d] * p.scale; }
    workgroupBarrier();

    let lane = lid.x % LANES;
    let group = lid.x / LANES;
    let n_keys = step.pos0 + t + 1u;
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var j0 = 0u; j0 < n_keys; j0 += WG) {
        // Score: one key per invocation.
        let j = j0 + lid.x;
        var s = -3.0e38;
        if (j < n_keys) {
            let kb = j * kv_stride + kvh * hd;
            s = 0.0;
            for (var d = 0u; d < hd; d++) { s += qs[d] * k[kb + d]; }
        }
        reduce_max[lid.x] = s;
        workgroupBarrier();
        for (var width = WG / 2u; width > 0u; width = width / 2u) {
            if (lid.x < width) { reduce_max[lid.x] = max(reduce_max[lid.x], reduce_max[lid.x + width]); }
            workgroupBarrier();
        }
        let m_new = max(m, reduce_max[0]);
        let correction = exp(m - m_new);
        weights[lid.x] = select(0.0, exp(s - m_new), j < n_keys);
        workgroupBarrier();
        // Values: group g sums keys g, g + GROUPS, ... of the tile.
        l *= correction;
        for (var i = 0u; i < DIMS_PER_THREAD; i++) { acc[i] *= correction; }
        let tile_len = min(WG, n_keys - j0);
        for (var jj = group; jj < tile_len; jj += GROUPS) {
            let e = weights[jj];
            l += e;
            let vb = (j0 + jj) * kv_stride + kvh * hd;
            for (var i = 0u; i < DIMS_PER_THREAD; i++) {
                let d = lane + i * LANES;
                if (d < hd) { acc[i] += e * v[vb + d]; }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    // Merge the groups: they share the running maximum, so sums just add.
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = lane + i * LANES;
        if (d < hd) { group_acc[group * MAX_HEAD_DIM + d] = acc[i]; }
    }
    if (lane == 0u) { group_l[group] = l; }
    workgroupBarrier();
    if (group != 0u) { return; }
    var total_l = 0.0;
    for (var g = 0u; g < GROUPS; g++) { total_l += group_l[g]; }
    let o_base = (t * p.n_heads + h) * hd;
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = lane + i * LANES;
        if (d < hd) {
            var o = 0.0;
            for (var g = 0u; g < GROUPS; g++) { o += group_acc[g * MAX_HEAD_DIM + d]; }
            out[o_base + d] = o / total_l;
        }
    }
}
