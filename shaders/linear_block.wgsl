// How the CPU-style matvec kernels (matvec_rows*.wgsl) load their inputs:
// every invocation loads all of them. For adapters without 8-wide subgroups;
// linear_block_subgroup.wgsl shares the loads. block_inputs(t, i, lane) is
// token t's inputs 32i .. 32i + 31 as input() makes them (8 vec4s);
// single_input(t, i, lane) its vec4 number i; input_sum_sq() the sum of the
// raw inputs' squares over all those loaded, for output_scale.

var<private> lane_sum_sq: f32;

fn single_input(t: u32, i: u32, lane: u32) -> vec4<f32> {
    let raw = load_x(t, i);
    lane_sum_sq += dot(raw, raw);
    return input(i, raw);
}

fn block_inputs(t: u32, i: u32, lane: u32) -> array<vec4<f32>, 8> {
    var xs: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        xs[j] = single_input(t, 8u * i + j, lane);
    }
    return xs;
}

fn input_sum_sq() -> f32 { return lane_sum_sq; }
