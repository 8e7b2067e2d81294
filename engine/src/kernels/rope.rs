//! Rotary position embedding (`shaders/rope.wgsl`), in place, with a cos/sin
//! table computed here in f64 so large positions stay exact on every GPU.

use super::Call;
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_heads: u32,
    head_dim: u32,
    rot_dim: u32,
    neox: u32,
    row_from_pos: u32,
    inverse: u32,
    _pad: [u32; 2],
}

/// How rotated pairs are laid out in a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): GGUF Llama checkpoints (llama.cpp permutes Q/K on conversion).
    Interleaved,
    /// Pairs (i, i + rot/2): Hugging Face Llama, Qwen2, Phi-2.
    Neox,
}

/// [max_pos * rot_dim/2] of (cos, sin) of pos * theta^(-2i/rot_dim).
pub fn table(theta: f32, rot_dim: usize, max_pos: usize) -> Vec<[f32; 2]> {
    let half = rot_dim / 2;
    let mut out = Vec::with_capacity(max_pos * half);
    for pos in 0..max_pos {
        for i in 0..half {
            let freq = (theta as f64).powf(-(2.0 * i as f64) / rot_dim as f64);
            let angle = pos as f64 * freq;
            out.push([angle.cos() as f32, angle.sin() as f32]);
        }
    }
    out
}

pub struct RopeShape {
    pub n_heads: usize,
    pub head_dim: usize,
    pub rot_dim: usize,
    pub style: RopeStyle,
}

pub fn call(ctx: &GpuContext, shape: &RopeShape, row_from_pos: bool, step: &wgpu::Buffer, table: &wgpu::Buffer, x: &wgpu::Buffer) -> Call {
    call_with(ctx, shape, row_from_pos, false, step, table, x)
}

/// The transposed rotation (by -angle), in place: the RoPE backward.
pub fn call_inverse(ctx: &GpuContext, shape: &RopeShape, step: &wgpu::Buffer, table: &wgpu::Buffer, x: &wgpu::Buffer) -> Call {
    call_with(ctx, shape, false, true, step, table, x)
}

fn call_with(ctx: &GpuContext, shape: &RopeShape, row_from_pos: bool, inverse: bool, step: &wgpu::Buffer, table: &wgpu::Buffer, x: &wgpu::Buffer) -> Call {
    let kernel = Kernel::get(
        ctx,
        "rope",
        include_str!("../../../shaders/rope.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadWrite],
    );
    let params = uniform_buffer(
        ctx,
        "rope params",
        &Params {
            n_heads: shape.n_heads as u32,
            head_dim: shape.head_dim as u32,
            rot_dim: shape.rot_dim as u32,
            neox: (shape.style == RopeStyle::Neox) as u32,
            row_from_pos: row_from_pos as u32,
            inverse: inverse as u32,
            _pad: [0; 2],
        },
    );
    let (half, heads) = ((shape.rot_dim / 2) as u32, shape.n_heads as u32);
    Call {
        group: kernel.bind(ctx, &[&params, step, table, x]),
        kernel,
        grid: Box::new(move |n| [half.div_ceil(64), heads, n]),
    }
}

/// Rotates `x` ([n_tokens, n_heads * head_dim], token t at position pos0 + t).
pub fn reference(x: &mut [f32], shape: &RopeShape, pos0: usize, table: &[[f32; 2]]) {
    let (hd, half) = (shape.head_dim, shape.rot_dim / 2);
    for (t, row) in x.chunks_mut(shape.n_heads * hd).enumerate() {
        let pos = pos0 + t;
        for head in row.chunks_mut(hd) {
            for i in 0..half {
                let (a, b) = match shape.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let [c, s] = table[pos * half + i];
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer};
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn rope_matches_reference_both_styles_and_cache_rows() {
        let ctx = crate::testing::gpu();
        let (t, pos0, heads, hd) = (6usize, 1000usize, 3usize, 64usize);
        let tab = table(10000.0, hd, 2048);
        let tb = storage_buffer(&ctx, "table", &tab);
        let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let shape = RopeShape { n_heads: heads, head_dim: hd, rot_dim: hd, style };
            // Query layout: rows 0..t.
            let x = random(t * heads * hd, 8);
            let xb = storage_buffer(&ctx, "x", &x);
            run_calls(&ctx, &[&call(&ctx, &shape, false, &step, &tb, &xb)], t as u32);
            let mut want = x.clone();
            reference(&mut want, &shape, pos0, &tab);
            let got = read_buffer_f32(&ctx, &xb, 0, x.len()).unwrap();
            assert!(max_err(&got, &want) < 1e-6, "{style:?}");
            // Cache layout: rows pos0..pos0+t rotated, others untouched.
            let cache = random((pos0 + t) * heads * hd, 9);
            let cb = storage_buffer(&ctx, "cache", &cache);
            run_calls(&ctx, &[&call(&ctx, &shape, true, &step, &tb, &cb)], t as u32);
            let mut want = cache.clone();
            reference(&mut want[pos0 * heads * hd..], &shape, pos0, &tab);
            let got = read_buffer_f32(&ctx, &cb, 0, cache.len()).unwrap();
            assert!(max_err(&got, &want) < 1e-6, "{style:?} cache");
            // The inverse undoes the rotation (it is its transpose: the backward).
            let xb = storage_buffer(&ctx, "x", &x);
            run_calls(&ctx, &[&call(&ctx, &shape, false, &step, &tb, &xb), &call_inverse(&ctx, &shape, &step, &tb, &xb)], t as u32);
            let got = read_buffer_f32(&ctx, &xb, 0, x.len()).unwrap();
            assert!(max_err(&got, &x) < 1e-6, "{style:?} inverse");
        }
    }
}
