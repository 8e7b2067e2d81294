// Causal grouped-query attention for prefill on CPU adapters whose
// workgroups of 8 are one subgroup (lavapipe), with every query head of a KV
// group in one invocation: as attention_rows.wgsl (one invocation per token,
// 8 consecutive tokens a workgroup, an online softmax over the keys in
// registers), but the GROUP heads that read the same KV head share each key
// and value: invocation `lane` loads vec4s lane, lane + 8, ... of them and
// subgroup broadcasts hand them to all 8, once for the whole group instead
// of once per head. On lavapipe every load is a loop over the lanes, and the
// broadcasts cost as much as the products they feed, so a group of 3 heads
// pays a third of both. kernels::attention uses it where GROUP heads of
// head_dim / 4 vec4s (rounded up to 8) fit the registers' arrays.
//
// lavapipe stops any invocation after 65535 loop iterations in total; the
// launcher falls back to attention.wgsl past rows_max_keys (the inner loops
// here iterate less per key than attention_rows.wgsl's).

// Params, Step and the bindings come from attention_common.wgsl.

override HEAD_DIM4: u32 = 16u;
override GROUP: u32 = 3u;
// head_dim / 4 rounded up to 8: each head's slice of qr and acc, zero past head_dim.
override STRIDE4: u32 = 16u;
const MAX_UNITS: u32 = 64u;
const MAX_GROUP: u32 = 8u;

var<private> qr: array<vec4<f32>, MAX_UNITS>;
var<private> acc: array<vec4<f32>, MAX_UNITS>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.y;
    let lane = lid.x;
    let t = wg.x * 8u + lane;
    // Keys up to the block's last token; later keys are masked per invocation.
    let block_keys = step.pos0 + min(wg.x * 8u + 8u, step.n_tokens);
    if (g >= p.n_kv_heads) { return; }
    let in_range = t < step.n_tokens;
    let tq = min(t, step.n_tokens - 1u);
    for (var hh = 0u; hh < GROUP; hh++) {
        let q_base = (tq * p.n_heads + g * GROUP + hh) * p.head_dim;
        for (var c = 0u; c < HEAD_DIM4; c++) {
            let b = q_base + 4u * c;
            qr[hh * STRIDE4 + c] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
        }
    }
    let n_keys = step.pos0 + tq + 1u;
    let kv_stride4 = p.n_kv_heads * HEAD_DIM4;
    var m: array<f32, MAX_GROUP>;
    var l: array<f32, MAX_GROUP>;
    for (var hh = 0u; hh < GROUP; hh++) { m[hh] = -3.0e38; }
    for (var j = 0u; j < block_keys; j++) {
        let kb = j * kv_stride4 + g * HEAD_DIM4;
        var s: array<f32, MAX_GROUP>;
        for (var c = 0u; c < HEAD_DIM4; c += 8u) {
            let mine = k[kb + min(c + lane, HEAD_DIM4 - 1u)];
            // subgroupBroadcast takes a constant lane.
            let b0 = subgroupBroadcast(mine, 0u);
            let b1 = subgroupBroadcast(mine, 1u);
            let b2 = subgroupBroadcast(mine, 2u);
            let b3 = subgroupBroadcast(mine, 3u);
            let b4 = subgroupBroadcast(mine, 4u);
            let b5 = subgroupBroadcast(mine, 5u);
            let b6 = subgroupBroadcast(mine, 6u);
            let b7 = subgroupBroadcast(mine, 7u);
            for (var hh = 0u; hh < GROUP; hh++) {
                let o = hh * STRIDE4 + c;
                s[hh] += dot(qr[o], b0) + dot(qr[o + 1u], b1) + dot(qr[o + 2u], b2) + dot(qr[o + 3u], b3)
                       + dot(qr[o + 4u], b4) + dot(qr[o + 5u], b5) + dot(qr[o + 6u], b6) + dot(qr[o + 7u], b7);
            }
        }
        let visible = j < n_keys;
        var corr: array<f32, MAX_GROUP>;
        var e: array<f32, MAX_GROUP>;
        for (var hh = 0u; hh < GROUP; hh++) {
            let m_new = select(m[hh], max(m[hh], s[hh]), visible);
            corr[hh] = exp(m[hh] - m_new);
            e[hh] = select(0.0, exp(s[hh] - m_new), visible);
            l[hh] = l[hh] * corr[hh] + e[hh];
            m[hh] = m_new;
        }
        for (var c = 0u; c < HEAD_DIM4; c += 8u) {
            let mine = v[kb + min(c + lane, HEAD_DIM4 - 1u)];
            let b0 = subgroupBroadcast(mine, 0u);
            let b1 = subgroupBroadcast(mine, 1u);
            let b2 = subgroupBroadcast(mine, 2u);
            let b3 = subgroupBroadcast(mine, 3u);
            let b4 = subgroupBroadcast(mine, 4u);
            let b5 = subgroupBroadcast(mine, 5u);
            let b6 = subgroupBroadcast(mine, 6u);
            let b7 = subgroupBroadcast(mine, 7u);
            for (var hh = 0u; hh < GROUP; hh++) {
                let o = hh * STRIDE4 + c;
                acc[o] = acc[o] * corr[hh] + e[hh] * b0;
                acc[o + 1u] = acc[o + 1u] * corr[hh] + e[hh] * b1;
                acc[o + 2u] = acc[o + 2u] * corr[hh] + e[hh] * b2;
                acc[o + 3u] = acc[o + 3u] * corr[hh] + e[hh] * b3;
                acc[o + 4u] = acc[o + 4u] * corr[hh] + e[hh] * b4;
                acc[o + 5u] = acc[o + 5u] * corr[hh] + e[hh] * b5;
                acc[o + 6u] = acc[o + 6u] * corr[hh] + e[hh] * b6;
                acc[o + 7u] = acc[o + 7u] * corr[hh] + e[hh] * b7;
            }
        }
    }
    if (!in_range) { return; }
    for (var hh = 0u; hh < GROUP; hh++) {
        let o_base = (t * p.n_heads + g * GROUP + hh) * p.head_dim;
        for (var c = 0u; c < HEAD_DIM4; c++) {
            let o = acc[hh * STRIDE4 + c] / l[hh];
            out[o_base + 4u * c] = o.x;
            out[o_base + 4u * c + 1u] = o.y;
            out[o_base + 4u * c + 2u] = o.z;
            out[o_base + 4u * c + 3u] = o.w;
        }
    }
}
