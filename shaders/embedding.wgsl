// Embedding lookup: out[t, :] = table[tokens[t], :], weights packed as f16 pairs.
// The table may be split by rows across bindings; each dispatch covers rows
// [row_start, row_start + row_count) and ignores tokens outside them.

struct Params { dim: u32, row_start: u32, row_count: u32, interleaved: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wg.x;
    if (t >= step.n_tokens) { return; }
    let tok = tokens[t];
    if (tok < p.row_start || tok - p.row_start >= p.row_count) { return; }
    let half_dim = p.dim / 2u;
    let row = tok - p.row_start;
    for (var i = lid.x; i < half_dim; i += 64u) {
        // Row-major, or the lane-interleaved layout of matvec_rows.wgsl
        // (4 f16 pairs per k-slice of 8).
        var src = row * half_dim + i;
        if (p.interleaved != 0u) {
            let k8 = p.dim / 8u;
            let rb = row % 64u;
            let slice = (row / 64u) * 64u * k8 + ((rb / 8u) * k8 + i / 4u) * 8u + rb % 8u;
            src = slice * 4u + i % 4u;
        }
        let v = unpack2x16float(table[src]);
        out[t * p.dim + 2u * i] = v.x;
        out[t * p.dim + 2u * i + 1u] = v.y;
    }
}
