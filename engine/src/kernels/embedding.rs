//! Embedding lookup (`shaders/embedding.wgsl`): one workgroup per token, one
//! dispatch per row chunk of the (possibly split) f16 table.

use super::Call;
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};
use crate::kernels::linear::Matrix;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    dim: u32,
    row_start: u32,
    row_count: u32,
    interleaved: u32,
}

pub fn calls(ctx: &GpuContext, table: &Matrix, step: &wgpu::Buffer, tokens: &wgpu::Buffer, out: &wgpu::Buffer) -> Vec<Call> {
    let kernel = Kernel::get(
        ctx,
        "embedding",
        include_str!("../../../shaders/embedding.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite],
    );
    table
        .chunks
        .iter()
        .map(|chunk| {
            let params = uniform_buffer(
                ctx,
                "embedding params",
                &Params {
                    dim: table.cols as u32,
                    row_start: chunk.rows.start as u32,
                    row_count: chunk.rows.len() as u32,
                    interleaved: table.interleaved as u32,
                },
            );
            Call {
                group: kernel.bind(ctx, &[&params, step, tokens, &chunk.buffer, out]),
                kernel: kernel.clone(),
                grid: Box::new(|n| [n, 1, 1]),
            }
        })
        .collect()
}

pub fn reference(table: &[f32], dim: usize, tokens: &[u32]) -> Vec<f32> {
    tokens
        .iter()
        .flat_map(|&t| table[t as usize * dim..(t as usize + 1) * dim].iter().copied())
        .collect()
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn embedding_matches_reference_across_split_table() {
        let ctx = crate::testing::gpu();
        let (rows, dim) = (300, 24);
        let table = crate::testing::round_f16(&random(rows * dim, 1));
        for interleaved in [false, true] {
        // Force a split into several chunks to exercise the chunked path.
        let m = Matrix::upload_with_limit(&ctx, "table", &table, rows, dim, interleaved, 70 * dim as u64 * 2);
        assert!(m.chunks.len() >= 4, "{}", m.chunks.len());
        let tokens: Vec<u32> = vec![0, 299, 5, 142, 42, 63, 64, 200, 7];
        let step = uniform_buffer(&ctx, "step", &Step::new(tokens.len(), 0));
        let tok = storage_buffer(&ctx, "tokens", &tokens);
        let out = zeroed_buffer(&ctx, "out", (tokens.len() * dim * 4) as u64);
        let calls = calls(&ctx, &m, &step, &tok, &out);
        run_calls(&ctx, &calls.iter().collect::<Vec<_>>(), tokens.len() as u32);
        let got = read_buffer_f32(&ctx, &out, 0, tokens.len() * dim).unwrap();
        // A lookup is a copy: it must be exact.
        assert_eq!(max_err(&got, &reference(&table, dim, &tokens)), 0.0, "interleaved {interleaved}");
        }
    }
}
