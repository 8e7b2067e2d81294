// Sparse row products for one token: only the listed units' weight rows are
// read (f16, each unit's rows contiguous). index[index_offset + a] is the a-th
// active unit and counts[layer] how many are active, so a mask chosen on the
// GPU (a threshold rule) needs no readback. Modes (a pipeline constant, so
// each pipeline holds only its own loop):
//   GATE_UP: w = [ffn, gate row | up row]; h[a] = silu(gate . x) * (up . x)
//   GATE:    every unit a < n_units; h[a] = silu(gate . x) (CATS thresholds this)
//   UP:      h[a] *= up . x for the active units (h[a] already holds silu(gate))
// One invocation per unit. (Eight invocations sharing a row, for contiguous
// loads across SIMD lanes, measured slower on lavapipe: the reduction costs more.)

struct Params { dim: u32, index_offset: u32, layer: u32, n_units: u32 }

override MODE: u32 = 0u;

const GATE_UP: u32 = 0u;
const GATE: u32 = 1u;
const UP: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> h: array<f32>;

fn dot8(q: vec4<u32>, c: u32) -> f32 {
    let a = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let b = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    return dot(a, x[2u * c]) + dot(b, x[2u * c + 1u]);
}

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = gid.x + gid.y * nwg.x * 64u;
    let count = select(counts[p.layer], p.n_units, MODE == GATE);
    if (a >= count) { return; }
    let chunks = p.dim / 8u;
    var unit = a;
    if (MODE != GATE) { unit = index[p.index_offset + a]; }
    // The first row read, and for GATE_UP the second (up) row after it.
    var row = unit * 2u * chunks;
    if (MODE == UP) { row += chunks; }
    var s0 = 0.0;
    var s1 = 0.0;
    for (var c = 0u; c < chunks; c++) {
        s0 += dot8(w[row + c], c);
        if (MODE == GATE_UP) { s1 += dot8(w[row + chunks + c], c); }
    }
    switch MODE {
        case GATE: { h[a] = silu(s0); }
        case UP: { h[a] *= s0; }
        default: { h[a] = silu(s0) * s1; }
    }
}
