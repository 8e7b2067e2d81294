// Copies the weights of a fixed mask's active units into dense f16 matrices in
// the layout the linear kernels read (kernels::linear::Matrix), so a mask kept
// for many tokens decodes with the dense matvec over only its share of the
// weights.
// MODE (a pipeline constant):
//   GATE_UP: out [2 * width, dim]: the active neurons' gate rows, then their up
//            rows; src is [ffn, gate row | up row]
//   COLUMNS: out [dim, width]: the listed columns of a matrix (W_down's of
//            active neurons, W_o's of active heads' rows); src is its
//            transpose [units, dim]
//   ROWS:    out rows row0 .. row0 + width: the listed rows of src [units,
//            dim] (W_q's query rows of active heads, then every row of
//            [W_k; W_v] after them: one fused projection)
// Slots a >= counts[layer] (padding up to width, a multiple of 8) are zero, so
// padded neurons have h = silu(0) * 0 = 0 and add nothing.
// interleaved = 1: the lane-interleaved layout of CPU adapters; 0: row-major.
// One invocation per 8 output halves (one vec4<u32>).

struct Params { dim: u32, width: u32, index_offset: u32, layer: u32, interleaved: u32, row0: u32, _b: u32, _c: u32 }

override MODE: u32 = 0u;
const GATE_UP: u32 = 0u;
const COLUMNS: u32 = 1u;
const ROWS: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> counts: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<u32>>;

// Where 8 halves of (row, chunk) go; `chunks` = columns / 8.
fn out_slot(row: u32, chunk: u32, chunks: u32) -> u32 {
    if (p.interleaved != 0u) {
        let rb = row % 64u;
        return (row / 64u) * 64u * chunks + ((rb / 8u) * chunks + chunk) * 8u + rb % 8u;
    }
    return row * chunks + chunk;
}

// Half `d` of active slot a's column (0 past the count), as 16 bits.
fn down_half(a: u32, count: u32, d: u32) -> u32 {
    if (a >= count) { return 0u; }
    let e = index[p.index_offset + a] * p.dim + d;
    let pair = src[e / 2u];
    return select(pair & 0xffffu, pair >> 16u, (e & 1u) == 1u);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let count = counts[p.layer];
    if (MODE == GATE_UP) {
        let chunks = p.dim / 8u;
        if (id >= 2u * p.width * chunks) { return; }
        let row = id / chunks;
        let c = id % chunks;
        let a = row % p.width;
        var v = vec4<u32>(0u);
        if (a < count) {
            // Source row 2n (gate) or 2n + 1 (up), 4 words per chunk.
            let base = ((2u * index[p.index_offset + a] + row / p.width) * chunks + c) * 4u;
            v = vec4<u32>(src[base], src[base + 1u], src[base + 2u], src[base + 3u]);
        }
        out[out_slot(row, c, chunks)] = v;
    } else if (MODE == ROWS) {
        let chunks = p.dim / 8u;
        if (id >= p.width * chunks) { return; }
        let a = id / chunks;
        let c = id % chunks;
        var v = vec4<u32>(0u);
        if (a < count) {
            let base = (index[p.index_offset + a] * chunks + c) * 4u;
            v = vec4<u32>(src[base], src[base + 1u], src[base + 2u], src[base + 3u]);
        }
        out[out_slot(p.row0 + a, c, chunks)] = v;
    } else {
        let chunks = p.width / 8u;
        if (id >= p.dim * chunks) { return; }
        let d = id / chunks;
        let c = id % chunks;
        let a = 8u * c;
        let h = vec4<u32>(
            down_half(a, count, d) | (down_half(a + 1u, count, d) << 16u),
            down_half(a + 2u, count, d) | (down_half(a + 3u, count, d) << 16u),
            down_half(a + 4u, count, d) | (down_half(a + 5u, count, d) << 16u),
            down_half(a + 6u, count, d) | (down_half(a + 7u, count, d) << 16u),
        );
        out[out_slot(d, c, chunks)] = h;
    }
}
