// Shared by the four linear kernels (matvec, matmul, matvec_rows,
// matmul_rows), prepended to each by kernels::linear: the parameters, the
// step, the output binding, and how a result is stored. Each kernel declares
// its own x (binding 2) and W (binding 3) views.
// When y_row_from_pos is set, token t writes row pos0 + t (KV cache writes).

struct Params {
    k: u32, n: u32, y_stride: u32, y_col0: u32,
    accumulate: u32, y_row_from_pos: u32, _a: u32, _b: u32,
}
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Writes (or, with accumulate, adds) the result for token t, output row o of this chunk.
fn store_y(t: u32, o: u32, value: f32) {
    var out_row = t;
    if (p.y_row_from_pos != 0u) { out_row = step.pos0 + t; }
    let idx = out_row * p.y_stride + p.y_col0 + o;
    var v = value;
    if (p.accumulate != 0u) { v += y[idx]; }
    y[idx] = v;
}
