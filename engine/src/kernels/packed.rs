//! Packed weights for the CPU-adapter kernels, in blocks of 32 along a row:
//! - Q4 (`matvec_rows_q4.wgsl`, `matmul_rows_q4.wgsl`): w = d * q + m, q in
//!   0..15, d and m f16: the form of GGUF's Q4_1.
//! - Q5 (`matvec_rows_q4.wgsl` with `q5_high_bits.wgsl`): w = d * q + m, q in 0..31, d and m f16: the
//!   low 4 bits of q as Q4 stores them, plus one word of high bits per
//!   block: GGUF's Q5_0 (m = -16 d), Q5_1 and Q4_0, 24 bytes per 32 weights
//!   where the 8-bit form takes 36.
//! - Q8 (`matvec_rows_q8.wgsl` with `q8_scales_f16.wgsl`): w = d * q + m, q
//!   in -127..127, d and m f16: GGUF's Q8_0 (m = 0).
//! - Q8Halves (the same kernel with `q8_scales_f32.wgsl`): 8-bit quants, an
//!   f32 d and m for each half block of 16: the K-quants (Q4_K, Q6_K, ...),
//!   whose sub-block scales are an f16 times a small integer, not f16
//!   numbers. 48 bytes per 32 weights where f16 takes 64.
//!
//! A block's d (and m) are recovered from its weights, so a matrix is packed
//! only when that reproduces every weight (one loaded from those tensor
//! types); anything else keeps f16. Packed this way a matrix is exactly the
//! model's, and one vec4 load brings 32 (Q4, Q5 with a word of high bits) or 16 (Q8) weights where f16
//! brings 8: on lavapipe, where weight loads are gathers, their count is what
//! bounds a decode step.

use super::linear::INTERLEAVE_ROWS;
use half::f16;

/// Weights per block.
pub const BLOCK: usize = 32;

/// How a matrix is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Q4,
    Q5,
    Q8,
    /// Q4 whose columns come in groups of 8, each with its own d and m per
    /// row (`matvec_rows_q4g.wgsl`): made only by compacting a Q4 matrix's
    /// columns (`kernels::compact`), never packed from weights.
    Q4Groups,
    Q8Halves,
}

impl Format {
    /// Words of quants per block.
    pub fn quant_words(self) -> usize {
        match self {
            Format::Q4 | Format::Q5 | Format::Q4Groups => 4,
            Format::Q8 | Format::Q8Halves => 8,
        }
    }

    /// Words per block of 32 weights of a row: its quants, and its scales
    /// (one word of d and m; a grouped block has one per group of 8), and
    /// Q5's word of high bits.
    pub fn unit_words(self) -> usize {
        match self {
            Format::Q4 | Format::Q8 => self.quant_words() + 1,
            Format::Q5 => self.quant_words() + 2,
            Format::Q4Groups | Format::Q8Halves => self.quant_words() + 4,
        }
    }
}

/// A block's d, m and quants, if 4 bits reproduce it to within a few f32
/// rounding steps of its range (a dequantized Q4_1 block does; other data
/// does not).
pub(crate) fn q4_block(v: &[f32]) -> Option<(f16, f16, Vec<u32>)> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (m, d) = (f16::from_f32(lo), f16::from_f32((hi - lo) / 15.0));
    let (mf, df) = (m.to_f32(), d.to_f32());
    if !lo.is_finite() || !hi.is_finite() || mf != lo {
        return None;
    }
    let tol = (mf.abs() + 15.0 * df.abs()) * f32::EPSILON * 8.0;
    let mut words = vec![0u32; 4];
    for (e, &x) in v.iter().enumerate() {
        let q = if df > 0.0 { ((x - mf) / df).round().clamp(0.0, 15.0) } else { 0.0 };
        if (q * df + mf - x).abs() > tol {
            return None;
        }
        words[e / 8] |= (q as u32) << (4 * (e % 8));
    }
    Some((d, m, words))
}

/// A block's d, m and 8-bit quants, four to a word from the low byte up, if
/// they reproduce it: a dequantized Q8_0 block (m = 0; the weight of largest
/// magnitude is d * ±127, every weight d times an integer), likewise Q5_0
/// (largest ±16 d) and Q4_0 (±8 d), and Q5_1 (m its min, q in 0..31).
fn q8_block(v: &[f32]) -> Option<(f16, f16, Vec<u32>)> {
    let symmetric = [127.0, 16.0, 8.0].into_iter().find_map(|largest| q8_block_scaled(v, largest));
    symmetric.or_else(|| q8_block_with_min(v))
}

fn q8_block_scaled(v: &[f32], largest: f32) -> Option<(f16, f16, Vec<u32>)> {
    let amax = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    if !amax.is_finite() {
        return None;
    }
    q8_words(v, f16::from_f32(amax / largest), f16::ZERO)
}

/// A dequantized Q5_1 block: w = d * q + m with q in 0..31, its smallest
/// weight m (q = 0) and its largest d * 31 + m.
fn q8_block_with_min(v: &[f32]) -> Option<(f16, f16, Vec<u32>)> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = f16::from_f32(lo);
    if !lo.is_finite() || !hi.is_finite() || m.to_f32() != lo {
        return None;
    }
    q8_words(v, f16::from_f32((hi - lo) / 31.0), m)
}

/// A half block's (d, m, quants): 16 weights w = d * q + m with q in
/// 0..=127 and d, m f32, reproducing each weight to within f32 rounding of
/// its terms, if some grid does. m is the smallest weight and d its range
/// over the coarsest span that fits: a K-quant sub-block (w = D q - M, D and M
/// an f16 times a 6-bit integer, q in 0..15 or -32..31) is on D's grid.
fn affine_half(v: &[f32]) -> Option<(f32, f32, [u8; 16])> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let fits = |d: f32| -> Option<[u8; 16]> {
        let mut q = [0u8; 16];
        for (e, &x) in v.iter().enumerate() {
            let k = if d > 0.0 { ((x - lo) / d).round() } else { 0.0 };
            let tol = (lo.abs() + (k * d).abs()) * f32::EPSILON * 4.0;
            if !(0.0..=127.0).contains(&k) || (k * d + lo - x).abs() > tol {
                return None;
            }
            q[e] = k as u8;
        }
        Some(q)
    };
    if hi == lo {
        return fits(0.0).map(|q| (0.0, lo, q));
    }
    (1..=127).find_map(|span| {
        let d = (hi - lo) / span as f32;
        // (hi - lo) / span may be an ulp off the grid's step.
        [d, d.next_up(), d.next_down()].into_iter().find_map(|d| fits(d).map(|q| (d, lo, q)))
    })
}

/// A block's d, m, low nibbles (as Q4 stores them) and high bits, if 5 bits
/// reproduce it: a dequantized Q5_0 or Q4_0 block (w = d (q - 16): m = -16 d,
/// exact in f16), or Q5_1 (w = d q + m, m its smallest weight). The high bit
/// of weight e = 8j + p is bit 4p + j of its word, so that (word >> j) &
/// 0x11111111 lays group j's bits out as nibbles (`q5_high_bits.wgsl`).
fn q5_block(v: &[f32]) -> Option<(f16, f16, Vec<u32>)> {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let amax = lo.abs().max(hi.abs());
    // Q5_0 and Q4_0 (d of either sign: the extreme weight is -16 d), then Q5_1.
    let symmetric = [16.0f32, -16.0, 8.0, -8.0].map(|largest| {
        let d = f16::from_f32(amax / largest);
        (d, f16::from_f32(-16.0 * d.to_f32()))
    });
    let with_min = (f16::from_f32((hi - lo) / 31.0), f16::from_f32(lo));
    symmetric.into_iter().chain([with_min]).find_map(|(d, m)| q5_words(v, d, m).map(|q| (d, m, q)))
}

/// Q5's words for `v` under d and m: 4 of low nibbles, then the high bits
/// (see [`q5_block`]), if w = d * q + m with q in 0..31 reproduces every
/// weight to within f32 rounding of its terms.
fn q5_words(v: &[f32], d: f16, m: f16) -> Option<Vec<u32>> {
    let (df, mf) = (d.to_f32(), m.to_f32());
    if !df.is_finite() || !mf.is_finite() {
        return None;
    }
    let mut words = vec![0u32; 5];
    for (e, &x) in v.iter().enumerate() {
        let q = if df != 0.0 { ((x - mf) / df).round() } else { 0.0 };
        let tol = (mf.abs() + (q * df).abs()) * f32::EPSILON;
        if !(0.0..=31.0).contains(&q) || (q * df + mf - x).abs() > tol {
            return None;
        }
        let q = q as u32;
        words[e / 8] |= (q & 15) << (4 * (e % 8));
        words[4] |= (q >> 4) << (4 * (e % 8) + e / 8);
    }
    Some(words)
}

/// The quants of `v` under d and m, if w = d * q + m reproduces every weight
/// to within f32 rounding of its terms.
fn q8_words(v: &[f32], d: f16, m: f16) -> Option<(f16, f16, Vec<u32>)> {
    let (df, mf) = (d.to_f32(), m.to_f32());
    let mut words = vec![0u32; 8];
    for (e, &x) in v.iter().enumerate() {
        let q = if df > 0.0 { ((x - mf) / df).round().clamp(-127.0, 127.0) } else { 0.0 };
        let tol = if mf == 0.0 { 0.0 } else { (mf.abs() + (q * df).abs()) * f32::EPSILON };
        if (q * df + mf - x).abs() > tol {
            return None;
        }
        words[e / 4] |= ((q as i32 as u32) & 0xff) << (8 * (e % 4));
    }
    Some((d, m, words))
}

/// The first format that reproduces a [rows, cols] matrix exactly (Q4, Q5,
/// then Q8), and its packed layout (see `matvec_rows_q4.wgsl`): the quants,
/// [block of 64 rows][k / 32][r][lane] ([`unit_index`]), 4 (Q4, Q5) or 8
/// (Q8) words each, then the scales, one word (d low, m high) per unit, in
/// the order of [`scale_index`], then Q5's high bits, one word per unit in
/// the same order. Rows are
/// padded with zeros. None when `cols` is not a multiple of 32 or neither
/// format is exact.
pub fn pack(data: &[f32], rows: usize, cols: usize) -> Option<(Format, Vec<u32>)> {
    if !cols.is_multiple_of(BLOCK) || data.len() != rows * cols || rows == 0 {
        return None;
    }
    [Format::Q4, Format::Q5, Format::Q8, Format::Q8Halves].into_iter().find_map(|f| pack_as(f, data, rows, cols).map(|p| (f, p)))
}

/// Where a unit's scale word lies among the scales: [block][k / 32][lane][r],
/// so that an invocation loads its rows' scales of a block as whole vec4s
/// (a vec4 load with a lane-dependent component costs four gathers on
/// lavapipe, for one word). `unit` is the quants' index ([`unit_index`]).
pub fn scale_index(unit: usize, k32: usize) -> usize {
    let (block, within) = (unit / (INTERLEAVE_ROWS * k32), unit % (INTERLEAVE_ROWS * k32));
    let (i, r, lane) = (within / INTERLEAVE_ROWS, within / 8 % 8, within % 8);
    block * INTERLEAVE_ROWS * k32 + (i * 8 + lane) * 8 + r
}

/// The unit (a block of 32 weights' quants) of `row`'s block `i`, in a
/// matrix of `k32` blocks per row: [block of 64 rows][k / 32][r][lane], row
/// 8r + lane of the block. A workgroup's 64 rows of one block of inputs are
/// one contiguous run, read in order as it walks the inputs: on lavapipe,
/// one stream for the CPU's prefetcher where [r][k / 32] made 8 (a dense
/// decode step's MLP about 18% faster).
pub fn unit_index(row: usize, i: usize, k32: usize) -> usize {
    let (block, rb) = (row / INTERLEAVE_ROWS, row % INTERLEAVE_ROWS);
    block * INTERLEAVE_ROWS * k32 + (i * 8 + rb / 8) * 8 + rb % 8
}

/// Units (blocks of 32 weights of a row) in the packed layout of a [rows,
/// cols] matrix, its rows padded to whole blocks of 64.
pub fn units(rows: usize, cols: usize) -> usize {
    rows.div_ceil(INTERLEAVE_ROWS) * INTERLEAVE_ROWS * (cols / BLOCK)
}

fn pack_as(format: Format, data: &[f32], rows: usize, cols: usize) -> Option<Vec<u32>> {
    let (k32, words) = (cols / BLOCK, format.quant_words());
    let units = units(rows, cols);
    let mut out = vec![0u32; units * format.unit_words()];
    let (quants, scales) = out.split_at_mut(units * words);
    for row in 0..rows {
        for i in 0..k32 {
            let v = &data[row * cols + i * BLOCK..][..BLOCK];
            let unit = unit_index(row, i, k32);
            if format == Format::Q8Halves {
                // Four words per unit: d and m of each half, f32.
                let (a, b) = (affine_half(&v[..16])?, affine_half(&v[16..])?);
                let bytes: Vec<u8> = a.2.iter().chain(&b.2).copied().collect();
                let q: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                quants[unit * words..(unit + 1) * words].copy_from_slice(&q);
                let at = 4 * scale_index(unit, k32);
                scales[at..at + 4].copy_from_slice(&[a.0.to_bits(), b.0.to_bits(), a.1.to_bits(), b.1.to_bits()]);
                continue;
            }
            let (d, m, q) = match format {
                Format::Q4 => q4_block(v)?,
                Format::Q5 => q5_block(v)?,
                Format::Q8 => q8_block(v)?,
                Format::Q4Groups | Format::Q8Halves => return None,
            };
            quants[unit * words..(unit + 1) * words].copy_from_slice(&q[..words]);
            scales[scale_index(unit, k32)] = d.to_bits() as u32 | (m.to_bits() as u32) << 16;
            // Q5's high bits follow the scales, in the same order.
            if let Some(&high) = q.get(words) {
                scales[units + scale_index(unit, k32)] = high;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{q4_1_weights, q8_0_weights, random};

    /// Unpacks one row from the layout, as the kernels read it.
    fn unpack_row(format: Format, packed: &[u32], rows: usize, cols: usize, row: usize) -> Vec<f32> {
        let (k32, words) = (cols / BLOCK, format.quant_words());
        let units = units(rows, cols);
        (0..cols)
            .map(|k| {
                let unit = unit_index(row, k / BLOCK, k32);
                let e = k % BLOCK;
                let q = match format {
                    Format::Q4 => ((packed[unit * words + e / 8] >> (4 * (e % 8))) & 15) as f32,
                    Format::Q5 => {
                        let high = (packed[units * words + units + scale_index(unit, k32)] >> (4 * (e % 8) + e / 8)) & 1;
                        (((packed[unit * words + e / 8] >> (4 * (e % 8))) & 15) + 16 * high) as f32
                    }
                    Format::Q8 | Format::Q8Halves => ((packed[unit * words + e / 4] >> (8 * (e % 4))) as u8 as i8) as f32,
                    Format::Q4Groups => unreachable!("not a packed layout"),
                };
                if format == Format::Q8Halves {
                    let at = units * words + 4 * scale_index(unit, k32);
                    let half = e / 16;
                    return q * f32::from_bits(packed[at + half]) + f32::from_bits(packed[at + 2 + half]);
                }
                let s = packed[units * words + scale_index(unit, k32)];
                let (d, m) = (f16::from_bits(s as u16).to_f32(), f16::from_bits((s >> 16) as u16).to_f32());
                q * d + m
            })
            .collect()
    }

    #[test]
    fn legacy_block_weights_pack_exactly() {
        let (rows, cols) = (70, 96);
        use crate::loader::quant::{dequantize, quantize, GgmlType};
        let other = |ty, seed| dequantize(ty, &quantize(ty, &random(rows * cols, seed)), rows * cols);
        let cases = [
            (Format::Q4, q4_1_weights(rows * cols, 3)),
            (Format::Q8, q8_0_weights(rows * cols, 8)),
            (Format::Q5, other(GgmlType::Q5_0, 10)),
            (Format::Q5, other(GgmlType::Q4_0, 11)),
            (Format::Q5, other(GgmlType::Q5_1, 12)),
        ];
        for (want_format, w) in cases {
            let (format, packed) = pack(&w, rows, cols).expect("Q4_1, Q8_0, Q5_0, Q4_0 and Q5_1 data pack");
            assert_eq!(format, want_format);
            for row in [0, 8, 63, 64, 69] {
                let got = unpack_row(format, &packed, rows, cols, row);
                let want = &w[row * cols..(row + 1) * cols];
                let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err < 1e-6, "{format:?} row {row}: {err}");
            }
        }
    }

    /// K-quant blocks (scales an f16 times a 6-bit integer) pack in 8 bits
    /// with f32 scales per half block, reproducing every weight.
    #[test]
    fn k_quant_weights_pack_in_halves() {
        use crate::loader::quant::{dequantize, quantize, GgmlType};
        let (rows, cols) = (70, 256);
        for (ty, seed) in [(GgmlType::Q4K, 13), (GgmlType::Q6K, 14)] {
            let w = dequantize(ty, &quantize(ty, &random(rows * cols, seed)), rows * cols);
            let (format, packed) = pack(&w, rows, cols).unwrap_or_else(|| panic!("{ty:?} packs"));
            assert_eq!(format, Format::Q8Halves, "{ty:?}");
            for row in [0, 9, 63, 64, 69] {
                let got = unpack_row(format, &packed, rows, cols, row);
                for (a, b) in got.iter().zip(&w[row * cols..(row + 1) * cols]) {
                    assert!((a - b).abs() <= b.abs() * 1e-6 + 1e-9, "{ty:?} row {row}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn other_weights_are_refused() {
        assert!(pack(&random(64 * 96, 4), 64, 96).is_none(), "random f32 weights");
        assert!(pack(&crate::testing::round_f16(&random(64 * 96, 5)), 64, 96).is_none(), "f16 weights");
        assert!(pack(&q4_1_weights(64 * 64, 6)[..64 * 48], 64, 48).is_none(), "48 columns");
        for mut w in [q4_1_weights(64 * 96, 7), q8_0_weights(64 * 96, 9)] {
            w[100] += 1e-3;
            assert!(pack(&w, 64, 96).is_none(), "one weight off the grid");
        }
    }
}
