// Sparse MLP, second half, second pass: y += the sum of the slices' partial
// sums, one invocation per 4 output dimensions.

struct Params { dim: u32, index_offset: u32, layer: u32, slices: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let n4 = p.dim / 4u;
    if (i >= n4) { return; }
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < p.slices; s++) {
        acc += partial[s * n4 + i];
    }
    y[i] += acc;
}
