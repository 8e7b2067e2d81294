// Sparse MLP, second half, for one token, first pass: partial sums of
// h[a] * W_down[:, index[a]] over a slice of the active neurons, reading the
// down projection stored transposed (one contiguous f16 row of `dim` per
// neuron) so skipped neurons cost no reads. Invocation (c, s) covers 8 output
// dimensions and slice s; `sparse_down_reduce.wgsl` adds the slices into the
// residual (no float atomics in WGSL; slices keep every core busy).

struct Params { dim: u32, index_offset: u32, count: u32, slices: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> partial: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    let chunks = p.dim / 8u;
    if (c >= chunks || s >= p.slices) { return; }
    let per = (p.count + p.slices - 1u) / p.slices;
    let end = min(p.count, (s + 1u) * per);
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var a = s * per; a < end; a++) {
        let q = w[index[p.index_offset + a] * chunks + c];
        let v = h[a];
        lo += v * vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        hi += v * vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    }
    let o = 2u * (s * chunks + c);
    partial[o] = lo;
    partial[o + 1u] = hi;
}
