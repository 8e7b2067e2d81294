// Sparse row products for one token: only the listed units' weight rows are
// read (f16, each unit's rows contiguous). index[index_offset + a] is the a-th
// active unit and counts[layer] how many are active, so a mask chosen on the
// GPU (a threshold rule) needs no readback. Modes:
//   GATE_UP: w = [ffn, gate row | up row]; h[a] = silu(gate . x) * (up . x)
//   GATE:    every unit a < n_units; h[a] = silu(gate . x) (CATS thresholds this)
//   UP:      h[a] *= up . x for the active units (h[a] already holds silu(gate))
//   ROWS:    w = [rows, dim]; y[row] = w[row] . x for the active rows (query heads)

struct Params { dim: u32, index_offset: u32, layer: u32, mode: u32, n_units: u32, _a: u32, _b: u32, _c: u32 }

const GATE_UP: u32 = 0u;
const GATE: u32 = 1u;
const UP: u32 = 2u;
const ROWS: u32 = 3u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> h: array<f32>;

fn dot_row(row: u32, chunks: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < chunks; c++) {
        let q = w[row + c];
        let a = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        let b = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
        s += dot(a, x[2u * c]) + dot(b, x[2u * c + 1u]);
    }
    return s;
}

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let a = gid.x + gid.y * nwg.x * 64u;
    let count = select(counts[p.layer], p.n_units, p.mode == GATE);
    if (a >= count) { return; }
    let chunks = p.dim / 8u;
    switch p.mode {
        case GATE: {
            h[a] = silu(dot_row(a * 2u * chunks, chunks));
        }
        case UP: {
            let unit = index[p.index_offset + a];
            h[a] *= dot_row(unit * 2u * chunks + chunks, chunks);
        }
        case ROWS: {
            let row = index[p.index_offset + a];
            h[row] = dot_row(row * chunks, chunks);
        }
        default: {
            let unit = index[p.index_offset + a];
            h[a] = silu(dot_row(unit * 2u * chunks, chunks)) * dot_row(unit * 2u * chunks + chunks, chunks);
        }
    }
}
