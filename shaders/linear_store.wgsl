// One output y [rows, y_stride]. When y_row_from_pos is set, token t writes
// row pos0 + t (KV cache writes); with accumulate, results add to y. Rows
// o >= n (padding of the CPU kernels' last block of rows) are not stored.

@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn store_y(t: u32, o: u32, value: f32) {
    if (o >= p.n) { return; }
    var out_row = t;
    if (p.y_row_from_pos != 0u) { out_row = step.pos0 + t; }
    let idx = out_row * p.y_stride + p.y_col0 + o;
    var v = value;
    if (p.accumulate != 0u) { v += y[idx]; }
    y[idx] = v;
}
