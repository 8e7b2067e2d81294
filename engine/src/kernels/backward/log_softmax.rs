//! Log-softmax backward (`shaders/log_softmax_backward.wgsl`): the gradient of
//! F = sum of chosen rows' log p(target) with respect to the logits.

use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};
use crate::kernels::Call;

/// Target value for a row that contributes nothing to F.
pub const NONE: u32 = u32::MAX;
/// Target value for "the row's own argmax" (the greedy next token).
pub const GREEDY: u32 = u32::MAX - 1;

/// `logits` [rows, vocab] and `targets` [rows] in; `dlogits` [rows, out_stride]
/// (zero-padded past vocab) and `info` [rows, 2] (log p of target as f32 bits,
/// target id) out.
#[allow(clippy::too_many_arguments)]
pub fn call(ctx: &GpuContext, vocab: usize, out_stride: usize, step: &wgpu::Buffer, logits: &wgpu::Buffer, targets: &wgpu::Buffer, dlogits: &wgpu::Buffer, info: &wgpu::Buffer) -> Call {
    assert!(out_stride >= vocab);
    let kernel = Kernel::get(
        ctx,
        "log_softmax_backward",
        include_str!("../../../../shaders/log_softmax_backward.wgsl"),
        &[Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite, Binding::ReadWrite],
    );
    let params = uniform_buffer(ctx, "log_softmax_backward params", &[vocab as u32, out_stride as u32, 0, 0]);
    Call {
        group: kernel.bind(ctx, &[&params, step, logits, targets, dlogits, info]),
        kernel,
        grid: Box::new(|n| [n, 1, 1]),
    }
}

/// Per row: (dlogits, log p(target), target) with GREEDY resolved to the argmax.
pub fn reference(logits: &[f32], vocab: usize, targets: &[u32]) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut grad = vec![0.0f32; logits.len()];
    let (mut lps, mut ids) = (Vec::new(), Vec::new());
    for (row, &target) in logits.chunks(vocab).zip(targets) {
        let r = lps.len();
        let mx = row.iter().cloned().fold(f32::MIN, f32::max);
        let lse = mx + row.iter().map(|l| (l - mx).exp()).sum::<f32>().ln();
        let target = if target == GREEDY { row.iter().position(|&l| l == mx).unwrap() as u32 } else { target };
        if target == NONE {
            lps.push(0.0);
        } else {
            for (v, l) in row.iter().enumerate() {
                grad[r * vocab + v] = (v as u32 == target) as u32 as f32 - (l - lse).exp();
            }
            lps.push(row[target as usize] - lse);
        }
        ids.push(target);
    }
    (grad, lps, ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, read_buffer_u32, storage_buffer, zeroed_buffer};
    use crate::kernels::backward::finite_diff;
    use crate::kernels::{run_calls, test_util::*, Step};

    #[test]
    fn log_softmax_backward_matches_reference_and_finite_differences() {
        let ctx = crate::testing::gpu();
        let (rows, vocab, stride) = (4usize, 1003usize, 1008usize);
        let logits: Vec<f32> = random(rows * vocab, 31).iter().map(|v| v * 6.0).collect();
        let targets = [17u32, NONE, GREEDY, 1002];
        let step = uniform_buffer(&ctx, "step", &Step::new(rows, 0));
        let (lb, tb) = (storage_buffer(&ctx, "logits", &logits), storage_buffer(&ctx, "targets", &targets));
        let out = zeroed_buffer(&ctx, "dlogits", (rows * stride * 4) as u64);
        let info = zeroed_buffer(&ctx, "info", (rows * 8) as u64);
        run_calls(&ctx, &[&call(&ctx, vocab, stride, &step, &lb, &tb, &out, &info)], rows as u32);
        let got = read_buffer_f32(&ctx, &out, 0, rows * stride).unwrap();
        let got_info = read_buffer_u32(&ctx, &info, 0, rows * 2).unwrap();
        let (want, lps, ids) = reference(&logits, vocab, &targets);
        for r in 0..rows {
            let row = &got[r * stride..(r + 1) * stride];
            // One exp per element after the same max/log-sum-exp: 1e-6.
            assert!(max_err(&row[..vocab], &want[r * vocab..(r + 1) * vocab]) < 1e-6, "row {r}");
            assert!(row[vocab..].iter().all(|&v| v == 0.0), "padding must be zero");
            assert_eq!(got_info[2 * r + 1], ids[r]);
            assert!((f32::from_bits(got_info[2 * r]) - lps[r]).abs() < 1e-5);
        }
        assert_eq!(ids[2], logits[2 * vocab..3 * vocab].iter().enumerate().fold((0, f32::MIN), |b, (i, &l)| if l > b.1 { (i, l) } else { b }).0 as u32);
        // d/dlogits of log p(17) in row 0 against finite differences.
        let row0 = &logits[..vocab];
        let f = |x: &[f32]| reference(x, vocab, &[17]).1;
        let err = finite_diff::check(f, row0, &[1.0], &want[..vocab], 1e-2);
        assert!(err < 1e-3, "finite differences: {err}");
    }
}
