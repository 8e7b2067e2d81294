// Sparse MLP, second half, for one token: y += sum over active neurons a of
// h[a] * W_down[:, index[a]], reading the down projection stored transposed
// (one contiguous f16 row of `dim` per neuron) so skipped neurons cost no
// reads. One invocation per 8 output dimensions; adds into the residual y.

struct Params { dim: u32, index_offset: u32, count: u32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let chunks = p.dim / 8u;
    if (c >= chunks) { return; }
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var a = 0u; a < p.count; a++) {
        let q = w[index[p.index_offset + a] * chunks + c];
        let v = h[a];
        lo += v * vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        hi += v * vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    }
    y[2u * c] += lo;
    y[2u * c + 1u] += hi;
}
