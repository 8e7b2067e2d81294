// A layer's fused query, key and value projection [Wq; Wk; Wv]: output rows
// below k_row0 are queries (row t of q), rows k_row0 .. v_row0 keys and rows
// from v_row0 values, both written to KV cache row pos0 + t. y_stride is the
// total row count. One dispatch instead of three (dispatches have a fixed cost).
// rotated() comes from a RoPE header: linear_rope_none.wgsl, or
// linear_rope_fused.wgsl, which rotates queries and keys as they are stored.

@group(0) @binding(4) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<f32>;

fn store_y(t: u32, o: u32, value: f32) {
    let row = p.y_col0 + o;
    // Every invocation rotates (a subgroup operation), stored rows or not.
    let v = rotated(t, row, value);
    if (o >= p.n) { return; }
    let cache_row = step.pos0 + t;
    if (row < p.k_row0) {
        q_out[t * p.k_row0 + row] = v;
    } else if (row < p.v_row0) {
        k_cache[cache_row * (p.v_row0 - p.k_row0) + row - p.k_row0] = v;
    } else {
        v_cache[cache_row * (p.y_stride - p.v_row0) + row - p.v_row0] = v;
    }
}
