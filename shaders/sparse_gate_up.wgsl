// Sparse MLP, first half, for one token: only the active neurons' gate and up
// rows are read. Weights are f16, one contiguous [gate row | up row] per
// neuron; index[layer_offset + a] is the a-th active neuron. Writes the
// compact h[a] = silu(gate . x) * (up . x), one invocation per active neuron.

struct Params { dim: u32, index_offset: u32, count: u32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;

fn dot8(q: vec4<u32>, c: u32) -> f32 {
    let a = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let b = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    return dot(a, x[2u * c]) + dot(b, x[2u * c + 1u]);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = gid.x + gid.y * nwg.x * 64u;
    if (a >= p.count) { return; }
    let neuron = index[p.index_offset + a];
    let chunks = p.dim / 8u;
    let row = neuron * 2u * chunks;
    var g = 0.0;
    var u = 0.0;
    for (var c = 0u; c < chunks; c++) {
        g += dot8(w[row + c], c);
        u += dot8(w[row + chunks + c], c);
    }
    h[a] = g / (1.0 + exp(-g)) * u;
}
