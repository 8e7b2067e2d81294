//! GGML tensor types and their dequantization to f32. Block layouts follow
//! ggml: Q8_0 = f16 scale + 32 x i8; Q4_0 = f16 scale + 16 bytes of nibbles
//! (low nibbles are elements 0..16, high nibbles 16..32), value (q - 8) * d;
//! Q4_1 = f16 scale d + f16 min m + nibbles, value q * d + m; Q5_0 and Q5_1
//! add a fifth bit per element (a u32 of high bits after the scales). The
//! K-quants' super-blocks of 256 are in [`super::kquants`].

use super::kquants::{self, QK_K};
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

/// Name of a GGML type id, for error messages about types we do not read.
pub fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("#{id}"),
    };
    name.to_string()
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::BF16 => 30,
        }
    }

    /// ggml's name of the type ("Q4_K").
    pub fn name(self) -> String {
        ggml_type_name(self.id())
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (QK_K, kquants::Q2K_BYTES),
            GgmlType::Q3K => (QK_K, kquants::Q3K_BYTES),
            GgmlType::Q4K => (QK_K, kquants::Q4K_BYTES),
            GgmlType::Q5K => (QK_K, kquants::Q5K_BYTES),
            GgmlType::Q6K => (QK_K, kquants::Q6K_BYTES),
            GgmlType::Q8K => (QK_K, kquants::Q8K_BYTES),
        }
    }

    /// Bytes of `n` elements, or None when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (be, bb) = self.block();
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(bb)
    }
}

pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (exactly `ty.bytes_for(n)` long) into `n` f32 values.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    assert_eq!(Some(bytes.len()), ty.bytes_for(n), "dequantize: byte count mismatch");
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(18) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0x0f) as f32 - 8.0) * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as f32 - 8.0) * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q5_0 => {
            for b in bytes.chunks_exact(22) {
                let d = f16_at(b, 0);
                let five = five_bit_quants(&b[2..6], &b[6..22]);
                out.extend(five.iter().map(|&q| (q as i32 - 16) as f32 * d));
            }
        }
        GgmlType::Q5_1 => {
            for b in bytes.chunks_exact(24) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let five = five_bit_quants(&b[4..8], &b[8..24]);
                out.extend(five.iter().map(|&q| q as f32 * d + m));
            }
        }
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => {
            let (_, block_bytes) = ty.block();
            for b in bytes.chunks_exact(block_bytes) {
                kquants::dequantize_block(ty, b, &mut out);
            }
        }
    }
    out
}

/// The 32 quants of a Q5_0/Q5_1 block: element j < 16 is the low nibble of
/// byte j, element j + 16 its high nibble; bit j of the little-endian u32
/// `high` is element j's fifth bit.
fn five_bit_quants(high: &[u8], nibbles: &[u8]) -> [u8; 32] {
    let high = u32::from_le_bytes([high[0], high[1], high[2], high[3]]);
    let mut q = [0u8; 32];
    for (j, &byte) in nibbles.iter().enumerate() {
        q[j] = (byte & 0x0f) | (((high >> j) & 1) as u8) << 4;
        q[j + 16] = (byte >> 4) | (((high >> (j + 16)) & 1) as u8) << 4;
    }
    q
}

/// Counts the non-finite values of a dequantized tensor (a block whose
/// scale is NaN or infinite): such a tensor still loads, and the loader
/// reports it once.
pub fn non_finite(values: &[f32]) -> usize {
    values.iter().filter(|v| !v.is_finite()).count()
}

/// Quantizes f32 values the way ggml's reference quantizers do (Q4_K and
/// Q6_K: plainly, see `kquants`), used by tests to write GGUF files;
/// `values.len()` must be a multiple of the type's block.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values.iter().for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for blk in values.chunks(32) {
                let amax = blk.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(blk.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
        GgmlType::Q4_0 => {
            for blk in values.chunks(32) {
                let max = blk.iter().fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(blk[j]) | (q(blk[j + 16]) << 4)));
            }
        }
        GgmlType::Q4_1 => {
            for blk in values.chunks(32) {
                let min = blk.iter().cloned().fold(f32::MAX, f32::min);
                let max = blk.iter().cloned().fold(f32::MIN, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(blk[j]) | (q(blk[j + 16]) << 4)));
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for blk in values.chunks(32) {
                // Q5_0: d = max / -16 (max of largest magnitude), q = x / d + 16;
                // Q5_1: d = (max - min) / 31, m = min, q = (x - m) / d.
                let (d, m) = if ty == GgmlType::Q5_0 {
                    (blk.iter().fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a }) / -16.0, None)
                } else {
                    let min = blk.iter().cloned().fold(f32::MAX, f32::min);
                    let max = blk.iter().cloned().fold(f32::MIN, f32::max);
                    ((max - min) / 31.0, Some(min))
                };
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u32> = blk
                    .iter()
                    .map(|&v| match m {
                        None => ((v * id + 16.5) as i32).clamp(0, 31) as u32,
                        Some(m) => (((v - m) * id + 0.5) as i32).clamp(0, 31) as u32,
                    })
                    .collect();
                out.extend(f16::from_f32(d).to_le_bytes());
                if let Some(m) = m {
                    out.extend(f16::from_f32(m).to_le_bytes());
                }
                let high = q.iter().enumerate().fold(0u32, |h, (j, &q)| h | (q >> 4) << j);
                out.extend(high.to_le_bytes());
                out.extend((0..16).map(|j| (q[j] & 0x0f | (q[j + 16] & 0x0f) << 4) as u8));
            }
        }
        GgmlType::Q4K => out = kquants::quantize_q4k(values),
        GgmlType::Q6K => out = kquants::quantize_q6k(values),
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q5K | GgmlType::Q8K => {
            panic!("quantize: no test quantizer for {ty:?} (tests write Q4_K and Q6_K)")
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_layout() {
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(GgmlType::Q8_0, &block, 32);
        assert_eq!(v[0], -8.0);
        assert_eq!(v[31], 7.5);
    }

    #[test]
    fn q4_nibble_order_low_then_high() {
        // byte j holds element j (low nibble) and element j + 16 (high nibble).
        let mut block = f16::from_f32(2.0).to_le_bytes().to_vec();
        block.extend((0..16).map(|j| (j as u8) | (15 - j as u8) << 4));
        let v = dequantize(GgmlType::Q4_0, &block, 32);
        assert_eq!(v[0], -16.0); // (0 - 8) * 2
        assert_eq!(v[15], 14.0); // (15 - 8) * 2
        assert_eq!(v[16], 14.0); // high nibble of byte 0 is 15
        let mut block1 = f16::from_f32(0.5).to_le_bytes().to_vec();
        block1.extend(f16::from_f32(-1.0).to_le_bytes());
        block1.extend((0..16).map(|j| (j as u8) | (15 - j as u8) << 4));
        let v = dequantize(GgmlType::Q4_1, &block1, 32);
        assert_eq!(v[1], -0.5);
        assert_eq!(v[16], 6.5);
    }

    #[test]
    fn quantize_round_trip_error_bounded() {
        let values: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        for (ty, tol) in [(GgmlType::Q8_0, 0.005), (GgmlType::Q4_0, 0.15), (GgmlType::Q4_1, 0.07), (GgmlType::F16, 1e-3)] {
            let back = dequantize(ty, &quantize(ty, &values), values.len());
            let err = values.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err <= tol, "{ty:?}: {err}");
        }
    }
}
