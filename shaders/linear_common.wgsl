// Shared by the four linear kernels (matvec, matmul, matvec_rows,
// matmul_rows), prepended to each by kernels::linear with one of the two
// output headers (linear_store.wgsl, linear_store_qkv.wgsl) and one of the
// two input headers (linear_input.wgsl, linear_input_norm.wgsl): the
// parameters and the step. Each kernel declares its own x (binding 2) and W
// (binding 3) views and writes results through store_y(token, row of this
// chunk, value).

struct Params {
    k: u32, n: u32, y_stride: u32, y_col0: u32,
    accumulate: u32, y_row_from_pos: u32, k_row0: u32, v_row0: u32,
    norm_eps: f32, rope_head_dim: u32, rope_dims: u32, _c: u32,
}
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step_params: Step;
// Each kernel's main first copies its parameters into private variables
// (load_params), which live in registers. On CPU adapters the parameters are
// read-only storage (gpu::pipeline), whose loads the compiler cannot move
// past the kernel's stores (store_y reads six for each stored value): without the
// copies, a 512-token prefill took 3% longer than with uniforms.
var<private> p: Params;
var<private> step: Step;
fn load_params() { p = params; step = step_params; }
