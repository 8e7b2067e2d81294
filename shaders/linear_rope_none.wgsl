// The q/k/v projection's results as computed: RoPE runs as its own dispatch
// (rope.wgsl). See linear_rope_fused.wgsl.

fn rotated(t: u32, row: u32, value: f32) -> f32 { return value; }
