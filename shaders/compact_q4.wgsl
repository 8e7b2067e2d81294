// Copies 4-bit weights (kernels::packed: the layout matvec_rows_q4.wgsl reads)
// into the 4-bit copy of a compacted matrix (kernels::compact), so a fixed
// mask's gate|up rows, query rows and W_o columns decode with the 4-bit
// matvec too. One invocation per output row and block of 32 weights: 4 words
// of quants and the word of scales (stored in their own order, scale_of).
// mode = 0, rows: in each of `halves` groups h (gate rows then up rows: 2;
//   query rows, or key and value rows: 1), output row row0 + h * width + a is
//   source row src_row0 + h * src_half + index[index_offset + a], or zeros for
//   a >= counts[layer] or a listed 0xFFFFFFFF (padding: the paired gate|up of
//   kernels::fused_mlp lists its padding slots' rows).
// mode = 1, blocks of columns: output block i of every row is the source
//   block holding column index[index_offset + 32 i] (the listed columns come
//   in whole, aligned blocks: W_o's columns of heads whose width is a
//   multiple of 32), or zeros past the count.
// mode = 2, groups of columns (the grouped layout of matvec_rows_q4g.wgsl,
//   out_k32 = slots / 32): slot s of every row is source column
//   index[index_offset + s], or padding (0xFFFFFFFF: q = 0). The columns of a
//   group of 8 slots all lie in one source block, whose d and m the group
//   takes; a group of padding alone is zeros. One invocation per row and group.

struct Params {
    src_k32: u32, out_k32: u32, index_offset: u32, layer: u32,
    row0: u32, src_row0: u32, src_half: u32, halves: u32,
    src_rows: u32, out_rows: u32, width: u32, mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> counts: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// The unit (4 quant words, 1 scale word) of a row's block i, in a matrix of
// k32 blocks per row: [block of 64 rows][k / 32][r][lane]
// (kernels::packed::unit_index).
fn unit_of(row: u32, i: u32, k32: u32) -> u32 {
    let rb = row % 64u;
    return (row / 64u) * 64u * k32 + (i * 8u + rb / 8u) * 8u + rb % 8u;
}

// Where a unit's scale word lies among the scales (kernels::packed::scale_index):
// [block][k / 32][lane][r].
fn scale_of(unit: u32, k32: u32) -> u32 {
    let block = unit / (64u * k32);
    let within = unit % (64u * k32);
    return block * 64u * k32 + ((within / 64u) * 8u + within % 8u) * 8u + within / 8u % 8u;
}

// Units in a matrix of `rows` rows: where its scales start, in words / 4.
fn units(rows: u32, k32: u32) -> u32 {
    return ((rows + 63u) / 64u) * 64u * k32;
}

const PADDING: u32 = 0xFFFFFFFFu;

// Mode 2: one row's group of 8 slots, its quant and scale words.
fn copy_group(id: u32) {
    let groups = 4u * p.out_k32;
    if (id >= p.out_rows * groups) { return; }
    let row = id / groups;
    let g = id % groups;
    let first = index[p.index_offset + 8u * g];
    var q = 0u;
    var s = 0u;
    if (first != PADDING) {
        let su = unit_of(row, first / 32u, p.src_k32);
        for (var j = 0u; j < 8u; j++) {
            let col = index[p.index_offset + 8u * g + j];
            if (col != PADDING) {
                let e = col % 32u;
                q |= ((src[4u * su + e / 8u] >> (4u * (e % 8u))) & 0xFu) << (4u * j);
            }
        }
        s = src[4u * units(p.src_rows, p.src_k32) + scale_of(su, p.src_k32)];
    }
    // A unit of the grouped layout is 8 words: 4 quant words, 4 scale words.
    let unit = unit_of(row, g / 4u, p.out_k32);
    out[8u * unit + g % 4u] = q;
    out[8u * unit + 4u + g % 4u] = s;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    if (p.mode == 2u) {
        copy_group(id);
        return;
    }
    let count = counts[p.layer];
    var dst = 0u;
    var su = 0u;
    var copy = false;
    if (p.mode == 0u) {
        if (id >= p.halves * p.width * p.out_k32) { return; }
        let i = id % p.out_k32;
        let slot = id / p.out_k32;
        let h = slot / p.width;
        let a = slot % p.width;
        dst = unit_of(p.row0 + h * p.width + a, i, p.out_k32);
        copy = a < count;
        if (copy) {
            let source = index[p.index_offset + a];
            copy = source != PADDING;
            su = unit_of(p.src_row0 + h * p.src_half + source, i, p.src_k32);
        }
    } else {
        if (id >= p.out_rows * p.out_k32) { return; }
        let i = id % p.out_k32;
        let row = id / p.out_k32;
        dst = unit_of(row, i, p.out_k32);
        copy = 32u * i < count;
        if (copy) { su = unit_of(row, index[p.index_offset + 32u * i] / 32u, p.src_k32); }
    }
    var q = vec4<u32>(0u);
    var s = 0u;
    if (copy) {
        q = vec4<u32>(src[4u * su], src[4u * su + 1u], src[4u * su + 2u], src[4u * su + 3u]);
        s = src[4u * units(p.src_rows, p.src_k32) + scale_of(su, p.src_k32)];
    }
    out[4u * dst] = q.x;
    out[4u * dst + 1u] = q.y;
    out[4u * dst + 2u] = q.z;
    out[4u * dst + 3u] = q.w;
    out[4u * units(p.out_rows, p.out_k32) + scale_of(dst, p.out_k32)] = s;
}
