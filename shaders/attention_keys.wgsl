// Causal grouped-query attention for decode (a few tokens) on CPU-backed
// adapters: one workgroup of 8 invocations per (head, token), invocation i
// walking keys i, i + 8, ... with its own online softmax; the 8 partial
// softmaxes merge at the end through workgroup memory. A SIMD load then
// brings 8 keys where one invocation per head brought one (its head's), and
// each head is a workgroup of its own for the cores to share, so a step's
// key walk is about 8 times shorter. Prefill keeps attention_rows.wgsl.
//
// lavapipe stops an invocation after 65535 loop iterations (all loops
// together): each invocation visits 1/8 of the keys, and the launcher falls
// back to attention.wgsl past 8 times attention_rows.wgsl's key budget.

// Params, Step and the bindings come from attention_common.wgsl.

// head_dim / 4, fixed at pipeline creation so the inner loops unroll.
override HEAD_DIM4: u32 = 16u;
const LANES: u32 = 8u;
const MAX_HEAD_DIM4: u32 = 64u;

var<workgroup> part_m: array<f32, LANES>;
var<workgroup> part_l: array<f32, LANES>;
var<workgroup> part_acc: array<vec4<f32>, 512>; // LANES * MAX_HEAD_DIM4

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let h = wg.x;
    let t = wg.y;
    // Uniform over the workgroup: all of it leaves, or none.
    if (h >= p.n_heads || t >= step.n_tokens) { return; }
    let hd4 = HEAD_DIM4;
    let kvh = kv_head[h];
    let kv_stride4 = p.n_kv_heads * hd4;
    let q_base = (t * p.n_heads + h) * p.head_dim;
    var qr: array<vec4<f32>, MAX_HEAD_DIM4>;
    var acc: array<vec4<f32>, MAX_HEAD_DIM4>;
    for (var c = 0u; c < hd4; c++) {
        let b = q_base + 4u * c;
        qr[c] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * p.scale;
    }
    // A lane with no keys keeps m at -3e38 and l at 0: it weighs nothing below.
    var m = -3.0e38;
    var l = 0.0;
    let n_keys = step.pos0 + t + 1u;
    for (var j = lane; j < n_keys; j += LANES) {
        let kb = j * kv_stride4 + kvh * hd4;
        var s = 0.0;
        for (var c = 0u; c < hd4; c += 2u) {
            s += dot(qr[c], k[kb + c]) + dot(qr[c + 1u], k[kb + c + 1u]);
        }
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * correction + e;
        for (var c = 0u; c < hd4; c += 2u) {
            acc[c] = acc[c] * correction + e * v[kb + c];
            acc[c + 1u] = acc[c + 1u] * correction + e * v[kb + c + 1u];
        }
        m = m_new;
    }
    part_m[lane] = m;
    part_l[lane] = l;
    for (var c = 0u; c < hd4; c++) {
        part_acc[lane * hd4 + c] = acc[c];
    }
    workgroupBarrier();
    // Merge: each partial rescaled to the overall maximum.
    var top = -3.0e38;
    for (var i = 0u; i < LANES; i++) {
        top = max(top, part_m[i]);
    }
    var weight: array<f32, LANES>;
    var total = 0.0;
    for (var i = 0u; i < LANES; i++) {
        weight[i] = exp(part_m[i] - top);
        total += part_l[i] * weight[i];
    }
    // Invocation `lane` writes the head's vec4s lane, lane + 8, ...
    for (var c = lane; c < hd4; c += LANES) {
        var o = vec4<f32>(0.0);
        for (var i = 0u; i < LANES; i++) {
            o += part_acc[i * hd4 + c] * weight[i];
        }
        o /= total;
        out[q_base + 4u * c] = o.x;
        out[q_base + 4u * c + 1u] = o.y;
        out[q_base + 4u * c + 2u] = o.z;
        out[q_base + 4u * c + 3u] = o.w;
    }
}
