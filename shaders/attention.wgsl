// Causal attention with grouped-query heads over a KV cache, one workgroup per
// (query head, token), for GPUs. Keys are visited in tiles of 256 with an
// online softmax, so shared memory stays small whatever the context length.
// Within a tile, every invocation scores one key (vec4 loads), the tile
// maximum is a tree reduction, and the values are summed by 16 groups of 16
// invocations (each invocation 4 dimensions at a time, loads coalesced along
// a value row), merged once at the end. Decode runs only n_heads workgroups,
// so the serial work per tile is what matters: 16 vec4 loads per key score
// and 16 value rows per group for head_dim 64.
// q: [n_tokens, n_heads * head_dim]; k, v caches: [max_ctx, n_kv_heads * head_dim];
// token t sits at position pos0 + t and sees keys 0 ..= pos0 + t.
// head_dim is a multiple of 4 (Config checks a multiple of 8).

// Params, Step and the bindings come from attention_common.wgsl.

const WG: u32 = 256u;
// Value summing: GROUPS groups of LANES invocations, 4 dimensions each.
const LANES: u32 = 16u;
const GROUPS: u32 = WG / LANES;
const MAX_HEAD_DIM4: u32 = 64u;
const CHUNKS: u32 = MAX_HEAD_DIM4 / LANES;
var<workgroup> qs: array<vec4<f32>, MAX_HEAD_DIM4>;
var<workgroup> reduce_max: array<f32, WG>;
var<workgroup> weights: array<f32, WG>;
var<workgroup> merge: array<vec4<f32>, WG>;
var<workgroup> group_l: array<f32, GROUPS>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    if (h >= p.n_heads || t >= step.n_tokens) { return; }
    let hd4 = p.head_dim / 4u;
    let kvh = kv_head[h];
    let kv_stride4 = p.n_kv_heads * hd4;
    let q_base = (t * p.n_heads + h) * p.head_dim;
    if (lid.x < hd4) {
        let b = q_base + 4u * lid.x;
        qs[lid.x] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
    }
    workgroupBarrier();

    let lane = lid.x % LANES;
    let group = lid.x / LANES;
    let n_keys = step.pos0 + t + 1u;
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<vec4<f32>, CHUNKS>;
    for (var j0 = 0u; j0 < n_keys; j0 += WG) {
        // Score: one key per invocation.
        let j = j0 + lid.x;
        var s = -3.0e38;
        if (j < n_keys) {
            let kb = j * kv_stride4 + kvh * hd4;
            s = 0.0;
            for (var c = 0u; c < hd4; c++) { s += dot(qs[c], k[kb + c]); }
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
        for (var i = 0u; i < CHUNKS; i++) { acc[i] *= correction; }
        let tile_len = min(WG, n_keys - j0);
        for (var jj = group; jj < tile_len; jj += GROUPS) {
            let e = weights[jj];
            l += e;
            let vb = (j0 + jj) * kv_stride4 + kvh * hd4;
            for (var i = 0u; i < CHUNKS; i++) {
                let c = lane + i * LANES;
                if (c < hd4) { acc[i] += e * v[vb + c]; }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    // Merge the groups (they share the running maximum, so sums just add),
    // one chunk of 4 x LANES dimensions at a time.
    if (lane == 0u) { group_l[group] = l; }
    workgroupBarrier();
    var total_l = 0.0;
    for (var g = 0u; g < GROUPS; g++) { total_l += group_l[g]; }
    let o_base = q_base;
    for (var i = 0u; i < CHUNKS; i++) {
        merge[lid.x] = acc[i];
        workgroupBarrier();
        for (var width = GROUPS / 2u; width > 0u; width = width / 2u) {
            if (group < width) { merge[lid.x] += merge[lid.x + width * LANES]; }
            workgroupBarrier();
        }
        let c = lane + i * LANES;
        if (group == 0u && c < hd4) {
            let o = merge[lane] / total_l;
            out[o_base + 4u * c] = o.x;
            out[o_base + 4u * c + 1u] = o.y;
            out[o_base + 4u * c + 2u] = o.z;
            out[o_base + 4u * c + 3u] = o.w;
        }
        workgroupBarrier();
    }
}
