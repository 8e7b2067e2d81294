// Rotary position embedding, in place on rows of [rows, n_heads * head_dim].
// Row t has position pos0 + t (queries) or, with row_from_pos, the buffer is a
// KV cache and rows pos0 .. pos0 + n_tokens are rotated. cos/sin come from a
// table computed on the CPU in f64: [max_pos, rot_dim / 2] of (cos, sin).
// neox = 0 rotates interleaved pairs (2i, 2i+1) as GGUF Llama stores them;
// neox = 1 rotates (i, i + rot_dim/2) as Hugging Face checkpoints do.
// inverse = 1 rotates by -angle: the transpose, which carries gradients back.

struct Params { n_heads: u32, head_dim: u32, rot_dim: u32, neox: u32, row_from_pos: u32, inverse: u32, _b: u32, _c: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_rot = p.rot_dim / 2u;
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    if (i >= half_rot || h >= p.n_heads || t >= step.n_tokens) { return; }
    let pos = step.pos0 + t;
    var row = t;
    if (p.row_from_pos != 0u) { row = pos; }
    let base = (row * p.n_heads + h) * p.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + i;
        b = base + i + half_rot;
    }
    var cs = table[pos * half_rot + i];
    if (p.inverse != 0u) { cs.y = -cs.y; }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x0 * cs.y + x1 * cs.x;
}
