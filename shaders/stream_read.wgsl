// Reads every word of a buffer once and XORs them, one result per
// invocation: how fast an adapter streams memory, for the bench's roofline
// (kernels::stream_read). Each workgroup reads its chunk as STREAMS
// interleaved streams of PER_STREAM steps; step i of stream s is the vec4
// (s * PER_STREAM + i) * LANES + lane of the chunk, so one step's LANES loads
// are contiguous. CPU adapters read like the row-per-invocation matvec (8
// lanes, each walking 8 rows: 8 streams a workgroup), GPUs like a coalesced
// cooperative one (256 lanes, one stream).

override LANES: u32 = 8u;
override STREAMS: u32 = 8u;
override PER_STREAM: u32 = 64u;

@group(0) @binding(0) var<storage, read> data: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let group = wg.x + wg.y * nwg.x;
    let base = group * STREAMS * PER_STREAM * LANES;
    var acc = vec4<u32>(0u);
    for (var i = 0u; i < PER_STREAM; i++) {
        for (var s = 0u; s < STREAMS; s++) {
            acc ^= data[base + (s * PER_STREAM + i) * LANES + lane];
        }
    }
    out[group * LANES + lane] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
