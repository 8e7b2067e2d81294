//! Rotary position embedding (`shaders/rope.wgsl`), in place, with a cos/sin
//! table computed here in f64 so large positions stay exact on every GPU.

use super::Call;
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    q_heads: u32,
    k_heads: u32,
    head_dim: u32,
    rot_dim: u32,
    neox: u32,
    k_row_from_pos: u32,
    inverse: u32,
    _pad: u32,
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
    scaled_table(theta, rot_dim, max_pos, None)
}

/// Like [`table`], with frequency i divided by `divisors[i]` where given
/// (RoPE scaling: linear, Llama 3's, GGUF's `rope_freqs`).
pub fn scaled_table(theta: f32, rot_dim: usize, max_pos: usize, divisors: Option<&[f32]>) -> Vec<[f32; 2]> {
    let half = rot_dim / 2;
    let mut out = Vec::with_capacity(max_pos * half);
    for pos in 0..max_pos {
        for i in 0..half {
            let divisor = divisors.map_or(1.0, |d| d[i] as f64);
            let freq = (theta as f64).powf(-(2.0 * i as f64) / rot_dim as f64) / divisor;
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

/// The keys rotated in the same dispatch as the queries (a dispatch has a
/// fixed cost, as large as a small kernel's whole work on lavapipe).
pub struct Keys<'a> {
    /// [tokens or cache rows, n_heads * head_dim]
    pub buffer: &'a wgpu::Buffer,
    pub n_heads: usize,
    /// The buffer is a KV cache: rotate its rows pos0 .. pos0 + n_tokens.
    pub rows_from_pos: bool,
}

/// RoPE in place on queries `q` (`shape`: their heads, rows = tokens) and on `keys`.
pub fn call(ctx: &GpuContext, shape: &RopeShape, q: &wgpu::Buffer, keys: &Keys, step: &wgpu::Buffer, table: &wgpu::Buffer) -> Call {
    call_with(ctx, shape, q, keys, false, step, table)
}

/// The transposed rotation (by -angle), in place: the RoPE backward.
pub fn call_inverse(ctx: &GpuContext, shape: &RopeShape, q: &wgpu::Buffer, keys: &Keys, step: &wgpu::Buffer, table: &wgpu::Buffer) -> Call {
    call_with(ctx, shape, q, keys, true, step, table)
}

fn call_with(ctx: &GpuContext, shape: &RopeShape, q: &wgpu::Buffer, keys: &Keys, inverse: bool, step: &wgpu::Buffer, table: &wgpu::Buffer) -> Call {
    let kernel = Kernel::get(
        ctx,
        "rope",
        include_str!("../../../shaders/rope.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadWrite, Binding::ReadWrite],
    );
    let params = uniform_buffer(
        ctx,
        "rope params",
        &Params {
            q_heads: shape.n_heads as u32,
            k_heads: keys.n_heads as u32,
            head_dim: shape.head_dim as u32,
            rot_dim: shape.rot_dim as u32,
            neox: (shape.style == RopeStyle::Neox) as u32,
            k_row_from_pos: keys.rows_from_pos as u32,
            inverse: inverse as u32,
            _pad: 0,
        },
    );
    let (half, heads) = ((shape.rot_dim / 2) as u32, (shape.n_heads + keys.n_heads) as u32);
    Call {
        group: kernel.bind(ctx, &[&params, step, table, q, keys.buffer]),
        kernel,
        grid: Box::new(move |n| [half.div_ceil(32), heads, n]),
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

    /// Dividing every frequency by 2 is position p of the plain table at 2p
    /// (linear scaling); a divisor of 1 changes nothing.
    #[test]
    fn scaled_table_divides_the_frequencies() {
        let (plain, halved) = (table(10000.0, 16, 64), scaled_table(10000.0, 16, 64, Some(&[2.0; 8])));
        for p in 0..32 {
            for i in 0..8 {
                let (a, b) = (halved[2 * p * 8 + i], plain[p * 8 + i]);
                assert!((a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6, "position {p}, frequency {i}");
            }
        }
        assert_eq!(scaled_table(500000.0, 16, 64, Some(&[1.0; 8])), table(500000.0, 16, 64));
    }

    #[test]
    fn rope_matches_reference_both_styles_and_cache_rows() {
        let ctx = crate::testing::gpu();
        let (t, pos0, heads, kv_heads, hd) = (6usize, 1000usize, 3usize, 2usize, 64usize);
        let tab = table(10000.0, hd, 2048);
        let tb = storage_buffer(&ctx, "table", &tab);
        let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let shape = RopeShape { n_heads: heads, head_dim: hd, rot_dim: hd, style };
            let key_shape = RopeShape { n_heads: kv_heads, ..shape };
            // Queries: rows 0..t. Keys in a cache: rows pos0..pos0+t rotated, others untouched.
            let x = random(t * heads * hd, 8);
            let cache = random((pos0 + t) * kv_heads * hd, 9);
            let (xb, cb) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "cache", &cache));
            let keys = Keys { buffer: &cb, n_heads: kv_heads, rows_from_pos: true };
            run_calls(&ctx, &[&call(&ctx, &shape, &xb, &keys, &step, &tb)], t as u32);
            let mut want = x.clone();
            reference(&mut want, &shape, pos0, &tab);
            let got = read_buffer_f32(&ctx, &xb, 0, x.len()).unwrap();
            assert!(max_err(&got, &want) < 1e-6, "{style:?} queries");
            let mut want = cache.clone();
            reference(&mut want[pos0 * kv_heads * hd..], &key_shape, pos0, &tab);
            let got = read_buffer_f32(&ctx, &cb, 0, cache.len()).unwrap();
            assert!(max_err(&got, &want) < 1e-6, "{style:?} cache");
            // Keys as token rows; the inverse undoes the rotation (it is its transpose: the backward).
            let k = random(t * kv_heads * hd, 10);
            let (xb, kb) = (storage_buffer(&ctx, "x", &x), storage_buffer(&ctx, "k", &k));
            let keys = Keys { buffer: &kb, n_heads: kv_heads, rows_from_pos: false };
            run_calls(&ctx, &[&call(&ctx, &shape, &xb, &keys, &step, &tb)], t as u32);
            let mut want = k.clone();
            reference(&mut want, &key_shape, pos0, &tab);
            assert!(max_err(&read_buffer_f32(&ctx, &kb, 0, k.len()).unwrap(), &want) < 1e-6, "{style:?} keys");
            run_calls(&ctx, &[&call_inverse(&ctx, &shape, &xb, &keys, &step, &tb)], t as u32);
            assert!(max_err(&read_buffer_f32(&ctx, &xb, 0, x.len()).unwrap(), &x) < 1e-6, "{style:?} inverse q");
            assert!(max_err(&read_buffer_f32(&ctx, &kb, 0, k.len()).unwrap(), &k) < 1e-6, "{style:?} inverse k");
        }
    }
}
