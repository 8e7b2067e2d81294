//! A kernel that only reads (`shaders/stream_read.wgsl`): every word of a
//! buffer once, XORed into one word per invocation. The roofline
//! (`crate::roofline`) times it to learn how fast the adapter streams
//! memory, the bound of a decode step that reads every weight once.

use super::{spread, Call};
use crate::gpu::{Binding, GpuContext, Kernel};

/// How a workgroup walks its chunk (see the shader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub lanes: u32,
    pub streams: u32,
    pub per_stream: u32,
}

impl Shape {
    /// The access pattern of the adapter's matvec: CPU adapters' row-per-
    /// invocation kernel (8 lanes, 8 rows each) or GPUs' coalesced one.
    pub fn for_adapter(cpu_style: bool) -> Shape {
        if cpu_style {
            Shape { lanes: 8, streams: 8, per_stream: 64 }
        } else {
            Shape { lanes: 256, streams: 1, per_stream: 64 }
        }
    }

    /// One vec4 per invocation: a dispatch that costs only its launch.
    pub fn tiny() -> Shape {
        Shape { lanes: 8, streams: 1, per_stream: 1 }
    }

    /// Bytes one workgroup reads.
    pub fn chunk_bytes(&self) -> u64 {
        16 * (self.lanes * self.streams * self.per_stream) as u64
    }
}

/// Reads the first `groups` chunks of `data`; invocation i of group g writes
/// `out[g * lanes + i]` (out holds at least groups * lanes words).
pub fn call(ctx: &GpuContext, shape: Shape, data: &wgpu::Buffer, out: &wgpu::Buffer, groups: u32) -> Call {
    assert!(groups as u64 * shape.chunk_bytes() <= data.size(), "stream_read: {groups} chunks do not fit the buffer");
    assert!(groups as u64 * shape.lanes as u64 * 4 <= out.size(), "stream_read: the output is too small");
    let constants = [("LANES", shape.lanes as f64), ("STREAMS", shape.streams as f64), ("PER_STREAM", shape.per_stream as f64)];
    let kernel = Kernel::specialized(ctx, "stream_read", include_str!("../../../shaders/stream_read.wgsl"), &[Binding::ReadOnly, Binding::ReadWrite], &constants);
    Call {
        group: kernel.bind(ctx, &[data, out]),
        kernel,
        grid: Box::new(move |_| {
            let [x, y] = spread(groups);
            [x, y, 1]
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_u32, storage_buffer, zeroed_buffer};
    use crate::kernels::run_calls;
    use rand::{Rng, SeedableRng};

    /// Every word is read exactly once: the XOR of the outputs equals the XOR
    /// of the chunks read on random data (a skipped or doubled word flips
    /// bits), and words past the chunks are not read. Both adapters' shapes
    /// and the tiny one.
    #[test]
    fn reads_every_word_of_its_chunks_once() {
        let ctx = crate::testing::gpu();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for shape in [Shape::for_adapter(true), Shape::for_adapter(false), Shape::tiny()] {
            let groups = 3u32;
            let words_read = (groups as u64 * shape.chunk_bytes() / 4) as usize;
            // One more chunk after the ones read, which must not count.
            let data: Vec<u32> = (0..words_read + (shape.chunk_bytes() / 4) as usize).map(|_| rng.random()).collect();
            let (db, out) = (storage_buffer(&ctx, "data", &data), zeroed_buffer(&ctx, "out", (groups * shape.lanes * 4) as u64));
            run_calls(&ctx, &[&call(&ctx, shape, &db, &out, groups)], 1);
            let got = read_buffer_u32(&ctx, &out, 0, (groups * shape.lanes) as usize).unwrap();
            let want = data[..words_read].iter().fold(0, |a, w| a ^ w);
            assert_eq!(got.iter().fold(0, |a, w| a ^ w), want, "{shape:?}");
            // Each invocation's own words: lane 0 of group 1 in the first stream's steps.
            let chunk = (shape.chunk_bytes() / 16) as usize;
            let lane0: u32 = (0..(shape.streams * shape.per_stream) as usize)
                .map(|step| chunk + step * shape.lanes as usize)
                .flat_map(|v| data[4 * v..4 * v + 4].to_vec())
                .fold(0, |a, w| a ^ w);
            assert_eq!(got[shape.lanes as usize], lane0, "{shape:?}: group 1, lane 0");
        }
    }
}
