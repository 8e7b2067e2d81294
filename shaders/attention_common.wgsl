// Shared by the three forward attention kernels (attention.wgsl,
// attention_rows.wgsl, attention_keys.wgsl), prepended to each by
// kernels::attention after attention_params.wgsl (the shape and softmax
// scale, the step), which binds the same buffers for all of them: queries
// [n_tokens, n_heads * head_dim], the KV caches [max_ctx, n_kv_heads *
// head_dim], the head outputs (laid out like the queries), and each query
// head's KV head.

@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// The KV head each query head reads: h / (n_heads / n_kv_heads) for all
// heads, or for a compacted list of active heads, their own KV heads.
@group(0) @binding(6) var<storage, read> kv_head: array<u32>;
