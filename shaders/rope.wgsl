// Rotary position embedding, in place, on one layer's queries and keys in a
// single dispatch: invocations with head h < q_heads rotate `q` ([rows,
// q_heads * head_dim], row t at position pos0 + t), the next k_heads rotate
// `k`, whose rows are tokens too or, with k_row_from_pos, a KV cache whose
// rows pos0 .. pos0 + n_tokens are rotated. cos/sin come from a table computed
// on the CPU in f64: [max_pos, rot_dim / 2] of (cos, sin).
// neox = 0 rotates interleaved pairs (2i, 2i+1) as GGUF Llama stores them;
// neox = 1 rotates (i, i + rot_dim/2) as Hugging Face checkpoints do.
// inverse = 1 rotates by -angle: the transpose, which carries gradients back.

struct Params { q_heads: u32, k_heads: u32, head_dim: u32, rot_dim: u32, neox: u32, k_row_from_pos: u32, inverse: u32, _c: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;

// 32 pairs a workgroup: a head of 64 rotated dims is one workgroup, not half of one.
@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_rot = p.rot_dim / 2u;
    let i = gid.x;
    let t = gid.z;
    let is_q = gid.y < p.q_heads;
    let h = select(gid.y - p.q_heads, gid.y, is_q);
    if (i >= half_rot || gid.y >= p.q_heads + p.k_heads || t >= step.n_tokens) { return; }
    let pos = step.pos0 + t;
    let row = select(t, pos, !is_q && p.k_row_from_pos != 0u);
    let base = (row * select(p.k_heads, p.q_heads, is_q) + h) * p.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + i;
        b = base + i + half_rot;
    }
    var cs = table[pos * half_rot + i];
    if (p.inverse != 0u) { cs.y = -cs.y; }
    if (is_q) {
        let x0 = q[a];
        let x1 = q[b];
        q[a] = x0 * cs.x - x1 * cs.y;
        q[b] = x0 * cs.y + x1 * cs.x;
    } else {
        let x0 = k[a];
        let x1 = k[b];
        k[a] = x0 * cs.x - x1 * cs.y;
        k[b] = x0 * cs.y + x1 * cs.x;
    }
}
