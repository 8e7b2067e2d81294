// One output whose rows are scattered: row o of token t goes to
// y[t * y_stride + slot[o]]. A compacted gate|up writes its neurons to the
// slots of the grouped 4-bit W_down that reads them (matvec_rows_q4g.wgsl);
// slots no row is sent to keep the zeros they were created with. Rows o >= n
// (padding of the CPU kernels' last block of rows) are not stored.

@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> slot: array<u32>;

fn store_y(t: u32, o: u32, value: f32) {
    if (o >= p.n) { return; }
    y[t * p.y_stride + slot[o]] = value;
}
