//! Every GGUF block type Sift reads, dequantized against gguf-py (llama.cpp's
//! own Python package): `tests/fixtures/quant_blocks.json`, written by
//! `tests/fixtures/make_quant_blocks.py`, holds random blocks (extreme,
//! subnormal, zero and negative scales among them) and gguf-py's values.
//! Sift's must be the same f32 bit for bit.

use sift_engine::loader::quant::{dequantize, non_finite, GgmlType};

fn fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/quant_blocks.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("quant_blocks.json")).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn dequantization_equals_gguf_py_bit_for_bit() {
    let fixture = fixture();
    let mut seen = vec![];
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["type"].as_str().unwrap();
        let ty = GgmlType::from_id(case["type_id"].as_u64().unwrap() as u32)
            .unwrap_or_else(|| panic!("{name} unsupported"));
        assert_eq!(ty.name(), name);
        let bytes = hex(case["blocks"].as_str().unwrap());
        let want: Vec<u32> = case["values_f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let (per_block, block_bytes) = ty.block();
        assert_eq!(bytes.len() / block_bytes * per_block, want.len(), "{name}");
        let got = dequantize(ty, &bytes, want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{name} element {i} (block {}): sift {g}, gguf-py {}",
                i / per_block,
                f32::from_bits(*w)
            );
        }
        seen.push(ty);
    }
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K] {
        assert!(seen.contains(&ty), "the fixture lacks {ty:?}");
    }
}

/// gguf-py has no Q8_K dequantizer; ggml's is w = d * q with an f32 d.
#[test]
fn q8_k_is_f32_scale_times_bytes() {
    let mut block = 0.25f32.to_le_bytes().to_vec();
    block.extend((0..256).map(|i: i32| (i - 128) as i8 as u8));
    block.extend([7u8; 32]); // bsums: not part of the values
    let v = dequantize(GgmlType::Q8K, &block, 256);
    assert_eq!((v[0], v[128], v[255]), (-32.0, 0.0, 31.75));
}

#[test]
fn non_finite_scales_still_dequantize_and_are_counted() {
    let mut block = half::f16::NAN.to_le_bytes().to_vec();
    block.extend(half::f16::from_f32(1.0).to_le_bytes());
    block.extend([0u8; 12 + 128]);
    let v = dequantize(GgmlType::Q4K, &block, 256);
    assert_eq!(v.len(), 256);
    assert!(non_finite(&v) > 0);
}

/// The test quantizers (used to write K-quant test models) are close enough
/// to be models: a plain Q4_K is within its 4-bit step, Q6_K within 6 bits.
#[test]
fn test_quantizers_round_trip() {
    use sift_engine::loader::quant::quantize;
    let values: Vec<f32> = (0..1024)
        .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1.0 + (i / 256) as f32))
        .collect();
    for (ty, steps) in [
        (GgmlType::Q4K, 15.0),
        (GgmlType::Q6K, 63.0),
        (GgmlType::Q5_0, 31.0),
        (GgmlType::Q5_1, 31.0),
    ] {
        let back = dequantize(ty, &quantize(ty, &values), values.len());
        for (blk, (a, b)) in values.chunks(256).zip(back.chunks(256)).enumerate() {
            let range = a.iter().fold(0.0f32, |m, v| m.max(v.abs())) * 2.0;
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            // Half a step, plus the 6-bit rounding of the sub-block scales.
            assert!(
                err <= range / steps,
                "{ty:?} block {blk}: error {err}, range {range}"
            );
        }
    }
}
