// Copies rows of a 4-bit matrix (kernels::packed: the layout matvec_rows_q4.wgsl
// reads) into the 4-bit copy of a compacted matrix (kernels::compact), so a
// fixed mask's gate|up rows and query rows decode with the 4-bit matvec too.
// In each of `halves` groups h (gate rows then up rows: 2; query rows, or key
// and value rows: 1), output row row0 + h * width + a is source row
// src_row0 + h * src_half + index[index_offset + a], or zeros for a >=
// counts[layer] (padding). One invocation per output row and block of 32
// weights: 4 words of quants and the word of scales.

struct Params {
    k32: u32, width: u32, index_offset: u32, layer: u32,
    row0: u32, src_row0: u32, src_half: u32, halves: u32,
    src_rows: u32, out_rows: u32, _a: u32, _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> counts: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// The unit (4 quant words, 1 scale word) of a row's first block.
fn first_unit(row: u32) -> u32 {
    let rb = row % 64u;
    return (row / 64u) * 64u * p.k32 + (rb / 8u) * p.k32 * 8u + rb % 8u;
}

// Units in a matrix of `rows` rows: where its scales start, in words / 4.
fn units(rows: u32) -> u32 {
    return ((rows + 63u) / 64u) * 64u * p.k32;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    if (id >= p.halves * p.width * p.k32) { return; }
    let i = id % p.k32;
    let slot = id / p.k32;
    let h = slot / p.width;
    let a = slot % p.width;
    let dst = first_unit(p.row0 + h * p.width + a) + 8u * i;
    var q = vec4<u32>(0u);
    var s = 0u;
    if (a < counts[p.layer]) {
        let su = first_unit(p.src_row0 + h * p.src_half + index[p.index_offset + a]) + 8u * i;
        q = vec4<u32>(src[4u * su], src[4u * su + 1u], src[4u * su + 2u], src[4u * su + 3u]);
        s = src[4u * units(p.src_rows) + su];
    }
    out[4u * dst] = q.x;
    out[4u * dst + 1u] = q.y;
    out[4u * dst + 2u] = q.z;
    out[4u * dst + 3u] = q.w;
    out[4u * units(p.out_rows) + dst] = s;
}
