//! ggml's K-quants: super-blocks of 256 weights split into sub-blocks of 16
//! or 32, each with its own integer scale (and min) under the super-block's
//! f16 (or f32) scales. Layouts and the order of operations follow ggml's
//! `dequantize_row_q*_K`, so the values equal llama.cpp's and gguf-py's bit
//! for bit:
//! - Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2 bits),
//!   d, dmin: w = d * sc * q - dmin * m, sub-blocks of 16.
//! - Q3_K: hmask[32] (third bit), qs[64] (2 bits), scales[12] (6 bits each,
//!   biased by 32), d: w = d * (sc - 32) * (q - 4 * !hbit), sub-blocks of 16.
//! - Q4_K: d, dmin, scales[12] (6-bit scale and min per sub-block of 32),
//!   qs[128] (4 bits): w = d * sc * q - dmin * m.
//! - Q5_K: as Q4_K with qh[32] holding each weight's fifth bit.
//! - Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8), d:
//!   w = d * sc * (q - 32), sub-blocks of 16.
//! - Q8_K: d (f32), qs[256] (i8), bsums[16] (ignored): w = d * q.

use super::quant::{f16_at, GgmlType};
use half::f16;

/// Weights per super-block.
pub const QK_K: usize = 256;
pub const Q2K_BYTES: usize = 16 + 64 + 2 + 2;
pub const Q3K_BYTES: usize = 32 + 64 + 12 + 2;
pub const Q4K_BYTES: usize = 2 + 2 + 12 + 128;
pub const Q5K_BYTES: usize = 2 + 2 + 12 + 32 + 128;
pub const Q6K_BYTES: usize = 128 + 64 + 16 + 2;
pub const Q8K_BYTES: usize = 4 + 256 + 32;

/// Appends the 256 values of one super-block `b` of type `ty` to `out`.
pub fn dequantize_block(ty: GgmlType, b: &[u8], out: &mut Vec<f32>) {
    match ty {
        GgmlType::Q2K => q2k(b, out),
        GgmlType::Q3K => q3k(b, out),
        GgmlType::Q4K => q4k_q5k(b, None, out),
        GgmlType::Q5K => q4k_q5k(&[&b[..16], &b[48..]].concat(), Some(&b[16..48]), out),
        GgmlType::Q6K => q6k(b, out),
        GgmlType::Q8K => {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            out.extend(b[4..260].iter().map(|&q| d * q as i8 as f32));
        }
        _ => unreachable!("{ty:?} is not a K-quant"),
    }
}

fn q2k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for part in half.chunks_exact(16) {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                out.extend(part.iter().map(|&q| dl * ((q >> shift) & 3) as f32 - ml));
            }
        }
    }
}

/// Q3_K's 16 six-bit scales: the low 4 bits are the nibbles of bytes 0..8
/// (low nibbles first), the high 2 bits the bit pairs of bytes 8..12.
fn q3k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *o = (low | high << 4) as i32 - 32;
    }
    out
}

fn q3k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], q3k_scales(&b[96..108]));
    let d = f16_at(b, 108);
    let (mut is, mut m) = (0, 1u8);
    // Both halves read the same 32 bytes of hmask, at the next 4 bits.
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (p, part) in half.chunks_exact(16).enumerate() {
                let dl = d * scales[is] as f32;
                is += 1;
                let high = &hmask[16 * p..16 * p + 16];
                out.extend(part.iter().zip(high).map(|(&q, &h)| {
                    let q = ((q >> shift) & 3) as i32 - if h & m != 0 { 0 } else { 4 };
                    dl * q as f32
                }));
            }
            m <<= 1;
        }
    }
}

/// Scale and min of Q4_K/Q5_K sub-block `j` (0..8) from the 12 packed bytes:
/// 6 bits each, the first four whole in bytes 0..8, the last four split
/// between the nibbles of bytes 8..12 and the top bits of bytes 0..8.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K (`high` None) and Q5_K; `b` is d, dmin, scales[12], qs[128].
fn q4k_q5k(b: &[u8], high: Option<&[u8]>, out: &mut Vec<f32>) {
    let (d, dmin, scales, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..144]);
    for (pair, q) in qs.chunks_exact(32).enumerate() {
        for nibble in 0..2 {
            let j = 2 * pair + nibble;
            let (sc, m) = scale_min_k4(j, scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            out.extend(q.iter().enumerate().map(|(l, &byte)| {
                let fifth = high.map_or(0, |h| ((h[l] >> j) & 1) << 4);
                d1 * (((byte >> (4 * nibble)) & 0x0f) | fifth) as f32 - m1
            }));
        }
    }
}

fn q6k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    let start = out.len();
    out.resize(start + QK_K, 0.0);
    let y = &mut out[start..];
    for n in 0..2 {
        let (ql, qh, sc, y) = (
            &ql[64 * n..],
            &qh[32 * n..],
            &scales[8 * n..],
            &mut y[128 * n..],
        );
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &q) in q.iter().enumerate() {
                y[l + 32 * k] = d * sc[is + 2 * k] as i8 as f32 * (q as i32 - 32) as f32;
            }
        }
    }
}

/// Test helper: a plain (not llama.cpp's optimizing) Q4_K quantizer of a
/// multiple of 256 values: per sub-block of 32, scale and min from its range,
/// rounded onto 6-bit multiples of the super-block's d and dmin.
pub fn quantize_q4k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for blk in values.chunks(QK_K) {
        let subs: Vec<(f32, f32)> = blk
            .chunks(32)
            .map(|s| {
                let lo = s.iter().copied().fold(0.0f32, f32::min);
                let hi = s.iter().copied().fold(f32::MIN, f32::max);
                ((hi - lo) / 15.0, -lo)
            })
            .collect();
        let max_scale = subs.iter().fold(0.0f32, |a, s| a.max(s.0));
        let max_min = subs.iter().fold(0.0f32, |a, s| a.max(s.1));
        let d = f16::from_f32(max_scale / 63.0);
        let dmin = f16::from_f32(max_min / 63.0);
        let to6 = |v: f32, unit: f32| {
            if unit > 0.0 {
                (v / unit).round().clamp(0.0, 63.0) as u8
            } else {
                0
            }
        };
        let sm: Vec<(u8, u8)> = subs
            .iter()
            .map(|&(s, m)| (to6(s, d.to_f32()), to6(m, dmin.to_f32())))
            .collect();
        let mut scales = [0u8; 12];
        for (j, &(s, m)) in sm.iter().enumerate() {
            if j < 4 {
                scales[j] = s;
                scales[j + 4] = m;
            } else {
                scales[j + 4] = (s & 0x0f) | ((m & 0x0f) << 4);
                scales[j - 4] |= (s >> 4) << 6;
                scales[j] |= (m >> 4) << 6;
            }
        }
        let mut qs = [0u8; 128];
        for (j, s) in blk.chunks(32).enumerate() {
            let (sc, m) = sm[j];
            let (d1, m1) = (d.to_f32() * sc as f32, dmin.to_f32() * m as f32);
            for (l, &v) in s.iter().enumerate() {
                let q = if d1 > 0.0 {
                    ((v + m1) / d1).round().clamp(0.0, 15.0) as u8
                } else {
                    0
                };
                qs[32 * (j / 2) + l] |= q << (4 * (j % 2));
            }
        }
        out.extend(d.to_le_bytes());
        out.extend(dmin.to_le_bytes());
        out.extend(scales);
        out.extend(qs);
    }
    out
}

/// Test helper: a plain Q6_K quantizer of a multiple of 256 values (i8
/// scale per sub-block of 16 under the super-block's d).
pub fn quantize_q6k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for blk in values.chunks(QK_K) {
        let sub_scale: Vec<f32> = blk
            .chunks(16)
            .map(|s| s.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 31.0)
            .collect();
        let d = f16::from_f32(sub_scale.iter().fold(0.0f32, |a, &s| a.max(s)) / 127.0);
        let sc: Vec<i8> = sub_scale
            .iter()
            .map(|&s| {
                if d.to_f32() > 0.0 {
                    (s / d.to_f32()).round().clamp(-128.0, 127.0) as i8
                } else {
                    0
                }
            })
            .collect();
        let mut q = [0u8; QK_K];
        for (i, &v) in blk.iter().enumerate() {
            let step = d.to_f32() * sc[i / 16] as f32;
            q[i] = if step != 0.0 {
                ((v / step).round() + 32.0).clamp(0.0, 63.0) as u8
            } else {
                32
            };
        }
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for n in 0..2 {
            for l in 0..32 {
                let at = |k: usize| q[128 * n + l + 32 * k];
                ql[64 * n + l] = (at(0) & 0x0f) | ((at(2) & 0x0f) << 4);
                ql[64 * n + l + 32] = (at(1) & 0x0f) | ((at(3) & 0x0f) << 4);
                qh[32 * n + l] =
                    (at(0) >> 4) | ((at(1) >> 4) << 2) | ((at(2) >> 4) << 4) | ((at(3) >> 4) << 6);
            }
        }
        out.extend(ql);
        out.extend(qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend(d.to_le_bytes());
    }
    out
}
