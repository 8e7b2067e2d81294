//! Weights in 4 bits for the CPU-adapter decode matvec (`matvec_rows_q4.wgsl`):
//! blocks of 32 along a row, w = d * q + m with q in 0..15 and d, m in f16,
//! the form of GGUF's Q4_1. A block's d and m are recovered from its smallest
//! and largest weight, so a matrix is packed only when that reproduces every
//! weight (one loaded from Q4_1 tensors); anything else keeps f16. Packed
//! this way a matrix is exactly the model's, and a quarter of the f16 bytes
//! and loads.

use super::linear::INTERLEAVE_ROWS;
use half::f16;

/// Weights per block.
pub const BLOCK: usize = 32;

/// A block's d, m and quants, if 4 bits reproduce it to within a few f32
/// rounding steps of its range (a dequantized Q4_1 block does; other data
/// does not).
fn quantize_block(v: &[f32]) -> Option<(f16, f16, [u32; 4])> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (m, d) = (f16::from_f32(lo), f16::from_f32((hi - lo) / 15.0));
    let (mf, df) = (m.to_f32(), d.to_f32());
    if !lo.is_finite() || !hi.is_finite() || mf != lo {
        return None;
    }
    let tol = (mf.abs() + 15.0 * df.abs()) * f32::EPSILON * 8.0;
    let mut words = [0u32; 4];
    for (e, &x) in v.iter().enumerate() {
        let q = if df > 0.0 { ((x - mf) / df).round().clamp(0.0, 15.0) } else { 0.0 };
        if (q * df + mf - x).abs() > tol {
            return None;
        }
        words[e / 8] |= (q as u32) << (4 * (e % 8));
    }
    Some((d, m, words))
}

/// The packed layout of a [rows, cols] matrix (see `matvec_rows_q4.wgsl`):
/// quants [block of 64 rows][r][k / 32][lane] as 4 words, then the scales,
/// one word (d low, m high) in the same order. Rows are padded with zeros.
/// None when `cols` is not a multiple of 32 or a block is not exact.
pub fn pack(data: &[f32], rows: usize, cols: usize) -> Option<Vec<u32>> {
    if !cols.is_multiple_of(BLOCK) || data.len() != rows * cols {
        return None;
    }
    let k32 = cols / BLOCK;
    let units = rows.div_ceil(INTERLEAVE_ROWS) * INTERLEAVE_ROWS * k32;
    let mut out = vec![0u32; units * 5];
    let (quants, scales) = out.split_at_mut(units * 4);
    for row in 0..rows {
        let (block, rb) = (row / INTERLEAVE_ROWS, row % INTERLEAVE_ROWS);
        let (r, lane) = (rb / 8, rb % 8);
        for i in 0..k32 {
            let (d, m, words) = quantize_block(&data[row * cols + i * BLOCK..][..BLOCK])?;
            let unit = (block * INTERLEAVE_ROWS * k32) + (r * k32 + i) * 8 + lane;
            quants[unit * 4..unit * 4 + 4].copy_from_slice(&words);
            scales[unit] = d.to_bits() as u32 | (m.to_bits() as u32) << 16;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{q4_1_weights, random};

    /// Unpacks one row from the layout, as the kernel reads it.
    fn unpack_row(packed: &[u32], rows: usize, cols: usize, row: usize) -> Vec<f32> {
        let k32 = cols / BLOCK;
        let units = rows.div_ceil(INTERLEAVE_ROWS) * INTERLEAVE_ROWS * k32;
        let (block, rb) = (row / INTERLEAVE_ROWS, row % INTERLEAVE_ROWS);
        (0..cols)
            .map(|k| {
                let unit = (block * INTERLEAVE_ROWS * k32) + ((rb / 8) * k32 + k / BLOCK) * 8 + rb % 8;
                let e = k % BLOCK;
                let q = (packed[unit * 4 + e / 8] >> (4 * (e % 8))) & 15;
                let s = packed[units * 4 + unit];
                let (d, m) = (f16::from_bits(s as u16).to_f32(), f16::from_bits((s >> 16) as u16).to_f32());
                q as f32 * d + m
            })
            .collect()
    }

    #[test]
    fn q4_1_weights_pack_exactly() {
        let (rows, cols) = (70, 96);
        let w = q4_1_weights(rows * cols, 3);
        let packed = pack(&w, rows, cols).expect("Q4_1 data packs");
        for row in [0, 8, 63, 64, 69] {
            let got = unpack_row(&packed, rows, cols, row);
            let want = &w[row * cols..(row + 1) * cols];
            let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-6, "row {row}: {err}");
        }
    }

    #[test]
    fn other_weights_are_refused() {
        assert!(pack(&random(64 * 96, 4), 64, 96).is_none(), "random f32 weights");
        assert!(pack(&crate::testing::round_f16(&random(64 * 96, 5)), 64, 96).is_none(), "f16 weights");
        assert!(pack(&q4_1_weights(64 * 64, 6)[..64 * 48], 64, 48).is_none(), "48 columns");
        let mut w = q4_1_weights(64 * 96, 7);
        w[100] += 1e-3;
        assert!(pack(&w, 64, 96).is_none(), "one weight off the grid");
    }
}
