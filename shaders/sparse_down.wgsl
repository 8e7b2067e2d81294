// Sparse down projection for one token, first pass: partial sums of
// h[a] * W[:, index[a]] over a slice of the active neurons, reading the matrix
// stored transposed (one contiguous f16 row of `dim` per neuron) so skipped
// neurons cost no reads. The active count is counts[layer], on the GPU, so a
// threshold rule needs no readback. Invocation (c, s) covers 8 output dimensions
// and slice s; `sparse_down_reduce.wgsl` adds the slices into the residual
// (no float atomics in WGSL; slices keep every core busy).

struct Params { dim: u32, index_offset: u32, layer: u32, slices: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> partial: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    let chunks = p.dim / 8u;
    if (c >= chunks || s >= p.slices) { return; }
    let count = counts[p.layer];
    let per = (count + p.slices - 1u) / p.slices;
    let end = min(count, (s + 1u) * per);
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var a = s * per; a < end; a++) {
        let unit = index[p.index_offset + a];
        let q = w[unit * chunks + c];
        let v = h[a];
        lo += v * vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        hi += v * vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    }
    let o = 2u * (s * chunks + c);
    partial[o] = lo;
    partial[o + 1u] = hi;
}
