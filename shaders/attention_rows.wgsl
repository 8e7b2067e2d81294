// Causal grouped-query attention for prefill on CPU-backed adapters: one
// invocation per (token, head), a workgroup holds 8 consecutive tokens of one
// head, and each invocation runs an online softmax over its keys with q and
// the output accumulator in registers. No shared memory and no barriers;
// every invocation of a workgroup reads the same key and value, which a keys
// header (attention_rows_keys.wgsl, attention_rows_keys_subgroup.wgsl)
// loads. Decode uses attention_keys.wgsl, GPUs the cooperative attention.wgsl.
//
// lavapipe stops any invocation after 65535 loop iterations in total (all
// loops together), so the inner loops step 8 dims at a time: one key costs
// 1 + head_dim / 4 iterations, and the launcher falls back to attention.wgsl
// when the key count would exceed the budget (see MAX_LOOP_ITERATIONS).

// Params, Step and the bindings come from attention_common.wgsl, key_score
// and add_value from a keys header.

// head_dim / 4, fixed when the pipeline is created so the inner loops have a
// constant trip count the driver unrolls (2x faster on lavapipe).
override HEAD_DIM4: u32 = 16u;
const WG: u32 = 8u;
const MAX_HEAD_DIM4: u32 = 64u;

// This invocation's query (scaled) and output accumulator, zero past head_dim.
var<private> qr: array<vec4<f32>, MAX_HEAD_DIM4>;
var<private> acc: array<vec4<f32>, MAX_HEAD_DIM4>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.y;
    let t = wg.x * WG + lid.x;
    // Keys up to the block's last token; later keys are masked per invocation.
    let block_keys = step.pos0 + min(wg.x * WG + WG, step.n_tokens);
    if (h >= p.n_heads) { return; }
    let in_range = t < step.n_tokens;
    let hd4 = HEAD_DIM4;
    let kvh = kv_head[h];
    let kv_stride4 = p.n_kv_heads * hd4;
    let tq = min(t, step.n_tokens - 1u);
    let q_base = (tq * p.n_heads + h) * p.head_dim;
    for (var c = 0u; c < hd4; c++) {
        let b = q_base + 4u * c;
        qr[c] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
    }
    let n_keys = step.pos0 + tq + 1u;
    var m = -3.0e38;
    var l = 0.0;
    for (var j = 0u; j < block_keys; j++) {
        let kb = j * kv_stride4 + kvh * hd4;
        let s = key_score(kb, lid.x);
        let visible = j < n_keys;
        let m_new = select(m, max(m, s), visible);
        let correction = exp(m - m_new);
        let e = select(0.0, exp(s - m_new), visible);
        l = l * correction + e;
        add_value(kb, lid.x, correction, e);
        m = m_new;
    }
    if (!in_range) { return; }
    let o_base = (t * p.n_heads + h) * p.head_dim;
    for (var c = 0u; c < hd4; c++) {
        let o = acc[c] / l;
        out[o_base + 4u * c] = o.x;
        out[o_base + 4u * c + 1u] = o.y;
        out[o_base + 4u * c + 2u] = o.z;
        out[o_base + 4u * c + 3u] = o.w;
    }
}
