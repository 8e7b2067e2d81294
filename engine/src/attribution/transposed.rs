//! Transposed copies of the weights for the backward pass. `dx = dy W` is the
//! forward linear kernel applied to W^T, so the backward reuses the tuned
//! matvec/matmul kernels of both families instead of a second set of
//! transposed kernels. Costs one more copy of the weights on the GPU, made
//! only when attribution is first asked for.

use crate::gpu::GpuContext;
use crate::kernels::linear::Matrix;
use crate::model::{Config, Weights};

pub(super) struct TransposedLayer {
    /// [dim, q_dim], [dim, kv_dim], [dim, kv_dim]
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    /// [q_dim, dim]
    pub wo: Matrix,
    /// [dim, 2 * ffn]: columns are [gate | up], as the fused forward rows.
    pub w_gate_up: Matrix,
    /// [ffn, dim]: one contiguous row per neuron.
    pub w_down: Matrix,
}

pub(super) struct Transposed {
    pub layers: Vec<TransposedLayer>,
    /// [dim, vocab rounded up to 8] (zero columns past the vocabulary).
    pub lm_head: Matrix,
    pub padded_vocab: usize,
    pub bytes: u64,
}

/// The [cols, max(rows, pad_to)] row-major transpose of a [rows, cols] matrix;
/// columns past `rows` are zero.
pub(crate) fn transpose(w: &[f32], rows: usize, cols: usize, pad_to: usize) -> Vec<f32> {
    let out_cols = pad_to.max(rows);
    let mut t = vec![0.0f32; cols * out_cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * out_cols + r] = w[r * cols + c];
        }
    }
    t
}

impl Transposed {
    pub fn upload(ctx: &GpuContext, c: &Config, w: &Weights, interleaved: bool) -> Transposed {
        let mut bytes = 0;
        let mut up = |name: &str, m: &[f32], rows: usize, cols: usize, pad_to: usize| {
            let m = Matrix::upload(ctx, name, &transpose(m, rows, cols, pad_to), cols, pad_to.max(rows), interleaved);
            bytes += m.bytes();
            m
        };
        let (d, q, kv, f) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
        let layers = w
            .layers
            .iter()
            .map(|l| TransposedLayer {
                wq: up("wq^T", &l.wq, q, d, 0),
                wk: up("wk^T", &l.wk, kv, d, 0),
                wv: up("wv^T", &l.wv, kv, d, 0),
                wo: up("wo^T", &l.wo, d, q, 0),
                w_gate_up: up("w_gate_up^T", &[l.w_gate.as_slice(), l.w_up.as_slice()].concat(), 2 * f, d, 0),
                w_down: up("w_down^T", &l.w_down, d, f, 0),
            })
            .collect();
        let padded_vocab = c.vocab_size.next_multiple_of(8);
        let lm_head = up("lm_head^T", w.lm_head.as_ref().unwrap_or(&w.embed), c.vocab_size, d, padded_vocab);
        Transposed { layers, lm_head, padded_vocab, bytes }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_pads_columns_with_zeros() {
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
        assert_eq!(super::transpose(&w, 3, 2, 0), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        assert_eq!(super::transpose(&w, 3, 2, 4), vec![1.0, 3.0, 5.0, 0.0, 2.0, 4.0, 6.0, 0.0]);
    }
}
