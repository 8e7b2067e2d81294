// The shape, softmax scale and step that every attention kernel reads,
// forward (attention_common.wgsl) and backward (attention_backward_*.wgsl),
// prepended to each by kernels::attention; kernels::attention::params_buffer
// fills p for all of them.

struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, scale: f32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
